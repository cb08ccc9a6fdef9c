"""The scene: a box-shaped room (world frame z up, floor at z = 0, walls at x = 0, x = W, y = 0,
y = D) furnished with axis-aligned boxes, and the seeded layout generator that furnishes it.

Surfaces are numbered ``surface_id = 6 * object + 2 * axis + side``: object 0 is the room shell
(its faces seen from inside), object ``k >= 1`` is ``boxes[k - 1]``; ``axis`` is the face normal's
axis (0 x, 1 y, 2 z) and ``side`` 0 is the face at the minimum coordinate, 1 the maximum.
Face-local texture coordinates ``(u, v)`` are the two other world axes in increasing order,
measured from the face's minimum corner, so ``v`` is height on every vertical face.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .rng import stream
from .textures import SurfaceStyle, random_style

log = logging.getLogger(__name__)

# the camera walks at heights in [CAMERA_Z_MIN, CAMERA_Z_MAX] and keeps CLEARANCE from everything
CAMERA_Z_MIN, CAMERA_Z_MAX = 1.2, 1.8
CLEARANCE = 0.3
# boxes lower than this never come within CLEARANCE of a camera, so the walker may pass over them
OBSTACLE_TOP = CAMERA_Z_MIN - CLEARANCE - 0.05
# the walker keeps this much clearance in the plan view (a little over CLEARANCE: a safety margin)
WALK_MARGIN = 0.35


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``lo <= p <= hi`` (metres) of furniture ``kind`` with one style per face
    (index ``2 * axis + side``)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    kind: str
    styles: tuple[SurfaceStyle, ...]

    def to_json(self) -> dict:
        return {"kind": self.kind, "lo": list(self.lo), "hi": list(self.hi),
                "faces": [s.to_json() for s in self.styles]}


@dataclass
class Scene:
    """A room of ``size = (W, D, H)`` metres with its ``boxes``; see the module doc for ids."""

    name: str
    seed: int
    size: tuple[float, float, float]
    room_styles: tuple[SurfaceStyle, ...]
    boxes: list[Box]
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.box_lo = np.array([b.lo for b in self.boxes], np.float64).reshape(-1, 3)
        self.box_hi = np.array([b.hi for b in self.boxes], np.float64).reshape(-1, 3)
        self.room_hi = np.array(self.size, np.float64)
        tall = self.box_hi[:, 2] > OBSTACLE_TOP
        self._obstacles = np.concatenate([self.box_lo[tall, :2], self.box_hi[tall, :2]], 1)

    @property
    def num_surfaces(self) -> int:
        return 6 * (1 + len(self.boxes))

    def object_bounds(self, obj: int) -> tuple[np.ndarray, np.ndarray]:
        if obj == 0:
            return np.zeros(3), self.room_hi.copy()
        return self.box_lo[obj - 1].copy(), self.box_hi[obj - 1].copy()

    def surface_plane(self, sid: int) -> tuple[int, float, np.ndarray]:
        """``(axis, coordinate, unit normal)`` of surface ``sid``; normals point into free space
        (into the room for the shell, out of the box for furniture)."""
        obj, face = divmod(int(sid), 6)
        axis, side = divmod(face, 2)
        lo, hi = self.object_bounds(obj)
        normal = np.zeros(3)
        normal[axis] = (1.0 if side else -1.0) * (-1.0 if obj == 0 else 1.0)
        return axis, float(hi[axis] if side else lo[axis]), normal

    def surface_rect(self, sid: int) -> tuple[np.ndarray, np.ndarray]:
        """Corners ``lo, hi`` of the face as a degenerate box (equal along the normal axis)."""
        obj, face = divmod(int(sid), 6)
        axis, side = divmod(face, 2)
        lo, hi = self.object_bounds(obj)
        if side:
            lo[axis] = hi[axis]
        else:
            hi[axis] = lo[axis]
        return lo, hi

    def surface_name(self, sid: int) -> str:
        obj, face = divmod(int(sid), 6)
        axis, side = divmod(face, 2)
        what = "room" if obj == 0 else f"box {obj - 1} ({self.boxes[obj - 1].kind})"
        return f"{what} {'-+'[side]}{'xyz'[axis]} face"

    def surface_tables(self) -> dict[str, np.ndarray]:
        """Per-surface arrays for vectorised shading: ``normal [S,3]``, ``origin [S,3]`` (face
        minimum corner), ``axis [S]``."""
        if "_tables" not in self._cache:
            normals, origins, axes = [], [], []
            for sid in range(self.num_surfaces):
                axis, _, n = self.surface_plane(sid)
                lo, _ = self.surface_rect(sid)
                normals.append(n)
                origins.append(lo)
                axes.append(axis)
            self._cache["_tables"] = {"normal": np.array(normals), "origin": np.array(origins),
                                        "axis": np.array(axes, np.int64)}
        return self._cache["_tables"]

    def atlas(self, density: float):
        """The scene's textures baked at ``density`` texels per metre (cached)."""
        from .atlas import TextureAtlas

        if density not in self._cache:
            faces = []
            for sid in range(self.num_surfaces):
                obj, face = divmod(sid, 6)
                axis, side = divmod(face, 2)
                lo, hi = self.surface_rect(sid)
                others = [a for a in range(3) if a != axis]
                extent = hi - lo
                style = self.room_styles[face] if obj == 0 else self.boxes[obj - 1].styles[face]
                coord = lo[axis]
                # a box face lying on the room shell and facing it is never visible
                hidden = obj > 0 and ((side == 0 and coord <= 1e-9) or (side == 1 and coord >= self.room_hi[axis] - 1e-9))
                faces.append((style, float(extent[others[0]]), float(extent[others[1]]), hidden))
            self._cache[density] = TextureAtlas.bake(faces, density)
        return self._cache[density]

    # --- free space ------------------------------------------------------------------------

    def obstacle_rects(self) -> np.ndarray:
        """Plan-view rectangles ``[N, 4]`` (x0, y0, x1, y1) of boxes tall enough to matter for a
        camera at walking height."""
        return self._obstacles.copy()

    def clearance(self, xy: np.ndarray) -> np.ndarray:
        """Plan-view distance from points ``[..., 2]`` to the nearest wall or tall box (0 inside
        a box)."""
        xy = np.asarray(xy, np.float64)
        x, y = xy[..., 0], xy[..., 1]
        d = np.minimum(np.minimum(x, self.size[0] - x), np.minimum(y, self.size[1] - y))
        if len(self._obstacles):
            x0, y0, x1, y1 = self._obstacles.T
            dx = np.maximum(np.maximum(x0 - x[..., None], x[..., None] - x1), 0)
            dy = np.maximum(np.maximum(y0 - y[..., None], y[..., None] - y1), 0)
            d = np.minimum(d, np.sqrt(dx * dx + dy * dy).min(-1))
        return d

    def distance_3d(self, p: np.ndarray) -> np.ndarray:
        """Euclidean distance from points ``[..., 3]`` to the nearest box or room face."""
        p = np.asarray(p, np.float64)
        d = np.minimum(p, self.room_hi - p).min(-1)
        for lo, hi in zip(self.box_lo, self.box_hi):
            gap = np.maximum(np.maximum(lo - p, p - hi), 0)
            d = np.minimum(d, np.linalg.norm(gap, axis=-1))
        return d

    def free_grid(self, margin: float, step: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Plan-view grid ``(xs, ys, free [len(ys), len(xs)])`` of cells with clearance >= margin."""
        xs = np.arange(step / 2, self.size[0], step)
        ys = np.arange(step / 2, self.size[1], step)
        gx, gy = np.meshgrid(xs, ys)
        return xs, ys, self.clearance(np.stack([gx, gy], -1)) >= margin

    def to_json(self) -> dict:
        return {"name": self.name, "seed": self.seed, "size": list(self.size),
                "room_faces": [s.to_json() for s in self.room_styles],
                "boxes": [b.to_json() for b in self.boxes]}


# ---------------------------------------------------------------------------------------------------
# layout generation


def _largest_component_fraction(free: np.ndarray) -> tuple[float, float]:
    """(free fraction of the plan, fraction of the free cells in the largest 4-connected part)."""
    total = int(free.sum())
    if total == 0:
        return 0.0, 0.0
    labels = np.zeros(free.shape, np.int32)
    best, current = 0, 0
    for start in zip(*np.nonzero(free)):
        if labels[start]:
            continue
        current += 1
        # flood fill by repeated dilation restricted to free cells: fast enough on a ~120x90 grid
        region = np.zeros_like(free)
        region[start] = True
        while True:
            grown = region.copy()
            grown[1:] |= region[:-1]
            grown[:-1] |= region[1:]
            grown[:, 1:] |= region[:, :-1]
            grown[:, :-1] |= region[:, 1:]
            grown &= free
            if grown.sum() == region.sum():
                break
            region = grown
        labels[region] = current
        best = max(best, int(region.sum()))
        if best * 2 > total:
            break
    return total / free.size, best / total


def _box(lo, hi, kind, styles) -> Box:
    return Box(tuple(round(float(x), 4) for x in lo), tuple(round(float(x), 4) for x in hi), kind, tuple(styles))


def _uniform_faces(style: SurfaceStyle) -> list[SurfaceStyle]:
    return [style] * 6


def _against_wall(rng, size, width, depth, wall: int) -> tuple[np.ndarray, np.ndarray]:
    """Plan rectangle of a piece ``width`` x ``depth`` standing against ``wall`` (0: x=0, 1: x=W,
    2: y=0, 3: y=D)."""
    w_room, d_room = size[0], size[1]
    along = w_room if wall >= 2 else d_room
    start = rng.uniform(0.0, max(along - width, 0.0))
    if wall == 0:
        return np.array([0.0, start]), np.array([depth, start + width])
    if wall == 1:
        return np.array([w_room - depth, start]), np.array([w_room, start + width])
    if wall == 2:
        return np.array([start, 0.0]), np.array([start + width, depth])
    return np.array([start, d_room - depth]), np.array([start + width, d_room])


def _overlaps(lo, hi, placed, gap: float) -> bool:
    for plo, phi in placed:
        if np.all(lo[:2] < phi[:2] + gap) and np.all(hi[:2] > plo[:2] - gap) and lo[2] < phi[2] and hi[2] > plo[2]:
            return True
    return False


def make_room(seed: int, name: str = "room", variety: float = 0.0) -> Scene:
    """A furnished room for ``seed``: about 6 x 4.5 x 2.8 m (``variety`` in [0, 1] widens the size
    ranges, for scene classes), 8-15 furniture pieces, two or three identical posters and crates.

    Every piece is checked against the others and the walkable area must stay large and connected,
    so trajectories can roam the whole room.
    """
    rng = stream(seed, "room", name)
    w = rng.uniform(5.5 - 1.0 * variety, 6.5 + 1.5 * variety)
    d = rng.uniform(4.0 - 0.8 * variety, 5.0 + 1.0 * variety)
    h = rng.uniform(2.6, 3.0 + 0.4 * variety)
    size = (round(float(w), 3), round(float(d), 3), round(float(h), 3))
    floor_kind = "tiles" if rng.random() < 0.5 else "planks"
    room_styles = [None] * 6
    room_styles[4] = random_style(floor_kind, rng)
    room_styles[5] = random_style("ceiling", rng)
    base_wall = random_style("plaster", rng)
    for face in range(4):
        # one wall paint per room, but every wall its own seed (and a small hue shift): walls differ
        own = random_style("plaster", rng)
        mix = 0.5 if rng.random() < 0.5 else 0.0
        palette = tuple(tuple(round((1 - mix) * a + mix * b, 6) for a, b in zip(ca, cb))
                        for ca, cb in zip(own.palette, base_wall.palette))
        room_styles[face] = SurfaceStyle("plaster", own.seed, palette, own.params)

    placed: list[tuple[np.ndarray, np.ndarray]] = []
    boxes: list[Box] = []

    def try_add(pieces: list[Box], blocks_walk: bool) -> bool:
        for b in pieces:
            if _overlaps(np.array(b.lo), np.array(b.hi), placed, 0.05):
                return False
        if blocks_walk:
            trial = Scene(name, seed, size, tuple(room_styles), boxes + pieces)
            _, _, free = trial.free_grid(WALK_MARGIN + 0.05, step=0.1)
            fraction, connected = _largest_component_fraction(free)
            if fraction < 0.3 or connected < 0.97:
                return False
        boxes.extend(pieces)
        placed.extend((np.array(b.lo), np.array(b.hi)) for b in pieces)
        return True

    target = int(rng.integers(8, 16))
    attempts = 0
    wood = random_style("wood", rng)
    n_items = 0
    while n_items < target and attempts < 200:
        attempts += 1
        roll = rng.random()
        wall = int(rng.integers(4))
        if roll < 0.22:  # tall cabinet with drawers/doors
            width, depth, height = rng.uniform(0.6, 1.6), rng.uniform(0.35, 0.6), rng.uniform(1.4, min(2.2, h - 0.2))
            lo2, hi2 = _against_wall(rng, size, width, depth, wall)
            front = random_style("painted", rng, vertical=1.0)
            top = random_style("painted", rng)
            styles = [front] * 4 + [top, top]
            ok = try_add([_box([*lo2, 0], [*hi2, height], "cabinet", styles)], True)
        elif roll < 0.40:  # bookshelf: books on the vertical faces
            width, depth, height = rng.uniform(0.7, 1.8), rng.uniform(0.3, 0.45), rng.uniform(1.5, min(2.3, h - 0.2))
            lo2, hi2 = _against_wall(rng, size, width, depth, wall)
            books = random_style("books", rng)
            side = random_style("wood", rng)
            axis_front = 0 if wall < 2 else 1
            styles = [side] * 6
            styles[2 * axis_front] = styles[2 * axis_front + 1] = books
            ok = try_add([_box([*lo2, 0], [*hi2, height], "bookshelf", styles)], True)
        elif roll < 0.55:  # low sideboard: the camera can look over it
            width, depth, height = rng.uniform(0.8, 2.0), rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.85)
            lo2, hi2 = _against_wall(rng, size, width, depth, wall)
            front = random_style("painted", rng, vertical=1.0)
            styles = [front] * 4 + [front, wood]
            ok = try_add([_box([*lo2, 0], [*hi2, height], "sideboard", styles)], False)
        elif roll < 0.75:  # table: top slab and four legs, away from the walls
            tw, td = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:
                tw, td = td, tw
            x0, y0 = rng.uniform(0.5, w - 0.5 - tw), rng.uniform(0.5, d - 0.5 - td)
            top_z, thick, leg = rng.uniform(0.72, 0.78), 0.04, 0.05
            pieces = [_box([x0, y0, top_z - thick], [x0 + tw, y0 + td, top_z], "table-top", _uniform_faces(wood))]
            for lx in (x0 + 0.04, x0 + tw - 0.04 - leg):
                for ly in (y0 + 0.04, y0 + td - 0.04 - leg):
                    pieces.append(_box([lx, ly, 0], [lx + leg, ly + leg, top_z - thick], "table-leg", _uniform_faces(wood)))
            ok = try_add(pieces, False)
        elif roll < 0.85:  # pillar, floor to ceiling
            s = rng.uniform(0.3, 0.45)
            x0, y0 = rng.uniform(1.0, w - 1.0 - s), rng.uniform(1.0, d - 1.0 - s)
            ok = try_add([_box([x0, y0, 0], [x0 + s, y0 + s, h], "pillar", _uniform_faces(random_style("concrete", rng)))], True)
        else:  # a unique crate or stool-height block
            s = rng.uniform(0.3, 0.6)
            x0, y0 = rng.uniform(0.3, w - 0.3 - s), rng.uniform(0.3, d - 0.3 - s)
            style = random_style("crate" if rng.random() < 0.5 else "painted", rng)
            ok = try_add([_box([x0, y0, 0], [x0 + s, y0 + s, s * rng.uniform(0.8, 1.2)], "block", _uniform_faces(style))], False)
        n_items += int(ok)

    # repeated structure: identical crates (same size and style) in different places
    crate_style = random_style("crate", rng)
    cs = float(rng.uniform(0.4, 0.55))
    ch = cs * float(rng.uniform(0.8, 1.1))
    n_crates, tries = int(rng.integers(2, 4)), 0
    while n_crates and tries < 100:
        tries += 1
        x0, y0 = rng.uniform(0.05, w - 0.05 - cs), rng.uniform(0.05, d - 0.05 - cs)
        n_crates -= try_add([_box([x0, y0, 0], [x0 + cs, y0 + cs, ch], "crate", _uniform_faces(crate_style))], False)

    # posters: two or three identical ones, plus one or two unique pictures
    def add_poster(style: SurfaceStyle, pw: float, ph: float) -> bool:
        wall = int(rng.integers(4))
        z0 = rng.uniform(1.0, min(2.0, h - 0.3 - ph))
        lo2, hi2 = _against_wall(rng, size, pw, 0.015, wall)
        frame = SurfaceStyle("painted", style.seed ^ 0x5A5A, (style.palette[2],) * 3)
        axis_front = 0 if wall < 2 else 1
        styles = [frame] * 6
        styles[2 * axis_front] = styles[2 * axis_front + 1] = style
        return try_add([_box([*lo2, z0], [*hi2, z0 + ph], "poster", styles)], False)

    poster = random_style("poster", rng)
    pw, ph = float(rng.uniform(0.4, 0.8)), float(rng.uniform(0.5, 0.9))
    n_posters, tries = int(rng.integers(2, 4)), 0
    while n_posters and tries < 100:
        tries += 1
        n_posters -= add_poster(poster, pw, ph)
    for _ in range(int(rng.integers(1, 3))):
        for _ in range(50):
            if add_poster(random_style("poster", rng), float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.3, 0.8))):
                break

    scene = Scene(name, seed, size, tuple(room_styles), boxes)
    log.debug("room %s (seed %d): %.2f x %.2f x %.2f m, %d boxes", name, seed, *size, len(boxes))
    return scene
