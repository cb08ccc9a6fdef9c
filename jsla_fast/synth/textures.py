"""Procedural surface textures: what each kind of surface looks like, as a function of the point.

A :class:`SurfaceStyle` names a texture kind, a seed and a colour palette. :func:`albedo` turns it
into colours at face-local coordinates ``(u, v)`` in metres (measured from the face's minimum
corner; on vertical faces ``v`` is height). Because the pattern is a function of the surface point
alone, every view of a surface agrees, and two surfaces with equal styles and extents (the
"identical" posters and crates) look exactly alike: deliberate local ambiguity, as in real rooms.

Each kind mixes several scales: fBm value noise for large, unique variation (so different places
look different), plus sharp features (grout, plank gaps, stripes, spots, sockets, book spines, edge
lines) for detail a network can lock onto.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from .noise import fbm, hash01, value_noise
from .rng import draw_u32

KINDS = ("plaster", "tiles", "planks", "ceiling", "wood", "painted", "books", "concrete", "poster", "crate")
# emissive ceiling panels: stored as albedo above 1 so they render near white under any lighting
EMISSIVE = 3.0


@dataclass(frozen=True)
class SurfaceStyle:
    """Appearance of one face: ``kind`` (one of :data:`KINDS`), texture ``seed``, three sRGB
    ``palette`` colours in [0, 1] (base, variant, accent) and kind-specific ``params``."""

    kind: str
    seed: int
    palette: tuple[tuple[float, float, float], ...]
    params: tuple[tuple[str, float], ...] = field(default=())

    def param(self, name: str, default: float = 0.0) -> float:
        return dict(self.params).get(name, default)

    def to_json(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "palette": [list(c) for c in self.palette],
                "params": dict(self.params)}


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return tuple(round(float(c), 6) for c in colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)))


def random_style(kind: str, rng: np.random.Generator, **params: float) -> SurfaceStyle:
    """A style of ``kind`` with a palette drawn from ranges typical of that kind of surface."""
    if kind not in KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; expected one of {KINDS}")
    h = float(rng.random())
    u = rng.random
    if kind == "plaster":
        palette = (_hsv(h, 0.08 + 0.25 * u(), 0.72 + 0.2 * u()), _hsv(h + 0.05, 0.15 + 0.25 * u(), 0.6 + 0.2 * u()),
                   _hsv(h + 0.5 * u(), 0.3 + 0.4 * u(), 0.25 + 0.4 * u()))
        params.setdefault("stripes", float(u() < 0.4))
        params.setdefault("stripe_period", float(0.08 + 0.25 * u()))
    elif kind == "tiles":
        palette = (_hsv(h, 0.05 + 0.3 * u(), 0.55 + 0.35 * u()), _hsv(h + 0.1 * u(), 0.1 + 0.3 * u(), 0.3 + 0.3 * u()),
                   _hsv(h, 0.1, 0.15 + 0.2 * u()))
        params.setdefault("tile", float(0.3 + 0.3 * u()))
        params.setdefault("checker", float(u() < 0.5))
    elif kind == "planks":
        hw = 0.05 + 0.06 * u()
        palette = (_hsv(hw, 0.35 + 0.3 * u(), 0.35 + 0.35 * u()), _hsv(hw + 0.02, 0.45 + 0.3 * u(), 0.2 + 0.25 * u()),
                   _hsv(hw, 0.5, 0.1 + 0.1 * u()))
        params.setdefault("width", float(0.1 + 0.1 * u()))
        params.setdefault("length", float(0.9 + 1.2 * u()))
    elif kind == "ceiling":
        palette = (_hsv(h, 0.03 + 0.08 * u(), 0.8 + 0.15 * u()), _hsv(h, 0.05, 0.65 + 0.15 * u()),
                   _hsv(h, 0.1, 0.3 + 0.2 * u()))
        params.setdefault("panel_period", float(1.2 + 0.8 * u()))
        params.setdefault("panel_size", float(0.4 + 0.3 * u()))
    elif kind == "wood":
        hw = 0.04 + 0.07 * u()
        palette = (_hsv(hw, 0.4 + 0.3 * u(), 0.45 + 0.35 * u()), _hsv(hw, 0.55 + 0.3 * u(), 0.25 + 0.2 * u()),
                   _hsv(hw, 0.6, 0.12))
    elif kind == "painted":
        palette = (_hsv(h, 0.15 + 0.6 * u(), 0.35 + 0.55 * u()), _hsv(h + 0.03, 0.2 + 0.5 * u(), 0.3 + 0.4 * u()),
                   _hsv(h + 0.5, 0.1 + 0.3 * u(), 0.15 + 0.6 * u()))
        params.setdefault("drawer", float(0.22 + 0.25 * u()))
    elif kind == "books":
        palette = (_hsv(h, 0.4 + 0.4 * u(), 0.3 + 0.4 * u()), _hsv(h + 0.33, 0.4 + 0.4 * u(), 0.3 + 0.4 * u()),
                   _hsv(0.07, 0.4, 0.2 + 0.2 * u()))
        params.setdefault("row", float(0.3 + 0.12 * u()))
    elif kind == "concrete":
        palette = (_hsv(h, 0.02 + 0.08 * u(), 0.45 + 0.3 * u()), _hsv(h, 0.05, 0.3 + 0.2 * u()),
                   _hsv(h, 0.1, 0.15 + 0.1 * u()))
    elif kind == "poster":
        palette = (_hsv(h, 0.1 + 0.3 * u(), 0.75 + 0.25 * u()), _hsv(h + 0.3 + 0.4 * u(), 0.6 + 0.4 * u(), 0.5 + 0.5 * u()),
                   _hsv(h + 0.6, 0.7, 0.1 + 0.2 * u()))
    else:  # crate
        hw = 0.06 + 0.06 * u()
        palette = (_hsv(hw, 0.3 + 0.3 * u(), 0.5 + 0.3 * u()), _hsv(hw, 0.4 + 0.3 * u(), 0.3 + 0.2 * u()),
                   _hsv(h, 0.6, 0.15 + 0.2 * u()))
        params.setdefault("slat", float(0.08 + 0.06 * u()))
    return SurfaceStyle(kind, draw_u32(rng), palette, tuple(sorted((k, float(v)) for k, v in params.items())))


# ---------------------------------------------------------------------------------------------------
# helpers on [h,w] coordinate grids


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


def _colour(c) -> np.ndarray:
    return np.asarray(c, np.float32)


def _paint(img: np.ndarray, mask: np.ndarray, colour, alpha: float = 1.0) -> None:
    img[mask] = img[mask] * (1 - alpha) + _colour(colour) * alpha


def _border(u, v, eu, ev, width: float) -> np.ndarray:
    """Texels within ``width`` of the face boundary (sharp edges of furniture)."""
    return (u < width) | (v < width) | (u > eu - width) | (v > ev - width)


def _spots(img, u, v, eu, ev, rng, count: int, rmin: float, rmax: float, colours, alpha=(0.5, 1.0)) -> None:
    """``count`` sharp discs with log-uniform radii: marks and stains at many scales."""
    for _ in range(count):
        cu, cv = rng.random() * eu, rng.random() * ev
        r = float(np.exp(rng.uniform(np.log(rmin), np.log(rmax))))
        colour = colours[int(rng.integers(len(colours)))]
        a = float(rng.uniform(*alpha))
        # bounding window first: discs are small, faces can be large
        i0, i1 = np.searchsorted(v[:, 0], cv - r), np.searchsorted(v[:, 0], cv + r)
        j0, j1 = np.searchsorted(u[0], cu - r), np.searchsorted(u[0], cu + r)
        if i0 >= i1 or j0 >= j1:
            continue
        su, sv = u[i0:i1, j0:j1], v[i0:i1, j0:j1]
        mask = (su - cu) ** 2 + (sv - cv) ** 2 < r * r
        block = img[i0:i1, j0:j1]
        _paint(block, mask, colour, a)


def _rects(img, u, v, eu, ev, rng, count: int, wmin: float, wmax: float, colours, outline=None) -> None:
    """``count`` axis-aligned rectangles (sockets, labels, poster shapes)."""
    for _ in range(count):
        w, hgt = rng.uniform(wmin, wmax), rng.uniform(wmin, wmax)
        cu, cv = rng.uniform(0, max(eu, 1e-6)), rng.uniform(0, max(ev, 1e-6))
        colour = colours[int(rng.integers(len(colours)))]
        inside = (np.abs(u - cu) < w / 2) & (np.abs(v - cv) < hgt / 2)
        if outline is not None:
            ring = (np.abs(u - cu) < w / 2 + 0.006) & (np.abs(v - cv) < hgt / 2 + 0.006) & ~inside
            _paint(img, ring, outline)
        _paint(img, inside, colour)


# ---------------------------------------------------------------------------------------------------
# the kinds


def _plaster(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    img = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, np.clip(fbm(u, v, st.seed, 0.7, 5) * 1.6 - 0.3, 0, 1))
    img = img * (0.9 + 0.2 * fbm(u, v, st.seed + 1, 18.0, 2))[..., None]
    if st.param("stripes"):
        period = st.param("stripe_period", 0.15)
        _paint(img, np.mod(u, period) < 0.3 * period, c2, 0.25)
    area = eu * ev
    _spots(img, u, v, eu, ev, rng, int(3 * area), 0.01, 0.15, [c2, c1 * 0.7, (0.9, 0.9, 0.85)], (0.3, 0.9))
    # sockets and switches: small white plates with dark outline near the floor and at hand height
    for height in (0.3, 1.1):
        for _ in range(int(rng.integers(0, 3))):
            cu = rng.uniform(0.2, max(eu - 0.2, 0.21))
            plate = (np.abs(u - cu) < 0.04) & (np.abs(v - height) < 0.04)
            _paint(img, (np.abs(u - cu) < 0.046) & (np.abs(v - height) < 0.046) & ~plate, (0.2, 0.2, 0.2))
            _paint(img, plate, (0.93, 0.93, 0.9))
    board = float(0.06 + 0.06 * rng.random())
    _paint(img, v < board, c2 * 0.8)
    _paint(img, np.abs(v - board) < 0.006, (0.1, 0.1, 0.1), 0.7)
    return img


def _tiles(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    s = st.param("tile", 0.4)
    iu, iv = np.floor(u / s), np.floor(v / s)
    jitter = hash01(iu, iv, st.seed)
    if st.param("checker"):
        base = np.where(((iu + iv) % 2 == 0)[..., None], c0, c1)
    else:
        base = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, 0.35 * jitter)
    marble = fbm(u, v, st.seed + 3, 4.0, 4)
    img = base * (0.85 + 0.3 * marble)[..., None] * (0.93 + 0.14 * jitter)[..., None]
    dirt = fbm(u, v, st.seed + 5, 0.35, 3)  # room-scale variation breaks the tile repetition
    img = img * (0.8 + 0.4 * dirt)[..., None]
    fu, fv = u / s - iu, v / s - iv
    grout = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * s < 0.005
    _paint(img, grout, c2)
    _spots(img, u, v, eu, ev, rng, int(1.0 * eu * ev), 0.01, 0.08, [c2, c1], (0.3, 0.7))
    return img


def _planks(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    w, length = st.param("width", 0.15), st.param("length", 1.5)
    row = np.floor(v / w)
    shifted = u + hash01(row, row * 0 + 7, st.seed) * length
    col = np.floor(shifted / length)
    tone = hash01(row, col, st.seed + 1)
    grain = np.sin(2 * np.pi * (v * 55 + 4 * fbm(u, v, st.seed + 2, 0.6, 3) + tone * 3))
    img = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, np.clip(0.5 + 0.25 * grain + 0.5 * (tone - 0.5), 0, 1))
    img = img * (0.85 + 0.3 * fbm(u, v, st.seed + 4, 0.3, 3))[..., None]
    gap = ((v / w - row) * w < 0.004) | ((shifted / length - col) * length < 0.004)
    _paint(img, gap, c2)
    return img


def _ceiling(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    img = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, fbm(u, v, st.seed, 1.0, 4) * 0.5)
    period, size = st.param("panel_period", 1.5), st.param("panel_size", 0.6)
    fu, fv = np.mod(u - period / 2, period) - period / 2, np.mod(v - period / 2, period) - period / 2
    frame = (np.abs(fu) < size / 2 + 0.02) & (np.abs(fv) < size / 2 + 0.02)
    _paint(img, frame, c2)
    _paint(img, (np.abs(fu) < size / 2) & (np.abs(fv) < size / 2), (EMISSIVE,) * 3)
    _spots(img, u, v, eu, ev, rng, int(1.5 * eu * ev), 0.01, 0.1, [c1 * 0.8, c2], (0.3, 0.8))
    return img


def _wood(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    along_u = eu >= ev  # grain follows the long side of the face
    a, b = (u, v) if along_u else (v, u)
    t = b * 30 + 3.0 * fbm(a, b, st.seed, 0.5, 4) + 0.5 * fbm(a, b, st.seed + 1, 6.0, 2)
    ring = np.abs(np.mod(t, 1.0) - 0.5) * 2
    img = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, ring ** 3)
    _spots(img, u, v, eu, ev, rng, int(2 * eu * ev) + 1, 0.006, 0.03, [c2], (0.5, 0.9))
    _paint(img, _border(u, v, eu, ev, 0.008), c2, 0.8)
    return img


def _painted(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    img = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, fbm(u, v, st.seed, 1.2, 4) * 0.6)
    if st.param("vertical") and ev > 0.3:
        drawer = st.param("drawer", 0.3)
        n_rows = max(int(ev / drawer), 1)
        pitch = ev / n_rows
        fv = np.mod(v, pitch)
        _paint(img, (fv < 0.005) | (fv > pitch - 0.005), c2, 0.9)
        columns = 2 if eu > 0.8 else 1
        pu = eu / columns
        fu = np.mod(u, pu)
        _paint(img, (fu < 0.004) | (fu > pu - 0.004), c2, 0.9)
        knob = (fu - pu / 2) ** 2 + (fv - pitch * 0.75) ** 2 < 0.018 ** 2
        _paint(img, knob, (0.75, 0.72, 0.65))
    _spots(img, u, v, eu, ev, rng, int(2 * eu * ev) + 1, 0.005, 0.05, [c2, c1], (0.3, 0.8))
    _paint(img, _border(u, v, eu, ev, 0.01), c2 * 0.6)
    return img


def _books(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    img = np.broadcast_to(c2 * 0.5, u.shape + (3,)).copy()  # the dark inside of the shelf
    row_h = st.param("row", 0.35)
    n_rows = max(int(ev / row_h), 1)
    pitch = ev / n_rows
    fv = np.mod(v, pitch)
    row = np.floor(v / pitch)
    for r in range(n_rows):
        in_row = row == r
        edges, pos = [], 0.02
        while pos < eu - 0.02:
            pos += float(rng.uniform(0.02, 0.06)) if rng.random() > 0.08 else float(rng.uniform(0.1, 0.25))  # gaps
            edges.append(pos)
        edges = np.asarray(edges)
        idx = np.searchsorted(edges, u[in_row])
        n = len(edges) + 1
        heights = rng.uniform(0.55, 0.9, n) * pitch
        hues = rng.random(n)
        present = rng.random(n) > 0.12
        colours = np.array([colorsys.hsv_to_rgb(h, 0.35 + 0.5 * rng.random(), 0.25 + 0.6 * rng.random()) for h in hues],
                           np.float32)
        colours[::3] = _lerp(colours[::3], c0[None], np.full(len(colours[::3]), 0.6, np.float32))
        colours[1::4] = _lerp(colours[1::4], c1[None], np.full(len(colours[1::4]), 0.6, np.float32))
        book = present[idx] & (fv[in_row] < heights[idx]) & (fv[in_row] > 0.02)
        vals = img[in_row]
        vals[book] = colours[idx[book]]
        band = book & (np.abs(fv[in_row] - 0.7 * heights[idx]) < 0.008)  # a title band on each spine
        vals[band] = vals[band] * 0.4 + 0.55
        img[in_row] = vals
    _paint(img, fv < 0.02, c2)  # shelf boards
    _paint(img, _border(u, v, eu, ev, 0.02), c2)
    return img


def _concrete(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    img = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, fbm(u, v, st.seed, 1.5, 5))
    img = img * (0.85 + 0.3 * value_noise(u * 60, v * 60, st.seed + 1))[..., None]
    _spots(img, u, v, eu, ev, rng, int(12 * eu * ev) + 2, 0.004, 0.04, [c2, c1 * 0.6], (0.5, 1.0))
    for height in np.arange(0.5, ev, 1.0):  # formwork seams
        _paint(img, np.abs(v - height) < 0.004, c2, 0.6)
    return img


def _poster(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    img = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, fbm(u, v, st.seed, 2.0, 3) * 0.3)
    extra = [tuple(colorsys.hsv_to_rgb(rng.random(), 0.7, 0.4 + 0.6 * rng.random())) for _ in range(3)]
    palette = [c1, c2, *extra]
    for _ in range(int(rng.integers(4, 9))):
        if rng.random() < 0.5:
            _rects(img, u, v, eu, ev, rng, 1, 0.03, 0.3, palette)
        else:
            _spots(img, u, v, eu, ev, rng, 1, 0.03, 0.18, palette, (1.0, 1.0))
    period = float(rng.uniform(0.02, 0.05))  # a band of fine stripes: texture at the smallest scale
    v0 = float(rng.uniform(0.1, 0.5)) * ev
    _paint(img, (np.abs(v - v0) < 0.06 * ev) & (np.mod(u, period) < period / 2), c2)
    _paint(img, _border(u, v, eu, ev, 0.02), c2)
    return img


def _crate(u, v, eu, ev, st, rng):
    c0, c1, c2 = (_colour(c) for c in st.palette)
    slat = st.param("slat", 0.1)
    row = np.floor(v / slat)
    tone = hash01(row, row * 0 + 3, st.seed)
    grain = np.sin(2 * np.pi * (v * 40 + 2 * fbm(u, v, st.seed + 1, 1.0, 3)))
    img = _lerp(np.broadcast_to(c0, u.shape + (3,)), c1, np.clip(0.4 + 0.2 * grain + 0.4 * (tone - 0.5), 0, 1))
    _paint(img, (v / slat - row) * slat < 0.008, c2)
    # a stencilled mark in the middle of the face: sharp, and the same on every identical crate
    cu, cv, r = eu / 2, ev / 2, 0.3 * min(eu, ev)
    ring = np.abs(np.hypot(u - cu, v - cv) - r) < 0.012
    _paint(img, ring | ((np.abs(u - cu) < 0.01) & (np.abs(v - cv) < r)), c2, 0.9)
    _paint(img, _border(u, v, eu, ev, 0.03), c1 * 0.8)
    return img


_KIND_FUNCTIONS = {"plaster": _plaster, "tiles": _tiles, "planks": _planks, "ceiling": _ceiling, "wood": _wood,
                   "painted": _painted, "books": _books, "concrete": _concrete, "poster": _poster, "crate": _crate}


def albedo(style: SurfaceStyle, extent_u: float, extent_v: float, density: float) -> np.ndarray:
    """The face's sRGB albedo sampled at ``density`` texels per metre: float32 ``[h, w, 3]`` whose
    texel ``(i, j)`` covers face coordinates around ``((j + 0.5) / density, (i + 0.5) / density)``.
    Values are in [0, 1] except emissive ceiling panels (:data:`EMISSIVE`)."""
    w = max(int(np.ceil(extent_u * density)), 1)
    h = max(int(np.ceil(extent_v * density)), 1)
    u = ((np.arange(w, dtype=np.float32) + 0.5) / density)[None, :].repeat(h, 0)
    v = ((np.arange(h, dtype=np.float32) + 0.5) / density)[:, None].repeat(w, 1)
    # features placed by their own stream: the same for every density and every identical surface
    rng = np.random.default_rng([style.seed, 0xFEA7])
    img = _KIND_FUNCTIONS[style.kind](u, v, float(extent_u), float(extent_v), style, rng)
    return np.ascontiguousarray(np.clip(img, 0, EMISSIVE), dtype=np.float32)
