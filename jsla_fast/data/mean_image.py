"""The per-channel mean image of a training split (PoseNet's preprocessing), cached beside the data.

The cache file name hashes the image list, file sizes and resolution, so a changed split gets a
new mean; it is written atomically, and a read-only data folder falls back to ~/.cache/jsla_fast.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..normalization import resize_image
from ..progress import progress
from .images import load_image
from .records import Records

log = logging.getLogger("jsla_fast.data")
CACHE_DIR = ".jsla_fast_cache"


def mean_image(records: Records, size: tuple[int, int], root: Path) -> torch.Tensor:
    """``[3,H,W]`` float32 mean of the split's images resized to ``size``."""
    key = hashlib.sha1()
    key.update(repr(tuple(size)).encode())
    for p in sorted(records.paths):
        key.update(f"{p.relative_to(root) if p.is_relative_to(root) else p}:{p.stat().st_size}\n".encode())
    name = f"mean-{size[0]}x{size[1]}-{key.hexdigest()[:16]}.pt"
    folders = (root / CACHE_DIR, Path.home() / ".cache" / "jsla_fast" / hashlib.sha1(str(root).encode()).hexdigest()[:12])
    for folder in folders:
        cached = folder / name
        if cached.is_file():
            try:
                mean = torch.load(cached, weights_only=True)
                if isinstance(mean, torch.Tensor) and tuple(mean.shape) == (3, *size):
                    return mean
            except Exception:  # a damaged cache is recomputed, never trusted
                log.warning("ignoring damaged mean-image cache %s", cached)
    total = torch.zeros(3, *size, dtype=torch.float64)
    for p in progress(records.paths, desc="mean image", unit="img", leave=False, disable=len(records) < 50):
        total += resize_image(load_image(p), size).double()
    mean = (total / max(len(records), 1)).float()
    for folder in folders:
        try:
            atomic_write(folder / name, lambda f: torch.save(mean, f))
            log.info("cached the mean image of %d images at %s", len(records), folder / name)
            break
        except OSError as e:
            log.warning("cannot cache the mean image in %s (%s); trying the next place", folder, e)
    return mean
