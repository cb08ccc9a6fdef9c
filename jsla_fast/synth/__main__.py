"""Command line: ``python -m jsla_fast.synth --out DIR [--seed S] [--train N] [--test M]
[--size WxH] [--task pose|scene] [--layout area|room] [--sequences T,E] [--classes K] [--workers P]``."""
from __future__ import annotations

import argparse
import logging
import sys

from .datasets import LAYOUTS, TEST_SEQUENCES, TRAIN_SEQUENCES, generate_pose_scene, generate_scene_classes


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 320x240 (width x height), got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"--size must be at least 8x8, got {text!r}")
    return w, h


def _parse_sequences(text: str) -> tuple[int, int]:
    try:
        train, test = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sequences must look like 6,2 (training, test walks), got {text!r}") from None
    return train, test


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m jsla_fast.synth",
        description="Generate a synthetic indoor dataset: one room in the 7-Scenes layout (--task pose) or "
                    "K rooms in the MIT-67 layout (--task scene). Same seed and arguments, same bytes.")
    ap.add_argument("--out", required=True, help="output folder (created; re-running over it is safe)")
    ap.add_argument("--seed", type=int, default=0, help="scene seed, >= 0 (default 0)")
    ap.add_argument("--train", type=int, default=None,
                    help="training images: total over the training sequences for pose (default 600), per class for scene (default 60)")
    ap.add_argument("--test", type=int, default=None,
                    help="test images: total over the test sequences for pose (default 200), per class for scene (default 20)")
    ap.add_argument("--size", type=_parse_size, default=(320, 240), help="image size WxH (default 320x240)")
    ap.add_argument("--task", choices=["pose", "scene"], default="pose")
    ap.add_argument("--layout", choices=list(LAYOUTS), default="area",
                    help="pose: 'area' = every walk records one area of the room looking one way, as 7-Scenes' "
                         "sequences revisit one space (default); 'room' = each walk roams the whole room")
    ap.add_argument("--sequences", type=_parse_sequences, default=(TRAIN_SEQUENCES, TEST_SEQUENCES),
                    help=f"pose: training and test walks (default {TRAIN_SEQUENCES},{TEST_SEQUENCES})")
    ap.add_argument("--classes", type=int, default=5, help="rooms (classes) for --task scene (default 5)")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default: one per CPU)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    try:
        if args.task == "pose":
            generate_pose_scene(args.out, args.seed, 600 if args.train is None else args.train,
                                200 if args.test is None else args.test, args.size, layout=args.layout,
                                sequences=args.sequences, workers=args.workers, progress=not args.quiet)
        else:
            generate_scene_classes(args.out, args.seed, args.classes, 60 if args.train is None else args.train,
                                   20 if args.test is None else args.test, args.size, workers=args.workers,
                                   progress=not args.quiet)
    except (ValueError, FileExistsError, NotADirectoryError) as e:
        print(f"python -m jsla_fast.synth: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
