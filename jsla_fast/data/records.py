"""What a dataset reader produces (image paths and targets), and how bad input is reported.

Every reader reports a problem through :class:`Problems`: by default the first one raises a
:class:`DataError` naming the file (and line); with ``--skip-bad`` the entry is skipped, counted
and reported at the end. Nothing is skipped silently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("jsla_fast.data")


class DataError(ValueError):
    """Bad or missing data; the message names the file (and line) and what to do."""


class Problems:
    """Collects bad entries. ``bad(msg)`` raises unless ``skip_bad``, in which case it counts."""

    def __init__(self, skip_bad: bool = False) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[str] = []

    def bad(self, message: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{message} (run with --skip-bad to skip such entries and report their count)")
        self.skipped.append(message)

    def report(self, what: str) -> None:
        if self.skipped:
            log.warning("%s: skipped %d bad entries (--skip-bad); first: %s", what, len(self.skipped), self.skipped[0])


class UnitQuaternionCheck:
    """Counts quaternions that are not unit (readers normalise them) and warns once per file, naming the first line."""

    TOLERANCE = 1e-3

    def __init__(self, source: Path) -> None:
        self.source = source
        self.count = 0
        self.first: tuple[int, float] | None = None

    def __call__(self, q: torch.Tensor, line: int) -> torch.Tensor:
        norm = float(q.norm())
        if abs(norm - 1.0) > self.TOLERANCE:
            self.count += 1
            if self.first is None:
                self.first = (line, norm)
        return q

    def warn(self) -> None:
        if self.first is not None:
            line, norm = self.first
            log.warning("%s:%d: quaternion norm %.4f is not 1; normalised (%d such entries in this file)",
                        self.source, line, norm, self.count)


@dataclass
class Records:
    """Images and their targets for one split of one dataset."""

    task: str  #: "pose" or "scene"
    paths: list[Path]
    targets: torch.Tensor  #: [N,7] float64 poses (x,y,z,qw,qx,qy,qz; unit, qw >= 0) or [N] int64 labels
    groups: list[str]  #: sequence (pose) or class name (scene) of each image
    classes: list[str] | None = None  #: scene class names; label i is classes[i]
    source: str = ""  #: where the list came from, for messages

    def __post_init__(self) -> None:
        if not (len(self.paths) == len(self.targets) == len(self.groups)):
            raise ValueError("paths, targets and groups must have the same length")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: list[int]) -> "Records":
        return Records(self.task, [self.paths[i] for i in index], self.targets[index],
                       [self.groups[i] for i in index], self.classes, self.source)


def require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path} not found: {hint}")
    return path
