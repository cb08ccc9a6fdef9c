"""The README's main job: the whole relocalization workflow on the embedded synthetic scene.

    python -m jsla_fast.demo [--out demo_out] [--seed 0] [--epochs 15] [--quick] [--preset paper]

1. renders the synthetic indoor scene in the 7-Scenes layout into OUT/data (reused when it already
   holds the same scene): 6 training walks over one area of the room and 2 test walks through
   it, so the test views are covered by training views as 7-Scenes' are;
2. trains JSLA and the two baselines of the paper, PoseNet and LSTM-PoseNet, with the same budget
   (epochs, batch, learning rate, loss, data);
3. evaluates each on the test walks (plots, overlays, results.json in OUT/<model>/eval);
4. writes OUT/summary.json and OUT/summary.md with the references every result is read against
   (:mod:`jsla_fast.references`): the mean training pose (chance), retrieval by a global image
   descriptor, and the nearest training pose (the oracle, which measures coverage), plus JSLA's
   per-step errors from its auxiliary heads;
5. runs the trained JSLA frame by frame on a few test images, printing the layer chosen at each
   step, the pose error and the time per frame;
6. replays the test trajectory through the ROS node (a roscore on a free port and
   ``rosrun jsla_fast localize_node``, see :mod:`jsla_fast.ros.replay`) and reports its accuracy
   and latency in OUT/ros_replay.json and the summary (``--no-ros`` skips it; without ROS
   installed it is skipped with the command that installs it).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .atomic import atomic_write
from .checkpoint import read_checkpoint
from .model.registry import load_checkpoint
from .config import PRESETS, DataConfig, JSLAConfig, RunConfig, TrainConfig, apply_preset
from .data import load_image, read_records
from .evaluate import evaluate
from .runtime import localize
from .pose import pose_errors
from .references import reference_results
from .train import train

log = logging.getLogger("jsla_fast.demo")

#: the CPU demo, chosen by measurement for 2 cores and 20 minutes (docs/TRAINING.md): 6 training walks
#: over one area of the room and 2 test walks through it; 64 x 64 centre crops, no dropout; JSLA
#: on a 7 x 7 grid, without aux heads (they cost it 0.06-0.08 m here); gradients clipped to norm 1
#: (TrainConfig's default). Adam's learning rate per model, each chosen on the validation split
#: from 2.5e-4, 5e-4, 1e-3 and 2e-3 on two scenes (LSTM-PoseNet takes PoseNet's: not tuned). Every
#: model predicts calibrated per-image sigmas (aleatoric head trained decoupled: the pose training
#: is unchanged, measured in docs/TRAINING.md)
DEFAULT = {"train": 720, "test": 200, "sequences": (6, 2), "size": (128, 96), "epochs": 15, "resize": 64,
           "crop": 64, "random_crop": False, "batch_size": 16,
           "lr": {"jsla": 5e-4, "posenet": 2.5e-4, "poselstm": 2.5e-4},
           "model": {"grid": 7, "dropout": 0.0, "aux_heads": False, "uncertainty": "aleatoric"}}
QUICK = {**DEFAULT, "train": 24, "test": 8, "sequences": (2, 1), "size": (64, 48), "epochs": 1, "resize": 40,
         "crop": 32, "model": {**DEFAULT["model"], "aux_heads": True}}
#: --preset paper: the paper's input (256 -> 224 crops), batch 40 and Adam, JSLA's 14 x 14 grid; hours on a CPU
PAPER = {**DEFAULT, "size": (341, 256), "random_crop": True, "model": {}}
MODELS = {"jsla": "JSLA", "posenet": "PoseNet", "poselstm": "LSTM-PoseNet"}
REFERENCES = {"retrieval": "retrieval (nearest training image by HOG)",
              "nearest_pose": "nearest training pose (oracle)", "mean_pose": "mean training pose"}


def demo_config(p: dict, seed: int, preset: str | None = None, kind: str = "jsla") -> RunConfig:
    """The run config of model ``kind`` in the demo ``p``."""
    cfg = RunConfig(
        model=JSLAConfig(task="pose", steps=3, **p["model"]),
        data=DataConfig(resize=p["resize"], crop=p["crop"], random_crop=p["random_crop"], workers=0, val_fraction=0.1),
        train=TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"][kind], seed=seed),
    )
    if preset:
        for line in apply_preset(cfg, preset):
            log.info("%s", line)
    return cfg


def synthetic_scene(out: Path, seed: int, p: dict) -> Path:
    """Render the scene unless ``out`` already holds exactly this one."""
    from .synth import generate_pose_scene

    args = [seed, p["train"], p["test"], list(p["size"]), list(p["sequences"])]
    meta = out / "scene.json"
    if meta.is_file():
        saved = json.loads(meta.read_text())
        if saved.get("demo_args") == args:
            log.info("reusing the synthetic scene in %s", out)
            return out
        shutil.rmtree(out)
    generate_pose_scene(out, seed=seed, train=p["train"], test=p["test"], size=p["size"], layout="area",
                        sequences=tuple(p["sequences"]))
    saved = json.loads(meta.read_text())
    saved["demo_args"] = args
    atomic_write(meta, lambda f: f.write(json.dumps(saved, indent=2).encode()))
    return out


def _cell(r: dict) -> str:
    return f"{r['median_t_m']:.3f} m, {r['median_r_deg']:.2f} deg"


def summary_markdown(summary: dict) -> str:
    s = summary["setup"]
    clip = f"gradient norm clipped to {s['grad_clip']}" if s["grad_clip"] else "no gradient clipping"
    lrs = " / ".join(f"{v:g} ({MODELS[k]})" for k, v in s["lr"].items())
    lines = [
        "# jsla_fast demo: synthetic indoor scene",
        "",
        f"{s['train_images']} training images ({s['sequences'][0]} walks) / {s['test_images']} test images "
        f"({s['sequences'][1]} walks), {s['image_size']}, input {s['crop']}x{s['crop']}, {s['epochs']} epochs, "
        f"batch {s['batch_size']}, Adam lr {lrs}, {clip}, seed {s['seed']}, {s['threads']} CPU threads, "
        f"torch {s['torch']}.",
        "",
        "| model | median position error (m) | median rotation error (deg) | mean position (m) | mean rotation (deg) "
        "| training time (s) | inference (ms/image) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(label, key) for key, label in MODELS.items() if key in summary]
    rows += [(label, key) for key, label in REFERENCES.items() if key in summary]
    for label, key in rows:
        r = summary[key]
        train_s = f"{r['train_seconds']:.0f}" if "train_seconds" in r else "-"
        infer = f"{1000 * r['seconds_per_image']:.1f}" if "seconds_per_image" in r else "-"
        lines.append(f"| {label} | {r['median_t_m']:.3f} | {r['median_r_deg']:.2f} | {r['mean_t_m']:.3f} | "
                     f"{r['mean_r_deg']:.2f} | {train_s} | {infer} |")
    if "nearest_pose" in summary:
        n = summary["nearest_pose"]
        lines += ["", f"Coverage of the test views by the training views: median distance from a test pose to the "
                  f"nearest training position {n['nearest_position_median_m']:.3f} m, to the nearest training "
                  f"orientation {n['nearest_orientation_median_deg']:.2f} deg (training poses spread "
                  f"{n['train_spread_t_m']:.2f} m, {n['train_spread_r_deg']:.1f} deg RMS about their mean)."]
    steps = summary.get("jsla", {}).get("per_step") or []
    if steps:
        head = " | ".join(f"step {t + 1}" for t in range(len(steps)))
        lines += ["", "JSLA per step (the aux head on each step's hidden state, as the paper's per-step columns; "
                  "the last column is the model's own head on all steps):", "",
                  f"| | {head} | all steps |", "|---" * (len(steps) + 2) + "|",
                  f"| median error | {' | '.join(_cell(r) for r in steps)} | {_cell(summary['jsla'])} |"]
    if summary.get("jsla", {}).get("layer_usage"):
        usage = "; ".join(f"step {t + 1}: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in u.items() if v > 0)
                          for t, u in enumerate(summary["jsla"]["layer_usage"]))
        lines += ["", f"JSLA layer usage on the test images: {usage}."]
    for key, label in MODELS.items():
        if summary.get(key, {}).get("uncertainty"):
            lines += ["", uncertainty_sentence(label, summary[key]["uncertainty"])]
    if "ros" in summary:
        r = summary["ros"]
        lines += ["", f"ROS replay of the test trajectory through `localize_node` ({r['answered']}/{r['frames']} images "
                  f"answered, backend {r['backend']}): median {r['median_t_m']:.3f} m, {r['median_r_deg']:.2f} deg; "
                  f"latency publish -> pose p50 {r['latency_p50_ms']:.1f} ms, p99 {r['latency_p99_ms']:.1f} ms; "
                  f"node overhead p50 {r['overhead_p50_ms']:.2f} ms."]
    plots = ", ".join(f"`{k}/eval/`" for k in MODELS if k in summary)
    lines += ["", f"Total demo time: {s['total_seconds']:.0f} s. Plots: {plots}."]
    return "\n".join(lines) + "\n"


def uncertainty_sentence(label: str, u: dict) -> str:
    """How a model's per-image sigmas describe its test errors, and how they were calibrated."""
    c = u.get("calibration")
    how = (f"calibrated on the {c['images']} validation images by the factors {c['position']:.2f} (position) and "
           f"{c['rotation']:.2f} (rotation)" if c else "not calibrated (factor 1)")
    p, r = u["position"], u["rotation"]
    return (f"{label}'s per-image sigmas (aleatoric head, trained `{u['loss']}`; {how}): "
            f"of the per-axis test errors, {100 * p['within_1_sigma']:.0f} % / {100 * p['within_2_sigma']:.0f} % "
            f"in position and {100 * r['within_1_sigma']:.0f} % / {100 * r['within_2_sigma']:.0f} % in rotation lie "
            f"within 1 / 2 sigma (a Gaussian: 68 % / 95 %); Spearman correlation of an image's sigma with its error "
            f"{p['spearman_sigma_error']:.2f} (position), {r['spearman_sigma_error']:.2f} (rotation); median sigma "
            f"{p['median_sigma']:.3f} m, {math.degrees(r['median_sigma']):.2f} deg.")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--epochs", type=int, help=f"training epochs for each model (default {DEFAULT['epochs']})")
    ap.add_argument("--quick", action="store_true", help="a tiny run that checks the workflow in about a minute")
    ap.add_argument("--seed", type=int, default=0, help="the scene, its walks and the training runs")
    ap.add_argument("--preset", choices=list(PRESETS),
                    help="paper: the paper's 224 input and batch 40 on a 341x256 rendering (for a GPU: hours on a CPU)")
    ap.add_argument("--aux-heads", action="store_true",
                    help="train JSLA's per-step aux heads and report its per-step errors (the paper's per-step columns)")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                    help="which models to train (default: all)")
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    ap.add_argument("--frames", type=int, default=5, help="test frames to run one by one at the end")
    ap.add_argument("--no-ros", action="store_true", help="skip replaying the test trajectory through the ROS node")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick and args.preset:
        ap.error("--quick and --preset exclude each other")
    p = dict(QUICK if args.quick else PAPER if args.preset else DEFAULT)
    if args.epochs:
        p["epochs"] = args.epochs
    if args.aux_heads:
        p["model"] = {**p["model"], "aux_heads": True}
    out = Path(args.out)
    started = time.perf_counter()

    data = synthetic_scene(out / "data", args.seed, p)
    # one config per model: they differ only in the learning rate (the paper's preset sets one for all)
    configs = {kind: demo_config(p, args.seed, args.preset, kind) for kind in args.models}
    cfg = configs[args.models[0]]
    summary: dict = {}
    for kind in args.models:
        run = out / kind / "run"
        if run.exists():
            shutil.rmtree(run)  # the demo always trains afresh
        t0 = time.perf_counter()
        best = train(configs[kind], data, "7scenes", run, kind, device="cpu")
        train_seconds = time.perf_counter() - t0
        results = evaluate(best, data, "7scenes", out / kind / "eval", overlays=4)
        summary[kind] = {k: results[k] for k in ("median_t_m", "median_r_deg", "mean_t_m", "mean_r_deg",
                                                 "seconds_per_image", "layer_usage", "count") if k in results}
        summary[kind]["per_step"] = results.get("per_step", [])
        if "uncertainty" in results:  # the test split's coverage, and the factors train fitted on validation
            summary[kind]["uncertainty"] = dict(results["uncertainty"], loss=configs[kind].model.loss.aleatoric,
                                                calibration=read_checkpoint(best)["extra"].get("calibration"))
        summary[kind].update(train_seconds=train_seconds, checkpoint=str(best))
    refs = reference_results(data, "7scenes", cfg.data)
    summary.update({key: refs[key] for key in REFERENCES})
    summary["setup"] = {"train_images": p["train"], "test_images": p["test"], "sequences": list(p["sequences"]),
                        "image_size": "x".join(map(str, p["size"])), "crop": cfg.data.crop, "epochs": p["epochs"],
                        "batch_size": cfg.train.batch_size, "lr": {kind: c.train.lr for kind, c in configs.items()},
                        "grad_clip": cfg.train.grad_clip, "seed": args.seed,
                        "preset": args.preset, "config": cfg.to_dict(), "loss": cfg.model.loss.to_dict(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "total_seconds": time.perf_counter() - started}
    write_summary(out, summary)
    print("\n" + summary_markdown(summary))
    if "jsla" not in summary:
        return 0
    run_frames(Path(summary["jsla"]["checkpoint"]), data, cfg, args.frames)
    if not args.no_ros:
        ros = ros_replay(Path(summary["jsla"]["checkpoint"]), data, out, args.threads)
        if ros is None:
            return 1
        if ros:
            print(f"  python -m jsla_fast.evaluate on the same images: median {summary['jsla']['median_t_m']:.3f} m, "
                  f"{summary['jsla']['median_r_deg']:.2f} deg")
            summary["ros"] = ros
            summary["setup"]["total_seconds"] = time.perf_counter() - started
            write_summary(out, summary)
    return 0


def write_summary(out: Path, summary: dict) -> None:
    atomic_write(out / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    atomic_write(out / "summary.md", lambda f: f.write(summary_markdown(summary).encode()))


def ros_replay(checkpoint: Path, data: Path, out: Path, threads: int | None) -> dict | None:
    """The test trajectory through ``localize_node`` (its own process, as a robot runs it): the report,
    {} when ROS is not installed, None when the replay failed."""
    from .ros.launch import why_missing

    why = why_missing()
    if why:
        log.warning("skipping the ROS replay: %s", why)
        return {}
    print("\nReplaying the test trajectory through the ROS node (roscore + rosrun jsla_fast localize_node) ...",
          flush=True)
    report = out / "ros_replay.json"
    cmd = [sys.executable, "-m", "jsla_fast.ros.replay", "--checkpoint", str(checkpoint), "--data", str(data),
           "--format", "7scenes", "--json", str(report), "--threads", str(threads or 0)]
    if subprocess.run(cmd).returncode != 0:
        log.error("the ROS replay failed (its output is above); rerun it alone with: %s", " ".join(cmd))
        return None
    return json.loads(report.read_text())


def run_frames(checkpoint: Path, data: Path, cfg: RunConfig, frames: int) -> None:
    """The trained JSLA on single test frames: layer choice per step, pose error, time."""
    model = load_checkpoint(checkpoint)
    test = read_records(data, "7scenes", "test", cfg.data)
    names = model.config.layers
    picks = torch.linspace(0, len(test) - 1, min(frames, len(test))).round().long().tolist()
    print(f"{'frame':<36} {'layers':<12} {'t err (m)':>9} {'r err (deg)':>11} {'ms':>7}")
    times = []
    for i in picks:
        result = localize(model, load_image(test.paths[i]))
        t_err, r_err = pose_errors(torch.tensor(result.pose, dtype=torch.float64), test.targets[i])
        times.append(result.ms)
        frame = f"{test.paths[i].parent.name}/{test.paths[i].name}"
        print(f"{frame:<36} {' '.join(names[j] for j in result.layers):<12} {float(t_err):9.3f} "
              f"{float(r_err):11.2f} {result.ms:7.1f}")
    print(f"median time per frame: {statistics.median(times):.1f} ms (B=1, {cfg.data.crop}x{cfg.data.crop}, "
          f"fp32, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    raise SystemExit(main())
