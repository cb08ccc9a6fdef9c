"""Run a trained model on images: one JSON line per image on stdout.

    python -m jsla_fast.predict --checkpoint RUN/best.pt IMAGE_OR_DIR... [--overlay DIR]

Pose models print ``{"image", "position": [x,y,z], "orientation_wxyz": [qw,qx,qy,qz],
"orientation_xyzw": [...] (ROS order), "layers": [...], "ms"}``; scene models print the class,
its probability and the layers. ``--overlay DIR`` writes each image's attention per step (PNG).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError, read_checkpoint
from .data import DataError, load_image
from .ops import BackendUnavailable
from .plots import attention_picture, save_png
from .executors import NAMES as EXECUTOR_NAMES
from .runtime import Localizer

log = logging.getLogger("jsla_fast.predict")


def image_files(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and the images found (recursively, sorted) in folders."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        else:
            found.append(item)
    return found


def describe(model, result, classes: list[str] | None, mc_samples: int | None = None) -> dict:
    names = model.layer_names
    line: dict = {"layers": [names[i] for i in result.layers], "ms": round(result.ms, 3)}
    if result.pose is not None:
        x, y, z, qw, qx, qy, qz = result.pose
        line.update(position=[x, y, z], orientation_wxyz=[qw, qx, qy, qz], orientation_xyzw=[qx, qy, qz, qw])
        if result.position_sigma_m is not None:  # uncertainty="aleatoric" models, MC dropout
            line.update(position_sigma_m=result.position_sigma_m, orientation_sigma_rad=result.orientation_sigma_rad,
                        sigma_calibrated=result.sigma_calibrated)
            if mc_samples:
                line["mc_samples"] = mc_samples
    else:
        p = torch.softmax(torch.tensor(result.logits), 0)
        k = int(p.argmax())
        line.update({"class": classes[k] if classes else str(k), "class_index": k, "probability": float(p[k])})
    return line


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    ap.add_argument("--overlay", help="folder for attention overlays (PNG)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--backend", default="auto", help="fused-op backend: auto (fastest available), reference, cpp")
    ap.add_argument("--threads", type=int, help="CPU threads for inference (default: torch's)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="bfloat16: on CPUs with AVX512_BF16 or AMX, or on CUDA; float16: CUDA")
    ap.add_argument("--backbone", default="auto", choices=EXECUTOR_NAMES,
                    help="who runs the backbone on CPU (docs/PERFORMANCE.md, 'Backbone executors')")
    ap.add_argument("--mc-samples", type=int, help="test-time MC dropout: K head samples per image (the backbone "
                    "runs once); adds the samples' spread to the sigmas")
    ap.add_argument("--skip-bad", action="store_true", help="skip unreadable images and report their count")
    args = ap.parse_args(argv)
    try:
        localizer = Localizer(args.checkpoint, args.device, backend=args.backend, threads=args.threads,
                              dtype=args.dtype, backbone=args.backbone, mc_samples=args.mc_samples)
        classes = read_checkpoint(args.checkpoint)["extra"].get("classes")
    except (CheckpointError, BackendUnavailable, ValueError, RuntimeError) as e:
        log.error("%s", e)
        return 2
    model = localizer.model
    files = image_files(args.inputs)
    if not files:
        log.error("no images found in %s", " ".join(args.inputs))
        return 2
    skipped = 0
    for path in files:
        try:
            image = load_image(path)
        except DataError as e:
            if not args.skip_bad:
                log.error("%s", e)
                return 2
            skipped += 1
            continue
        result = localizer.localize(image)
        print(json.dumps({"image": str(path), **describe(model, result, classes, args.mc_samples)}), flush=True)
        if args.overlay and result.attention:
            save_png(attention_picture(model, image, result), Path(args.overlay) / f"{path.stem}.attention.png")
    if skipped:
        log.warning("skipped %d unreadable image(s) (--skip-bad)", skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
