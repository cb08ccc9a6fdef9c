"""Vectorised ray casting against the room shell and its boxes (slab test).

Primary rays share the camera centre, so each box is only tested against the pixels inside its
projected bounding rectangle; that cull makes a frame cost roughly one full-image pass instead of
one per box. Shadow rays share a direction and are culled the same way in the plane perpendicular
to the light. Arrays are kept one per axis (structure of arrays): numpy reduces over a trailing
axis of length 3 an order of magnitude slower than it combines three planes elementwise.
"""
from __future__ import annotations

import numpy as np

from .camera import Intrinsics
from .room import Scene

_TINY = 1e-12
_EPS = 1e-9
_CORNERS = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], bool)


def _safe_inverse(d: np.ndarray) -> np.ndarray:
    # a zero direction component would give inf * 0 = nan in the slab test; a tiny one gives +-huge
    return 1.0 / np.where(np.abs(d) < _TINY, np.where(d < 0, -_TINY, _TINY), d)


def _slab(origin, inv, lo, hi):
    """Slab test of rays ``origin + t d`` (``inv``: three arrays 1/d; ``origin``: three scalars or
    arrays) against box ``lo..hi``: entry ``tn``, exit ``tf`` and the per-axis entry times."""
    tmins = []
    tf = None
    for a in range(3):
        ta = (lo[a] - origin[a]) * inv[a]
        tb = (hi[a] - origin[a]) * inv[a]
        tmins.append(np.minimum(ta, tb))
        tmax = np.maximum(ta, tb)
        tf = tmax if tf is None else np.minimum(tf, tmax)
    tn = np.maximum(np.maximum(tmins[0], tmins[1]), tmins[2])
    return tn, tf, tmins


def _entry_axis(tmins) -> np.ndarray:
    """Axis whose slab the ray entered last: the face it entered through (ties -> lower axis)."""
    x, y, z = tmins
    return np.where((x >= y) & (x >= z), 0, np.where(y >= z, 1, 2))


def cast_camera_rays(scene: Scene, cam_to_world: np.ndarray, intrinsics: Intrinsics):
    """First hit of every pixel's ray: ``(t [H,W], surface_id [H,W] int32, dirs [H,W,3])`` where
    ``dirs`` are world ray directions whose camera-frame z is 1, so ``t`` is the depth."""
    r, c = cam_to_world[:3, :3], cam_to_world[:3, 3]
    if np.any(c <= 0) or np.any(c >= scene.room_hi):
        raise ValueError(f"camera centre {c.round(3).tolist()} is outside the room (0,0,0)-{scene.room_hi.tolist()}; "
                         "poses must place the camera inside the room")
    rays = intrinsics.rays()
    # world directions axis by axis (elementwise, no BLAS threads inside worker processes)
    d = [r[a, 0] * rays[..., 0] + r[a, 1] * rays[..., 1] + r[a, 2] for a in range(3)]
    inv = [_safe_inverse(x) for x in d]
    # room shell from inside: each ray leaves through the wall/floor/ceiling it reaches first
    t_exit = [np.where(d[a] > 0, scene.room_hi[a] - c[a], -c[a]) * inv[a] for a in range(3)]
    t = np.minimum(np.minimum(t_exit[0], t_exit[1]), t_exit[2])
    axis = np.where(t_exit[0] == t, 0, np.where(t_exit[1] == t, 1, 2))
    side = np.choose(axis, [d[0] > 0, d[1] > 0, d[2] > 0])
    sid = (2 * axis + side).astype(np.int32)

    h, w = intrinsics.height, intrinsics.width
    for k in range(len(scene.boxes)):
        lo, hi = scene.box_lo[k], scene.box_hi[k]
        pc = (np.where(_CORNERS, hi, lo) - c) @ r  # camera-frame corners
        if np.all(pc[:, 2] <= 0):
            continue  # wholly behind the camera: no forward ray can reach it
        if np.all(pc[:, 2] > 1e-6):
            uv = intrinsics.project(pc)
            c0 = max(int(np.floor(uv[:, 0].min())) - 1, 0)
            c1 = min(int(np.ceil(uv[:, 0].max())) + 2, w)
            r0 = max(int(np.floor(uv[:, 1].min())) - 1, 0)
            r1 = min(int(np.ceil(uv[:, 1].max())) + 2, h)
            if c0 >= c1 or r0 >= r1:
                continue
        else:  # straddles the camera plane: its projection is unbounded, test everything
            r0, r1, c0, c1 = 0, h, 0, w
        block = (slice(r0, r1), slice(c0, c1))
        tn, tf, tmins = _slab(c, [x[block] for x in inv], lo, hi)
        t_block = t[block]
        hit = (tn <= tf) & (tn > _EPS) & (tn < t_block)
        if not hit.any():
            continue
        face_axis = _entry_axis([m[hit] for m in tmins])
        d_axis = np.choose(face_axis, [x[block][hit] for x in d])
        t_block[hit] = tn[hit]
        # entering through the min face when moving towards +axis
        sid[block][hit] = 6 * (k + 1) + 2 * face_axis + (d_axis < 0)
    return t, sid, np.stack(d, -1)


def shadowed(scene: Scene, points: np.ndarray, to_light: np.ndarray) -> np.ndarray:
    """Whether each point ``[P, 3]`` (already lifted off its surface) sees a box between itself and
    a directional light in direction ``to_light`` (unit). The room shell does not occlude: the
    light stands for sun through a skylight, not a lamp outside the walls."""
    out = np.zeros(len(points), bool)
    if len(points) == 0 or len(scene.boxes) == 0:
        return out
    # plane perpendicular to the light: a box can only shade points inside its projected rectangle
    e1 = np.cross(to_light, [0.0, 0.0, 1.0] if abs(to_light[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(to_light, e1)
    basis = np.stack([e1, e2, to_light], 1)
    proj = [np.ascontiguousarray(x) for x in (points @ basis).T]
    pts = [np.ascontiguousarray(x) for x in points.T]
    inv = _safe_inverse(np.asarray(to_light, np.float64))
    for lo, hi in zip(scene.box_lo, scene.box_hi):
        pc = np.where(_CORNERS, hi, lo) @ basis
        lo_p, hi_p = pc.min(0), pc.max(0)
        cand = ((proj[0] >= lo_p[0]) & (proj[0] <= hi_p[0]) & (proj[1] >= lo_p[1]) & (proj[1] <= hi_p[1])
                & (proj[2] < hi_p[2]))
        idx = np.nonzero(cand)[0]
        if len(idx) == 0:
            continue
        tn, tf, _ = _slab([x[idx] for x in pts], inv, lo, hi)
        out[idx[(tn <= tf) & (tf > _EPS)]] = True
    return out
