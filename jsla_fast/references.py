"""The answers a pose regressor's errors are read against (Sattler et al., CVPR 2019, showed that
absolute pose regression behaves like image retrieval, so both belong beside every result):

- ``mean_pose``: always the training set's mean pose: what a position-blind model scores;
- ``nearest_pose``: the oracle: the training pose nearest the *true* test pose. No method that
  answers with a training pose can beat it, so it measures how well the training data cover the
  test views (the coverage bound);
- ``retrieval``: each test image takes the pose of the training image whose global descriptor
  (:func:`image_descriptor`) is most similar: the retrieval baseline of the APR literature.

    python -m jsla_fast.references --data DIR --format F [--json out.json]

"Nearest" weighs position and orientation by the training set's own spreads:
``d = t / sigma_t + r / sigma_r``, with sigma_t, sigma_r the RMS position distance (m) and RMS
rotation angle (deg) of the training poses to their mean pose.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import DataConfig
from .data import FORMATS, DataError, load_image, read_records
from .metrics import pose_metrics
from .pose import canonical_quaternion, pose_errors
from .progress import progress

log = logging.getLogger("jsla_fast.references")

#: the global descriptor: histograms of gradient orientation (9 unsigned bins, magnitude weighted)
#: in a 4 x 4 grid of cells of the grey image at 64 x 48, square-rooted (Hellinger) and L2
#: normalised, compared by cosine similarity. HOG/GIST-like: lighting changes between sequences
#: move it less than raw pixels (measured on the demo scene: 0.48 m vs 0.52 m for 16 x 12 tiny images).
DESCRIPTOR = "HOG 4x4 cells x 9 orientations of the 64x48 grey image, square-rooted, cosine similarity"
DESCRIPTOR_SIZE, DESCRIPTOR_CELLS, DESCRIPTOR_BINS = (48, 64), (4, 4), 9


def mean_pose(poses: torch.Tensor) -> torch.Tensor:
    """Mean position and chordal mean orientation (quaternions first put in one hemisphere)."""
    q = poses[:, 3:] * torch.where(poses[:, 3:] @ poses[0, 3:] < 0, -1.0, 1.0)[:, None]
    return torch.cat([poses[:, :3].mean(0), canonical_quaternion(q.mean(0))])


def pose_spreads(poses: torch.Tensor) -> tuple[float, float]:
    """(RMS distance in m, RMS angle in deg) of ``poses [N,7]`` to their mean pose."""
    t, r = pose_errors(mean_pose(poses).expand_as(poses).double(), poses.double())
    return float(t.square().mean().sqrt()), float(r.square().mean().sqrt())


def _distances(test: torch.Tensor, train: torch.Tensor):
    """(t [n, N_train] m, r [n, N_train] deg) for chunks of 256 test poses."""
    for chunk in test.double().split(256):
        yield pose_errors(chunk[:, None, :], train.double()[None, :, :])


def nearest_pose(train: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Per test pose, the index of the nearest training pose (``d = t/sigma_t + r/sigma_r``)."""
    sigma_t, sigma_r = pose_spreads(train)
    return torch.cat([(t / max(sigma_t, 1e-9) + r / max(sigma_r, 1e-9)).argmin(1) for t, r in _distances(test, train)])


def coverage(train: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    """Medians over the test poses of the distance to the nearest training position (m) and of the
    angle to the nearest training orientation (deg), each nearest on its own."""
    t_near, r_near = zip(*((t.min(1).values, r.min(1).values) for t, r in _distances(test, train)))
    return {"nearest_position_median_m": float(torch.cat(t_near).quantile(0.5)),
            "nearest_orientation_median_deg": float(torch.cat(r_near).quantile(0.5))}


def image_descriptor(image: torch.Tensor) -> torch.Tensor:
    """The global descriptor (:data:`DESCRIPTOR`) of an RGB image ``[3,H,W]`` in [0, 1]."""
    grey = F.interpolate(image.mean(0, keepdim=True)[None].float(), size=DESCRIPTOR_SIZE, mode="area")[0, 0]
    gx = F.pad(grey[:, 2:] - grey[:, :-2], (1, 1))
    gy = F.pad(grey[2:, :] - grey[:-2, :], (0, 0, 1, 1))
    angle = torch.atan2(gy, gx) % torch.pi  # unsigned orientation
    bins = (angle * (DESCRIPTOR_BINS / torch.pi)).long().clamp(max=DESCRIPTOR_BINS - 1)
    hist = torch.zeros(DESCRIPTOR_BINS, *DESCRIPTOR_SIZE).scatter_(0, bins[None], torch.hypot(gx, gy)[None])
    cells = F.adaptive_avg_pool2d(hist[None], DESCRIPTOR_CELLS)[0].flatten().sqrt()
    return cells / cells.norm().clamp_min(1e-12)


def descriptors(paths, desc: str = "descriptors") -> torch.Tensor:
    return torch.stack([image_descriptor(load_image(p)) for p in progress(paths, desc=desc, unit="img", leave=False)])


def retrieve(train_descriptors: torch.Tensor, query_descriptors: torch.Tensor) -> torch.Tensor:
    """Per query, the index of the most similar training descriptor."""
    return (query_descriptors @ train_descriptors.T).argmax(1)


def reference_results(data: str | Path, fmt: str, cfg: DataConfig | None = None, split: str = "test") -> dict:
    """``mean_pose``, ``nearest_pose`` (with the coverage figures) and ``retrieval`` on ``split``:
    each the metrics of :func:`~jsla_fast.metrics.pose_metrics`. The training set is the whole
    training list (the validation frames included: a reference may use every training image)."""
    cfg = DataConfig(**{**(cfg or DataConfig()).to_dict(), "val_fraction": 0.0})
    train = read_records(data, fmt, "train", cfg)
    test = read_records(data, fmt, split, cfg)
    if train.task != "pose":
        raise DataError(f"references are for pose datasets; --format {fmt} is a {train.task} dataset")
    tr, te = train.targets.double(), test.targets.double()
    oracle = nearest_pose(tr, te)
    sigma_t, sigma_r = pose_spreads(tr)
    found = retrieve(descriptors(train.paths, "train descriptors"), descriptors(test.paths, f"{split} descriptors"))
    return {
        "mean_pose": pose_metrics(mean_pose(tr).expand_as(te), te),
        "nearest_pose": {**pose_metrics(tr[oracle], te), **coverage(tr, te),
                         "train_spread_t_m": sigma_t, "train_spread_r_deg": sigma_r,
                         "distance": "t / train_spread_t_m + r / train_spread_r_deg"},
        "retrieval": {**pose_metrics(tr[found], te), "descriptor": DESCRIPTOR},
        "train_images": len(train), "test_images": len(test),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.references", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--format", required=True, choices=list(FORMATS))
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    try:
        results = reference_results(args.data, args.format, split=args.split)
    except DataError as e:
        log.error("%s", e)
        return 2
    text = json.dumps(results, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
