"""Reading images from disk as float RGB tensors in [0, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .records import DataError


def load_image(path: str | Path) -> torch.Tensor:
    """``[3,H,W]`` float32 RGB in [0, 1]; grey, palette and RGBA images are converted to RGB."""
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"image {path} is unreadable ({type(e).__name__}: {e}); replace it, or run with "
                        "--skip-bad to skip unreadable images") from None
    return rgb_tensor(array)


def rgb_tensor(array: np.ndarray) -> torch.Tensor:
    """RGB ``uint8 [H,W,3]`` -> ``[3,H,W]`` float32 in [0, 1] (a new tensor): the model's image input,
    the same for files (:func:`load_image`) and camera messages (the ROS node)."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch warns on read-only memory (PIL's and messages' buffers)
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"image {path} is unreadable ({type(e).__name__}: {e})") from None


def is_readable(path: str | Path) -> bool:
    try:
        load_image(path)
        return True
    except DataError:
        return False
