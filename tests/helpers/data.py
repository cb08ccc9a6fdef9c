"""Small datasets written in the real on-disk layouts, shared by the tests."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

S = math.sqrt(0.5)


def write_image(path: Path, rng: np.random.Generator, size=(40, 30), fmt=None, tint: float | None = None) -> np.ndarray:
    """Random pixels; with ``tint`` in [0, 1] the image is a colour that encodes it, plus noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    if tint is not None:
        colour = np.array([255 * tint, 128, 255 * (1 - tint)])
        pixels = np.clip(colour + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


def cambridge(root: Path, rng, lines_train: list[str] | None = None) -> Path:
    for seq in ("seq1", "seq2"):
        for i in range(4):
            write_image(root / seq / f"frame{i:05d}.png", rng)
    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    train = lines_train or [f"seq{s}/frame{i:05d}.png {s} {i} 0.5 1 0 0 0" for s in (1, 2) for i in range(4)]
    (root / "dataset_train.txt").write_text(header + "\n".join(train) + "\n")
    (root / "dataset_test.txt").write_text(header + f"seq2/frame00000.png 1.0 2.0 3.0 {S} 0 0 {S}\n")
    return root


def seven_scenes(root: Path, rng, ext="png", visible_pose: bool = False, frames: int = 4) -> Path:
    """3 sequences x ``frames``; x = 10 s + i. ``visible_pose`` tints each image by its x, so the
    pose can be learned from any crop (plain random pixels only allow learning the mean)."""
    rz90 = np.array([[0.0, -1, 0, 1.0], [1, 0, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]])
    for s in (1, 2, 3):
        for i in range(frames):
            write_image(root / f"seq-{s:02d}" / f"frame-{i:06d}.color.{ext}", rng,
                        fmt="JPEG" if ext == "jpg" else None,
                        tint=(s * 10 + i - 10) / (20 + frames) if visible_pose else None)
            pose = rz90.copy()
            pose[0, 3] = s * 10 + i
            # the 7-Scenes files: tab/space separated rows, trailing whitespace
            text = "\n".join("\t".join(f"{v:.7e}" for v in row) + " \t" for row in pose) + "\n"
            (root / f"seq-{s:02d}" / f"frame-{i:06d}.pose.txt").write_text(text)
    (root / "TrainSplit.txt").write_text("sequence1\nsequence3\n")
    (root / "TestSplit.txt").write_text("sequence2\n")
    return root


def mit67(root: Path, rng) -> Path:
    train, test = [], []
    for c in ("bookstore", "airport_inside", "closet"):
        for i in range(4):
            write_image(root / "Images" / c / f"img{i}.jpg", rng, fmt="JPEG")
            (train if i < 3 else test).append(f"{c}/img{i}.jpg")
    (root / "TrainImages.txt").write_text("\n".join(train) + "\n")
    (root / "TestImages.txt").write_text("\n".join(test) + "\n")
    return root
