"""Microsoft 7-Scenes: ``<scene>/seq-XX/frame-NNNNNN.color.png`` (or ``.jpg``) with
``frame-NNNNNN.pose.txt`` (4x4 camera-to-world, row-major); ``TrainSplit.txt`` / ``TestSplit.txt``
list sequences as ``sequence1`` (= ``seq-01``). The synthetic scene is written in this layout."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..pose import matrix_to_pose
from .records import DataError, Problems, Records, require_file

SPLIT_FILES = {"train": "TrainSplit.txt", "test": "TestSplit.txt"}


def read_7scenes(root: Path, split: str, problems: Problems) -> Records:
    listing = require_file(root / SPLIT_FILES[split],
                           "--data must be a 7-Scenes scene folder (e.g. chess/) holding TrainSplit.txt, "
                           "TestSplit.txt and seq-XX folders")
    paths, poses, groups = [], [], []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*sequence(\d+)\s*", line)
        if not m:
            raise DataError(f"{listing}:{number}: expected a line like 'sequence1', got {line.strip()[:60]!r}")
        seq = root / f"seq-{int(m.group(1)):02d}"
        if not seq.is_dir():
            raise DataError(f"{listing}:{number}: sequence folder {seq} does not exist")
        frames = sorted(list(seq.glob("frame-*.color.png")) + list(seq.glob("frame-*.color.jpg")))
        if not frames:
            raise DataError(f"{seq}: no frame-NNNNNN.color.png or .color.jpg images")
        for image in frames:
            pose_file = image.with_name(image.name.split(".")[0] + ".pose.txt")
            pose = read_pose_matrix(pose_file, problems)
            if pose is not None:
                paths.append(image)
                poses.append(pose)
                groups.append(seq.name)
    targets = torch.stack(poses) if poses else torch.zeros(0, 7, dtype=torch.float64)
    return Records("pose", paths, targets, groups, source=str(listing))


def read_pose_matrix(path: Path, problems: Problems) -> torch.Tensor | None:
    """A 4x4 camera-to-world matrix file -> pose [7], or None (reported) when it is bad."""
    if not path.is_file():
        problems.bad(f"{path}: pose file missing for its image")
        return None
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    try:
        m = torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)
    except (ValueError, TypeError):
        m = None
    if m is None or m.shape != (4, 4):
        problems.bad(f"{path}: expected 4 rows of 4 numbers (a 4x4 camera-to-world matrix)")
        return None
    if not bool(torch.isfinite(m).all()):
        problems.bad(f"{path}: matrix has non-finite values")
        return None
    r = m[:3, :3]
    if float((r.T @ r - torch.eye(3, dtype=m.dtype)).abs().max()) > 1e-2 or float(torch.linalg.det(r)) <= 0:
        problems.bad(f"{path}: the upper-left 3x3 block is not a rotation (R^T R != I or det <= 0)")
        return None
    return matrix_to_pose(m)
