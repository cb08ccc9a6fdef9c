"""The model's input preprocessing, stored with every checkpoint (docs/DESIGN.md, "Conventions").

An RGB image in [0, 1] is resized to ``size`` (H, W), the mean image (or per-channel mean) is
subtracted, optionally divided by ``std``, and centre-cropped to ``crop`` x ``crop``. Training
uses the same steps with a random crop; :meth:`prepare` is the test-time path that ``predict``,
evaluation and the runtime share, so what a deployed model sees equals what it was tested on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of ``[3,h,w]`` or ``[B,3,h,w]`` float images to (H, W)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batched = image if image.dim() == 4 else image[None]
    out = F.interpolate(batched, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out if image.dim() == 4 else out[0]


def shorter_side_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(H, W) with the shorter side ``shorter`` and the aspect ratio kept (1080x1920 -> 256x455)."""
    if height <= width:
        return shorter, max(1, round(width * shorter / height))
    return max(1, round(height * shorter / width)), shorter


#: The default preprocessing of a model saved without one (docs/DESIGN.md, "Conventions"): the
#: paper's test time (shorter side to 256, the centre 224 x 224 crop) with the per-channel mean of
#: ImageNet (R, G, B = 0.485, 0.456, 0.406 of [0, 1]) subtracted and no division by a std, as
#: GoogLeNet (the backbone) was pretrained. Training records the training set's mean image instead.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_SHORTER, DEFAULT_CROP = 256, 224


@dataclass
class Normalization:
    mean: torch.Tensor  #: [3,H,W] mean image at ``size``, or [3,1,1] per-channel values
    std: torch.Tensor | None = None  #: [3,1,1] or None
    size: tuple[int, int] | None = None  #: (H, W) images are resized to first; None: keep
    crop: int | None = None  #: side of the centre crop; None: no crop
    #: without ``size``: resize the shorter side to this, keeping the aspect (any camera); None: keep
    shorter: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mean, torch.Tensor) or self.mean.dim() != 3 or self.mean.shape[0] != 3:
            got = tuple(self.mean.shape) if isinstance(self.mean, torch.Tensor) else type(self.mean).__name__
            raise ValueError(f"normalisation mean must be a tensor [3,H,W] or [3,1,1], got {got}")
        if self.std is not None and (self.std.shape != (3, 1, 1) or bool((self.std <= 0).any())):
            raise ValueError(f"normalisation std must be positive with shape [3,1,1], got {tuple(self.std.shape)}")
        if self.shorter is not None:
            self.shorter = int(self.shorter)
            if self.size is not None or self.mean.shape[-2:] != (1, 1):
                raise ValueError("normalisation 'shorter' (resize the shorter side) needs size None and a "
                                 f"per-channel mean [3,1,1], got size {self.size} and mean {tuple(self.mean.shape)}")
            if self.crop is not None and self.crop > self.shorter:
                raise ValueError(f"crop {self.crop} is larger than the resized shorter side {self.shorter}")
        if self.size is not None:
            self.size = (int(self.size[0]), int(self.size[1]))
            if self.mean.shape[-2:] != (1, 1) and tuple(self.mean.shape[-2:]) != self.size:
                raise ValueError(f"mean image is {tuple(self.mean.shape[-2:])} but images are resized to {self.size}")
            if self.crop is not None and self.crop > min(self.size):
                raise ValueError(f"crop {self.crop} is larger than the resized image {self.size}")

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise ``images [...,3,H,W]``. A larger mean image is centre-cropped to the images' size,
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

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Test-time path: RGB ``[3,h,w]`` or ``[B,3,h,w]`` in [0, 1] -> resized, normalised, centre-cropped."""
        if self.size is not None:
            image = resize_image(image, self.size)
        elif self.shorter is not None:
            image = resize_image(image, shorter_side_size(*image.shape[-2:], self.shorter))
        image = self.apply(image)
        return image if self.crop is None else centre_crop(image, self.crop)

    def to_dict(self) -> dict:
        return {"mean": self.mean.detach().cpu(), "std": None if self.std is None else self.std.detach().cpu(),
                "size": None if self.size is None else list(self.size), "crop": self.crop, "shorter": self.shorter}

    @classmethod
    def from_dict(cls, data: dict) -> "Normalization":
        size = data.get("size")
        return cls(mean=data["mean"], std=data.get("std"), size=None if size is None else tuple(size),
                   crop=data.get("crop"), shorter=data.get("shorter"))

    def describe(self) -> str:
        """One line for logs and errors: what an image goes through."""
        resize = (f"resize to {self.size[0]}x{self.size[1]}" if self.size else
                  f"shorter side to {self.shorter}" if self.shorter else "no resize")
        mean = ("per-channel mean (" + ", ".join(f"{v:.3f}" for v in self.mean.flatten().tolist()) + ")"
                if self.mean.shape[-2:] == (1, 1) else f"mean image {self.mean.shape[1]}x{self.mean.shape[2]}")
        crop = f"centre {self.crop}x{self.crop} crop" if self.crop else "no crop"
        return f"{resize}, {mean} subtracted{', divided by std' if self.std is not None else ''}, {crop}"


def default_normalization() -> Normalization:
    """The documented default for a model saved without its preprocessing (see DEFAULT_MEAN)."""
    return Normalization(mean=torch.tensor(DEFAULT_MEAN).view(3, 1, 1), shorter=DEFAULT_SHORTER, crop=DEFAULT_CROP)


def centre_crop(image: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    if crop > h or crop > w:
        raise ValueError(f"cannot crop {crop}x{crop} from a {h}x{w} image")
    top, left = (h - crop) // 2, (w - crop) // 2
    return image[..., top:top + crop, left:left + crop]


def preprocessing(model) -> Normalization:
    """The checkpoint's input normalisation (mean image, resize, crop) recorded by training."""
    norm = model.normalization
    if norm is None:
        raise ValueError("the model has no input normalisation; save it with jsla_fast.save_checkpoint (which "
                         "records the default, or pass normalization=...) or set model.normalization")
    return norm
