"""Running a loaded model on single images for ``evaluate``'s overlays and the demo (``predict``
uses :class:`jsla_fast.runtime.Localizer` directly).
Images go through the checkpoint's own preprocessing (:meth:`Normalization.prepare`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .normalization import centre_crop, resize_image
from .plots import attention_strip
from .runtime import Localization, Localizer, preprocessing


def localize(model, image: torch.Tensor, device: torch.device | str = "cpu") -> Localization:
    """``image``: RGB ``[3,H,W]`` float in [0, 1], any size; the model runs as it is (no folding),
    with the backend it has."""
    backend = getattr(model, "backend", "reference")
    return Localizer(model, device, backend=backend, optimize=False, channels_last=False).localize(image)


def display_crop(model, image: torch.Tensor) -> np.ndarray:
    """The region the model saw, as RGB uint8 ``[crop,crop,3]`` (resized and cropped, not normalised)."""
    norm = preprocessing(model)
    shown = resize_image(image, norm.size) if norm.size else image
    shown = centre_crop(shown, norm.crop) if norm.crop else shown
    return (shown.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def attention_picture(model, image: torch.Tensor, result: Localization) -> np.ndarray:
    names = getattr(model.config, "layers", ())
    labels = [f"step {t + 1}: {names[i] if i < len(names) else i}" for t, i in enumerate(result.layers)]
    return attention_strip(display_crop(model, image), result.attention, labels)


def image_files(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and the images found (recursively, sorted) in folders."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        else:
            found.append(item)
    return found

