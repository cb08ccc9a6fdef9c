"""MIT-67 indoor scenes: ``<root>/Images/<class>/<file>.jpg``; ``TrainImages.txt`` /
``TestImages.txt`` list ``<class>/<file>.jpg``. Class indices follow the sorted training classes."""
from __future__ import annotations

from pathlib import Path

import torch

from .records import DataError, Problems, Records, require_file

SPLIT_FILES = {"train": "TrainImages.txt", "test": "TestImages.txt"}


def read_mit67(root: Path, split: str, problems: Problems) -> Records:
    hint = "--data must be the MIT-67 folder holding Images/, TrainImages.txt and TestImages.txt"
    classes = sorted({entry.split("/")[0] for _, entry in _entries(require_file(root / SPLIT_FILES["train"], hint))})
    listing = require_file(root / SPLIT_FILES[split], hint)
    index = {name: i for i, name in enumerate(classes)}
    paths, labels, groups = [], [], []
    for number, entry in _entries(listing):
        name = entry.split("/")[0]
        if "/" not in entry or name not in index:
            raise DataError(f"{listing}:{number}: {entry!r} is not '<class>/<file>' with a class of the training "
                            f"list ({len(classes)} classes)")
        image = root / "Images" / entry
        if not image.is_file():
            problems.bad(f"{listing}:{number}: image {image} does not exist")
            continue
        paths.append(image)
        labels.append(index[name])
        groups.append(name)
    return Records("scene", paths, torch.tensor(labels, dtype=torch.int64), groups, classes=classes,
                   source=str(listing))


def _entries(listing: Path):
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if line.strip():
            yield number, line.strip()
