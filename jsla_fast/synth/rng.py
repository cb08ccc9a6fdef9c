"""Named, independent random streams derived from one user seed.

Every random choice of the generator draws from ``stream(seed, "what", index...)`` so that adding
a new random decision in one place never shifts the numbers drawn anywhere else, and no global RNG
state is ever touched.
"""
from __future__ import annotations

import zlib

import numpy as np


def _key(part: str | int) -> int:
    if isinstance(part, (int, np.integer)):
        if part < 0:
            raise ValueError(f"stream keys must be non-negative integers or strings, got {part}")
        return int(part)
    return zlib.crc32(str(part).encode("utf-8"))


def stream(seed: int, *keys: str | int) -> np.random.Generator:
    """A ``numpy.random.Generator`` for ``seed`` and the path ``keys`` (strings or ints >= 0)."""
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng([int(seed), *(_key(k) for k in keys)])


def draw_u32(rng: np.random.Generator) -> int:
    """One 32-bit integer, e.g. the seed of a procedural texture."""
    return int(rng.integers(0, 2**32, dtype=np.uint64))
