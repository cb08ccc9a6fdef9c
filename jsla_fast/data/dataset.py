"""``open_dataset``: one entry point for every format, split and preprocessing (docs/DESIGN.md,
"Data layouts", "Conventions")."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..config import DataConfig
from ..normalization import Normalization, resize_image, shorter_side_size
from .cambridge import read_cambridge
from .images import image_size, is_readable, load_image
from .mean_image import mean_image
from .mit67 import read_mit67
from .pose_csv import read_pose_csv
from .records import DataError, Problems, Records
from .sevenscenes import read_7scenes



@dataclass(frozen=True)
class DataFormat:
    """One dataset layout: its reader ``(root, "train" | "test", problems) -> Records`` and the
    task its labels are for."""

    reader: Callable[..., Records]
    task: str  #: "pose" or "scene"


#: the one table of dataset formats (``--format`` of train, evaluate and references)
FORMATS: dict[str, DataFormat] = {
    "cambridge": DataFormat(read_cambridge, "pose"),
    "7scenes": DataFormat(read_7scenes, "pose"),
    "csv": DataFormat(read_pose_csv, "pose"),
    "mit67": DataFormat(read_mit67, "scene"),
}
SPLITS = ("train", "val", "test")


def data_format(fmt: str) -> DataFormat:
    """The table entry of ``fmt``; a clear error naming the known formats otherwise."""
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; use one of {list(FORMATS)}")
    return FORMATS[fmt]


def read_records(root: str | Path, fmt: str, split: str, cfg: DataConfig, skip_bad: bool = False) -> Records:
    """The image list of ``split``: ``train`` and ``val`` partition the dataset's training list."""
    data_format(fmt)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    problems = Problems(skip_bad)
    records = data_format(fmt).reader(root, "test" if split == "test" else "train", problems)
    if skip_bad:  # unreadable images are found now rather than mid-epoch
        keep = [i for i, p in enumerate(records.paths) if is_readable(p)]
        for i in sorted(set(range(len(records))) - set(keep)):
            problems.bad(f"image {records.paths[i]} is unreadable")
        records = records.subset(keep)
    problems.report(f"{records.source or root}")
    if split != "test":
        train, val = split_validation(records, cfg.val_fraction, cfg.seed)
        records = train if split == "train" else val
        if split == "val":
            return records
    if len(records) == 0:
        raise DataError(f"the {split} split of {root} ({fmt}) has no images; check {records.source or root}")
    return records


def split_validation(records: Records, fraction: float, seed: int) -> tuple[Records, Records]:
    """Hold ``fraction`` of each sequence/class out of train. Pose data: the *last* frames of each
    sequence (neighbouring frames are near-duplicates, so a random pick would leak); scenes: a
    seeded random pick per class."""
    if fraction <= 0:
        return records, records.subset([])
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(records.groups):
        by_group.setdefault(g, []).append(i)
    gen = torch.Generator().manual_seed(seed)
    val: list[int] = []
    for members in by_group.values():
        if len(members) < 2:
            continue
        n = max(1, math.ceil(fraction * len(members)))
        if records.task == "pose":
            val += members[-n:]
        else:
            val += [members[i] for i in torch.randperm(len(members), generator=gen)[:n].tolist()]
    chosen = set(val)
    return records.subset([i for i in range(len(records)) if i not in chosen]), records.subset(sorted(val))


def fit_normalization(root: str | Path, fmt: str, cfg: DataConfig, train: Records) -> Normalization:
    """Resize target and mean image from the training split (test data is never looked at)."""
    if FORMATS[fmt].task == "scene":
        size = (cfg.scene_size, cfg.scene_size)
    else:
        size = shorter_side_size(*image_size(train.paths[0]), cfg.resize)
    return Normalization(mean=mean_image(train, size, Path(root)), size=size, crop=cfg.crop)


class ImageDataset(Dataset):
    """``ds[i] -> (image [3,crop,crop] float32, target)``: target [7] float32 pose or int64 class.

    ``augment``: random crop (unless ``random_crop`` is off) and flip (when enabled) for training;
    otherwise the centre crop of :meth:`Normalization.prepare`.
    """

    def __init__(self, records: Records, normalization: Normalization, augment: bool = False,
                 flip: bool = False, random_crop: bool = True) -> None:
        self.records = records
        self.normalization = normalization
        self.augment = augment
        self.flip = flip
        self.random_crop = random_crop

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        image = load_image(self.records.paths[i])
        norm = self.normalization
        if self.augment and self.random_crop:
            image = norm.apply(resize_image(image, norm.size))
            h, w = image.shape[-2:]
            top = int(torch.randint(0, h - norm.crop + 1, ()))
            left = int(torch.randint(0, w - norm.crop + 1, ()))
            image = image[:, top:top + norm.crop, left:left + norm.crop]
        else:
            image = norm.prepare(image)
        if self.augment and self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        target = self.records.targets[i]
        return image.contiguous(), (target.float() if target.is_floating_point() else target)


def open_dataset(root: str | Path, fmt: str, split: str, cfg: DataConfig | None = None, *,
                 normalization: Normalization | None = None, skip_bad: bool = False,
                 augment: bool | None = None) -> ImageDataset:
    """A ready dataset. Without ``normalization`` it is fitted on the training split (and cached).
    ``augment`` defaults to True for the train split only."""
    cfg = cfg or DataConfig()
    records = read_records(root, fmt, split, cfg, skip_bad)
    if normalization is None:
        train = records if split == "train" else read_records(root, fmt, "train", cfg, skip_bad)
        normalization = fit_normalization(root, fmt, cfg, train)
    augment = (split == "train") if augment is None else augment
    flip = cfg.flip if cfg.flip is not None else FORMATS[fmt].task == "scene"
    return ImageDataset(records, normalization, augment=augment, flip=flip, random_crop=cfg.random_crop)

