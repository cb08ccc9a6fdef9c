"""Procedural 2D noise evaluated at arbitrary points: hashed lattice value noise and fBm.

Noise is a pure function of (point, seed), not of the sampling grid, so a texture baked at any
resolution shows the same pattern and identical surfaces (same seed) look identical.
"""
from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFF)


def hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform pseudo-random values in [0, 1) for integer lattice points (any shape), float32."""
    # 64-bit arithmetic masked to 32 bits: a murmur-style finaliser over a linear mix of the inputs
    x = (ix.astype(np.int64).astype(np.uint64) & _MASK)
    y = (iy.astype(np.int64).astype(np.uint64) & _MASK)
    h = (x * np.uint64(0x8DA6B343) + y * np.uint64(0xD8163841) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0xCB1AB31F)) & _MASK
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x2C1B3C6D)) & _MASK
    h ^= h >> np.uint64(12)
    h = (h * np.uint64(0x297A2D39)) & _MASK
    h ^= h >> np.uint64(15)
    return (h.astype(np.float64) * (1.0 / 2**32)).astype(np.float32)


def value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1] with one random value per unit lattice cell corner."""
    fu, fv = np.floor(u), np.floor(v)
    iu, iv = fu.astype(np.int64), fv.astype(np.int64)
    tu, tv = (u - fu).astype(np.float32), (v - fv).astype(np.float32)
    tu = tu * tu * (3 - 2 * tu)  # smoothstep: no visible lattice creases
    tv = tv * tv * (3 - 2 * tv)
    a, b = hash01(iu, iv, seed), hash01(iu + 1, iv, seed)
    c, d = hash01(iu, iv + 1, seed), hash01(iu + 1, iv + 1, seed)
    top = a + (b - a) * tu
    bottom = c + (d - c) * tu
    return top + (bottom - top) * tv


def fbm(u: np.ndarray, v: np.ndarray, seed: int, frequency: float, octaves: int = 5,
        gain: float = 0.5, lacunarity: float = 2.03) -> np.ndarray:
    """Fractal sum of ``octaves`` value-noise layers starting at ``frequency`` cycles per metre;
    result in [0, 1], float32. The odd lacunarity keeps octave lattices from lining up."""
    total = np.zeros(np.broadcast(u, v).shape, np.float32)
    amplitude, norm, f = 1.0, 0.0, frequency
    for octave in range(octaves):
        total += amplitude * value_noise(u * f + 17.3 * octave, v * f - 9.1 * octave, seed + 101 * octave)
        norm += amplitude
        amplitude *= gain
        f *= lacunarity
    return total / norm
