"""Baked textures of a whole scene, with mipmaps, and their per-pixel lookup.

Evaluating procedural textures per pixel per frame would cost more than the ray casting, and
sampling them at one point per pixel aliases at a distance. So each face is baked once into a
texel grid (cheap, a few seconds per room), and frames sample it with trilinear mipmapping: the
mip level follows the pixel's footprint on the surface, like a real lens integrating over it.
All faces of all levels live in one flat ``[T, 3]`` array addressed by per-surface offsets.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .textures import albedo

log = logging.getLogger(__name__)

MAX_LEVELS = 6


def texel_density(fx: float) -> float:
    """Texels per metre for a camera with focal length ``fx`` pixels: one texel per pixel at
    about 2 m, rounded to a power of two so nearby image sizes share a bake."""
    return float(2 ** np.clip(np.round(np.log2(fx / 2.0)), 4, 8))


def _downsample(img: np.ndarray) -> np.ndarray:
    """2x2 box filter; an odd last row/column is repeated so every texel keeps its weight."""
    h, w = img.shape[:2]
    if h % 2:
        img = np.concatenate([img, img[-1:]], 0)
    if w % 2:
        img = np.concatenate([img, img[:, -1:]], 1)
    return 0.25 * (img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2])


@dataclass
class TextureAtlas:
    """Linear-light albedo of every surface of a scene at ``density`` texels per metre (level 0).

    ``offset/width/height [S, MAX_LEVELS]`` locate level ``l`` of surface ``s`` in ``texels``;
    levels beyond a small face's last are copies of its last level.
    """

    density: float
    texels: np.ndarray  # [T, 3] float32, linear light
    offset: np.ndarray  # [S, L] int64
    width: np.ndarray  # [S, L] int64
    height: np.ndarray  # [S, L] int64

    @classmethod
    def bake(cls, faces: list[tuple], density: float) -> "TextureAtlas":
        """``faces``: per surface id, ``(style, extent_u, extent_v, hidden)``; hidden faces (flush
        against the room shell, never seen) get one texel."""
        chunks, offset, width, height = [], [], [], []
        total = 0
        cache: dict = {}  # identical surfaces (same style and size) are baked once
        for style, eu, ev, hidden in faces:
            key = (style, round(eu, 6), round(ev, 6), hidden)
            if key not in cache:
                img = albedo(style, eu, ev, density if not hidden else 1.0 / max(eu, ev, 1e-6))
                lin = np.power(np.minimum(img, 1.0), 2.2) * np.maximum(img, 1.0)  # sRGB-ish -> linear
                levels = [lin]
                while len(levels) < MAX_LEVELS and max(levels[-1].shape[:2]) > 1:
                    levels.append(_downsample(levels[-1]))
                cache[key] = levels
            levels = cache[key]
            offs, ws, hs = [], [], []
            for lvl in range(MAX_LEVELS):
                img = levels[min(lvl, len(levels) - 1)]
                if lvl < len(levels):
                    chunks.append(img.reshape(-1, 3))
                    offs.append(total)
                    total += img.shape[0] * img.shape[1]
                else:
                    offs.append(offs[-1])
                hs.append(img.shape[0])
                ws.append(img.shape[1])
            offset.append(offs)
            width.append(ws)
            height.append(hs)
        texels = np.concatenate(chunks, 0).astype(np.float32)
        log.debug("baked %d surfaces into %.1f MB of texels at %g px/m", len(faces), texels.nbytes / 1e6, density)
        return cls(density, texels, np.asarray(offset, np.int64), np.asarray(width, np.int64),
                   np.asarray(height, np.int64))

    def _bilinear(self, sid: np.ndarray, level: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        scale = self.density / (2.0 ** level)
        w, h = self.width[sid, level], self.height[sid, level]
        su, sv = u * scale - 0.5, v * scale - 0.5
        u0, v0 = np.floor(su), np.floor(sv)
        fu, fv = (su - u0).astype(np.float32)[:, None], (sv - v0).astype(np.float32)[:, None]
        u0, v0 = u0.astype(np.int64), v0.astype(np.int64)
        u1, v1 = np.clip(u0 + 1, 0, w - 1), np.clip(v0 + 1, 0, h - 1)
        u0, v0 = np.clip(u0, 0, w - 1), np.clip(v0, 0, h - 1)
        row0 = self.offset[sid, level] + v0 * w
        row1 = row0 + (v1 - v0) * w
        top = self._gather(row0 + u0) * (1 - fu) + self._gather(row0 + u1) * fu
        bottom = self._gather(row1 + u0) * (1 - fu) + self._gather(row1 + u1) * fu
        return top * (1 - fv) + bottom * fv

    def _gather(self, index: np.ndarray) -> np.ndarray:
        # one 12-byte record per texel: numpy gathers whole records ~10x faster than [P, 3] rows
        if getattr(self, "_records", None) is None:
            self._records = np.ascontiguousarray(self.texels).view(np.dtype((np.void, 12))).reshape(-1)
        return np.take(self._records, index).view(np.float32).reshape(-1, 3)

    def sample(self, sid: np.ndarray, u: np.ndarray, v: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Linear albedo ``[P, 3]`` of surfaces ``sid [P]`` at face coordinates ``u, v`` (metres),
        filtered over ``footprint`` (metres per pixel on the surface)."""
        lod = np.log2(np.maximum(footprint * self.density, 1.0))
        lod = np.minimum(lod, MAX_LEVELS - 1.0)
        l0 = np.floor(lod).astype(np.int64)
        l1 = np.minimum(l0 + 1, MAX_LEVELS - 1)
        f = (lod - l0).astype(np.float32)[:, None]
        a = self._bilinear(sid, l0, u, v)
        if not np.any(f > 0):
            return a
        return a * (1 - f) + self._bilinear(sid, l1, u, v) * f
