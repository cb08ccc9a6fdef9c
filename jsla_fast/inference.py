"""Running a loaded model on single images: the shared path of ``predict`` and ``evaluate``'s
overlays. Images go through the checkpoint's own preprocessing (:meth:`Normalization.prepare`)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .normalization import Normalization, centre_crop, resize_image
from .plots import attention_strip


@dataclass
class Localization:
    """One image's result."""

    pose: list[float] | None  #: x,y,z,qw,qx,qy,qz
    logits: list[float] | None
    layers: list[int]
    attention: list[np.ndarray]  #: per step [h,w]
    ms: float


def preprocessing(model) -> Normalization:
    norm = getattr(model, "normalization", None)
    if norm is None:
        raise ValueError("the model has no input normalisation; load it from a checkpoint written by training "
                         "(jsla_fast.train), which records the mean image and crop")
    return norm


@torch.inference_mode()
def localize(model, image: torch.Tensor, device: torch.device | str = "cpu") -> Localization:
    """``image``: RGB ``[3,H,W]`` float in [0, 1], any size."""
    start = time.perf_counter()
    x = preprocessing(model).prepare(image.to(device))[None]
    out = model(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - start) * 1e3
    return Localization(
        pose=None if out.pose is None else out.pose[0].double().cpu().tolist(),
        logits=None if out.logits is None else out.logits[0].double().cpu().tolist(),
        layers=out.layers[0].cpu().tolist(),
        attention=[a[0, 0].float().cpu().numpy() for a in out.attention],
        ms=ms,
    )


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

