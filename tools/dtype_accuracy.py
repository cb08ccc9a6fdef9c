"""What a lower-precision runtime costs a trained pose model: the test split through the
deployed ``Localizer`` in float32 and in ``--dtype``, their errors, and how far apart their poses
are (docs/PERFORMANCE.md, "bfloat16").

    python tools/dtype_accuracy.py --checkpoint demo_out/jsla/run/best.pt --data demo_out/data \
        --format 7scenes [--dtype bfloat16] [--batch-size 8] [--json out.json]

bfloat16 on a CPU needs AVX512_BF16 or AMX-BF16 (the Localizer says so otherwise).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def compare(checkpoint: str, data: str, fmt: str, dtype: str, batch_size: int = 8, split: str = "test") -> dict:
    from jsla_fast.data import open_dataset
    from jsla_fast.metrics import pose_metrics, run_model
    from jsla_fast.pose import pose_errors
    from jsla_fast.runtime import Localizer

    rows, preds, dataset = {}, {}, None
    for name in ("float32", dtype):
        loc = Localizer(checkpoint, dtype=name)
        if dataset is None:
            dataset = open_dataset(data, fmt, split, normalization=loc.model.normalization, augment=False)
        preds[name] = run_model(_Call(loc), DataLoader(dataset, batch_size=batch_size))
        rows[name] = {"backend": loc.backend, "backbone": loc.executor,
                      **pose_metrics(preds[name].outputs, preds[name].targets)}
    a, b = preds["float32"], preds[dtype]
    dt, dr = pose_errors(b.outputs.double(), a.outputs.double())
    return {"checkpoint": checkpoint, "split": split, "images": len(dataset), "rows": rows,
            "difference": {"position_median_m": float(dt.quantile(0.5)), "position_max_m": float(dt.max()),
                           "rotation_median_deg": float(dr.quantile(0.5)), "rotation_max_deg": float(dr.max()),
                           "same_layers": bool(torch.equal(a.layers, b.layers))},
            "command": " ".join(["python", *sys.argv])}


class _Call:
    """The Localizer as run_model's model: eval() is a no-op (it is already in inference mode)."""

    def __init__(self, loc) -> None:
        self.loc = loc

    def eval(self):
        return self

    def __call__(self, images):
        return self.loc(images)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--format", default="7scenes")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float64"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        r = compare(args.checkpoint, args.data, args.format, args.dtype, args.batch_size)
    except ValueError as e:  # e.g. bfloat16 on a CPU without native bfloat16
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{r['images']} {r['split']} images through the Localizer:\n")
    print("| | median position | median rotation | mean position | mean rotation |\n|---|---|---|---|---|")
    for name, m in r["rows"].items():
        print(f"| {name} | {m['median_t_m']:.3f} m | {m['median_r_deg']:.2f} deg | {m['mean_t_m']:.3f} m | "
              f"{m['mean_r_deg']:.2f} deg |")
    d = r["difference"]
    print(f"\n{args.dtype} against float32: position median {100 * d['position_median_m']:.1f} cm, max "
          f"{100 * d['position_max_m']:.1f} cm; rotation median {d['rotation_median_deg']:.2f} deg, max "
          f"{d['rotation_max_deg']:.2f} deg; the same layer choice on every step of every frame: {d['same_layers']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
