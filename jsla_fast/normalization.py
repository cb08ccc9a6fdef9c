"""Input normalisation statistics stored with a model (SPEC §4): ``(image - mean) / std``.

``mean`` is a per-channel mean image ``[3,H,W]`` (PoseNet style) or per-channel values
``[3,1,1]``; ``std`` is optional (``[3,1,1]``). Images are float RGB in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Normalization:
    mean: torch.Tensor
    std: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.mean.dim() != 3 or self.mean.shape[0] != 3:
            raise ValueError(f"normalisation mean must be [3,H,W] or [3,1,1], got {tuple(self.mean.shape)}")
        if self.std is not None and (self.std.shape != (3, 1, 1) or bool((self.std <= 0).any())):
            raise ValueError(f"normalisation std must be positive with shape [3,1,1], got {tuple(self.std.shape)}")

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise ``images [B,3,H,W]``. A larger mean image is centre-cropped to the images' size,
        as the test-time centre crop takes the image from the centre of the resized frame."""
        mean = self.mean.to(images)
        (mh, mw), (h, w) = mean.shape[-2:], images.shape[-2:]
        if (mh, mw) != (1, 1) and (mh, mw) != (h, w):
            if mh < h or mw < w:
                raise ValueError(f"mean image {mh}x{mw} is smaller than the images {h}x{w}; "
                                 "recompute the mean at the resized (pre-crop) resolution")
            top, left = (mh - h) // 2, (mw - w) // 2
            mean = mean[:, top:top + h, left:left + w]
        out = images - mean
        return out if self.std is None else out / self.std.to(images)

    def to_dict(self) -> dict[str, torch.Tensor | None]:
        return {"mean": self.mean.detach().cpu(), "std": None if self.std is None else self.std.detach().cpu()}

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        return cls(mean=data["mean"], std=data.get("std"))
