"""The README's main job (for now): build a JSLA model, run it frame by frame on generated
images and print, per frame, the layer chosen at each step, the pose and the time taken.

    python -m jsla_fast.demo [--frames 8] [--task pose|scene] [--layers 3b,4c,4e,5b] [--steps N]

The weights are freshly initialised (no training yet), so poses and choices are arbitrary; the
point is the whole forward pass running end to end and its latency on this machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from . import JSLA, JSLAConfig


def generated_images(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """``n`` RGB images in [0, 1]: a smooth colour gradient with a few random boxes and discs."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(n):
        base = torch.rand(3, 2, generator=g)
        img = base[:, :1, None] * xx + base[:, 1:, None] * yy
        for _ in range(6):
            colour = torch.rand(3, 1, 1, generator=g)
            cx, cy, r = torch.rand(3, generator=g).tolist()
            if torch.rand(1, generator=g).item() < 0.5:
                mask = ((xx - cx).abs() < r / 3) & ((yy - cy).abs() < r / 4)
            else:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (r / 4) ** 2
            img = torch.where(mask, colour, img)
        images.append(img.clamp(0, 1))
    return torch.stack(images)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--task", choices=["pose", "scene"], default="pose")
    ap.add_argument("--layers", default="3b,4c,4e,5b", help="comma-separated candidate layers")
    ap.add_argument("--steps", type=int, default=None, help="ConvLSTM steps (default: 3 pose, 2 scene)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = JSLAConfig(task=args.task, layers=tuple(args.layers.split(",")), steps=args.steps)
    model = JSLA(cfg).eval()
    images = generated_images(args.frames, seed=args.seed)
    images = images - images.mean(dim=(0, 2, 3), keepdim=True)  # per-channel mean, as in training
    print(f"JSLA reference model, freshly initialised weights (no training yet): task={cfg.task}, "
          f"layers={'/'.join(cfg.layers)}, N={cfg.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, B=1, 224x224, fp32")
    steps = " ".join(f"s{t + 1}" for t in range(cfg.steps))
    what = "x y z qw qx qy qz" if cfg.task == "pose" else "class p"
    print(f"{'frame':>5}  {steps:<{3 * cfg.steps}}  {what:<59}  {'ms':>7}")
    times = []
    with torch.inference_mode():
        model(images[:1])  # warm-up: first-call allocations are not per-frame cost
        for i in range(args.frames):
            t0 = time.perf_counter()
            out = model(images[i:i + 1])
            ms = (time.perf_counter() - t0) * 1e3
            times.append(ms)
            chosen = " ".join(cfg.layers[j] for j in out.layers[0].tolist())
            if cfg.task == "pose":
                value = " ".join(f"{v:+.4f}" for v in out.pose[0].tolist())
            else:
                p = torch.softmax(out.logits[0], 0)
                value = f"{int(p.argmax())} {float(p.max()):.3f}"
            print(f"{i:>5}  {chosen:<{3 * cfg.steps}}  {value:<59}  {ms:7.1f}")
    print(f"median time per frame: {statistics.median(times):.1f} ms "
          f"(min {min(times):.1f}, max {max(times):.1f}) over {len(times)} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
