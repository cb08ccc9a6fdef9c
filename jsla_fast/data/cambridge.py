"""Cambridge Landmarks (Kendall et al. 2015): ``<scene>/dataset_{train,test}.txt``, 3 header lines,
then ``seqN/frameNNNNN.png x y z w p q r`` (position in metres, quaternion w first)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..pose import canonical_quaternion
from .records import Problems, Records, UnitQuaternionCheck, require_file

HEADER_LINES = 3


def read_cambridge(root: Path, split: str, problems: Problems) -> Records:
    listing = require_file(root / f"dataset_{split}.txt",
                           "--data must be a Cambridge scene folder (e.g. KingsCollege/) holding dataset_train.txt "
                           "and dataset_test.txt")
    return read_pose_lines(listing, root, problems, header=HEADER_LINES, sep=None)


def read_pose_lines(listing: Path, image_root: Path, problems: Problems, header: int, sep: str | None) -> Records:
    """Lines ``image x y z qw qx qy qz`` split on ``sep`` (None: whitespace); shared with the CSV format."""
    paths, poses, groups = [], [], []
    unit = UnitQuaternionCheck(listing)
    lines = listing.read_text().splitlines()
    for number, line in enumerate(lines[header:], start=header + 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(sep)]
        where = f"{listing}:{number}"
        if len(fields) != 8:
            problems.bad(f"{where}: expected 'image x y z qw qx qy qz' (8 fields), got {len(fields)}: {line.strip()[:80]!r}")
            continue
        try:
            values = torch.tensor([float(v) for v in fields[1:]], dtype=torch.float64)
        except ValueError:
            problems.bad(f"{where}: pose values are not numbers: {line.strip()[:80]!r}")
            continue
        if not bool(torch.isfinite(values).all()) or float(values[3:].norm()) == 0.0:
            problems.bad(f"{where}: pose has non-finite values or a zero quaternion: {line.strip()[:80]!r}")
            continue
        image = image_root / fields[0]
        if not image.is_file():
            problems.bad(f"{where}: image {image} does not exist")
            continue
        unit(values[3:], number)
        paths.append(image)
        poses.append(torch.cat([values[:3], canonical_quaternion(values[3:])]))
        groups.append(Path(fields[0]).parent.as_posix() or ".")
    unit.warn()
    targets = torch.stack(poses) if poses else torch.zeros(0, 7, dtype=torch.float64)
    return Records("pose", paths, targets, groups, source=str(listing))
