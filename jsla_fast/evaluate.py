"""Evaluate a checkpoint on a dataset split and write what a paper's results section needs.

    python -m jsla_fast.evaluate --checkpoint RUN/best.pt --data DIR --format F --out DIR [--split test]

Writes into --out: results.json (median/mean translation and rotation errors, per step where
per-step heads exist; accuracy and per-class accuracy for scenes; layer usage per step; time per
image), predictions.csv, layer_usage.png (the paper's Fig. 3), trajectory.png (top view of ground
truth vs prediction, pose models) and attention/*.png overlays for a few images.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .atomic import atomic_write
from .checkpoint import CheckpointError, read_checkpoint
from .model.registry import load_checkpoint
from .data import FORMATS, DataError, data_format, load_image, open_dataset
from .plots import attention_picture
from .runtime import localize
from .metrics import layer_usage, run_model, task_metrics
from .plots import plot_layer_usage, plot_sigma_vs_error, plot_trajectory, save_png
from .uncertainty import MCDropout, calibration_note, sigmas_calibrated, uncertainty_metrics
from .pose import pose_errors

log = logging.getLogger("jsla_fast.evaluate")


class EvaluationError(RuntimeError):
    pass


def evaluate(checkpoint: str | Path, data: str | Path, fmt: str, out: str | Path, split: str = "test",
             batch_size: int = 16, overlays: int = 4, device: str = "cpu", skip_bad: bool = False,
             workers: int = 0, mc_samples: int | None = None) -> dict:
    out = Path(out)
    model = load_checkpoint(checkpoint, map_location=device)
    extra = read_checkpoint(checkpoint)["extra"]
    task = data_format(fmt).task
    if model.config.task != task:
        raise EvaluationError(f"{checkpoint} is a {model.config.task} model but --format {fmt} is a {task} dataset")
    if model.normalization is None:
        raise EvaluationError(f"{checkpoint} has no input normalisation; evaluate checkpoints written by training")
    dataset = open_dataset(data, fmt, split, normalization=model.normalization, skip_bad=skip_bad, augment=False)
    classes = extra.get("classes")
    if task == "scene" and classes and dataset.records.classes != classes:
        raise EvaluationError(f"the dataset's classes differ from the checkpoint's ({len(dataset.records.classes)} "
                              f"vs {len(classes)}); evaluate on the dataset the model was trained on")
    if mc_samples is not None and task != "pose":
        raise EvaluationError(f"--mc-samples {mc_samples}: MC dropout gives pose uncertainty; {checkpoint} is a scene model")
    try:
        runner = model if mc_samples is None else MCDropout(model, mc_samples)
    except ValueError as e:
        raise EvaluationError(f"--mc-samples: {e}") from None
    preds = run_model(runner, DataLoader(dataset, batch_size=batch_size, num_workers=workers), device, progress=True)
    names = list(model.layer_names)
    results = {
        "checkpoint": str(checkpoint), "model": model.kind, "task": task, "data": str(data), "format": fmt,
        "split": split, **task_metrics(task, preds.outputs, preds.targets, classes),
        "seconds_per_image": preds.seconds / max(len(dataset), 1), "device": str(device),
        "layer_usage": layer_usage(preds.layers, names) if preds.layers.shape[1] else [],
    }
    if preds.aux:
        outputs = [_as_task_output(a, task) for a in preds.aux]
        results["per_step"] = [task_metrics(task, o, preds.targets, classes) for o in outputs]
    if preds.log_var is not None:  # aleatoric or MC dropout: how the (calibrated) sigmas describe the errors
        factors = model.pose_decoder.factors(mc=bool(mc_samples))
        results["uncertainty"] = {"calibrated": sigmas_calibrated(model, mc_samples),
                                  "factors": factors.tolist() if factors is not None else None,
                                  "source": calibration_note(model, mc_samples),
                                  "mc_samples": mc_samples,
                                  **uncertainty_metrics(preds.outputs, preds.log_var, preds.targets)}
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_predictions(out / "predictions.csv", dataset.records, preds, task, names, classes)]
    if results["layer_usage"]:
        files.append(plot_layer_usage(results["layer_usage"], out / "layer_usage.png",
                                      f"layer usage per step ({split}, {len(dataset)} images)"))
    if preds.log_var is not None:
        files.append(plot_sigma_vs_error(preds.outputs, preds.log_var, preds.targets, out / "sigma_vs_error.png",
                                         f"{model.kind}: predicted sigma against error ({split})"))
    if task == "pose":
        files.append(plot_trajectory(preds.targets, preds.outputs, out / "trajectory.png", dataset.records.groups,
                                     f"{model.kind}: median {results['median_t_m']:.2f} m, "
                                     f"{results['median_r_deg']:.1f} deg ({split})"))
    if names and overlays:
        picks = torch.linspace(0, len(dataset) - 1, min(overlays, len(dataset))).round().long().unique().tolist()
        for i in picks:
            path = dataset.records.paths[i]
            image = load_image(path)
            files.append(save_png(attention_picture(model, image, localize(model, image, device)),
                                  out / "attention" / f"{i:05d}_{path.stem}.png"))
    results["files"] = [str(f) for f in files] + [str(out / "results.json")]
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    return results


def _as_task_output(raw: torch.Tensor, task: str) -> torch.Tensor:
    if task == "scene":
        return raw
    from .pose import canonical_quaternion

    return torch.cat([raw[:, :3], canonical_quaternion(raw[:, 3:])], dim=1)


def _write_predictions(path: Path, records, preds, task: str, names: list[str], classes) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        steps = preds.layers.shape[1]
        layer_cols = [f"layer_step{t + 1}" for t in range(steps)]
        if task == "pose":
            t_err, r_err = pose_errors(preds.outputs.double(), preds.targets.double())
            w.writerow(["image", "x", "y", "z", "qw", "qx", "qy", "qz", "gt_x", "gt_y", "gt_z", "gt_qw", "gt_qx",
                        "gt_qy", "gt_qz", "t_err_m", "r_err_deg", *layer_cols])
            for i, p in enumerate(records.paths):
                w.writerow([str(p), *[f"{v:.6f}" for v in preds.outputs[i].tolist()],
                            *[f"{v:.6f}" for v in preds.targets[i].tolist()], f"{float(t_err[i]):.4f}",
                            f"{float(r_err[i]):.3f}", *[names[j] for j in preds.layers[i].tolist()]])
        else:
            w.writerow(["image", "predicted", "truth", "correct", *layer_cols])
            label = (lambda k: classes[k]) if classes else str  # noqa: E731
            for i, p in enumerate(records.paths):
                k, y = int(preds.outputs[i].argmax()), int(preds.targets[i])
                w.writerow([str(p), label(k), label(y), int(k == y), *[names[j] for j in preds.layers[i].tolist()]])
    return path


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--format", required=True, choices=list(FORMATS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="test", choices=["test", "val", "train"],
                    help="test (default); val: the held-out last 10%% of each training sequence, on which "
                    "best.pt was chosen; train: the images the model trained on (memorisation)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--overlays", type=int, default=4, help="how many attention overlays to draw")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--skip-bad", action="store_true")
    ap.add_argument("--mc-samples", type=int, help="test-time MC dropout: K head samples per image; reports "
                    "the sigmas' coverage under 'uncertainty'")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        results = evaluate(args.checkpoint, args.data, args.format, args.out, args.split, args.batch_size,
                           args.overlays, args.device, args.skip_bad, mc_samples=args.mc_samples)
    except (EvaluationError, CheckpointError, DataError) as e:
        log.error("%s", e)
        return 2
    keys = ("median_t_m", "median_r_deg", "mean_t_m", "mean_r_deg") if results["task"] == "pose" else (
        "accuracy", "mean_class_accuracy")
    print(json.dumps({k: results[k] for k in keys} | {"count": results["count"], "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
