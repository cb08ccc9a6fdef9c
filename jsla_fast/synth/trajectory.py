"""Camera paths: smooth hand-held walks through a room's free space, and random viewpoints.

A walk is simulated at a fine time step: the walker heads for random goals in free space with
inertia (smooth positions), a wandering component and a push away from nearby walls and tall
furniture; a step that would come closer than :data:`~.room.WALK_MARGIN` slides along the
obstacle instead. The gaze turns with a smooth random angular velocity (so yaw sweeps widely) and
is steered away from walls it is about to stare into; height, pitch and roll are low-pass filtered
noise squashed into their ranges. Frames are then sampled evenly along the simulated time.

A walk given a :class:`ViewArea` records like 7-Scenes: it stays in the area's plan rectangle and
looks along the area's heading within +- its spread, so several walks cover the same positions
and viewing directions densely (a test walk then passes through views the training walks saw).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera import camera_to_world
from .room import CAMERA_Z_MAX, CAMERA_Z_MIN, WALK_MARGIN, Scene

DT = 0.05  # simulation step, seconds
SPEED = 0.4  # walking speed, m/s
DURATION = 60.0  # seconds per sequence: about 24 m of walking, enough to cover a room


def smooth_noise(rng: np.random.Generator, n: int, tau: float) -> np.ndarray:
    """Unit-variance noise with correlation time ``tau`` seconds: white noise low-pass filtered
    twice (so its derivative is continuous too), ``n`` samples ``DT`` apart."""
    taps = int(5 * tau / DT) + 1
    kernel = np.exp(-np.arange(taps) * DT / tau)  # a first-order low-pass, truncated at 5 tau
    x = rng.standard_normal(n + 2 * taps)
    for _ in range(2):
        x = np.convolve(x, kernel / kernel.sum(), mode="valid")
    x = x[-n:]
    return x / max(float(x.std()), 1e-9)


@dataclass(frozen=True)
class ViewArea:
    """Where a recording happens: plan rectangle ``lo``..``hi`` (metres) and the viewing
    directions ``heading`` +- ``spread`` (radians, from world +x towards +y)."""

    lo: tuple[float, float]
    hi: tuple[float, float]
    heading: float
    spread: float

    def to_json(self) -> dict:
        return {"lo": list(self.lo), "hi": list(self.hi), "heading_deg": round(math.degrees(self.heading), 3),
                "spread_deg": round(math.degrees(self.spread), 3)}


def recording_area(scene: Scene, depth: float = 2.0, spread_deg: float = 60.0) -> ViewArea:
    """A strip ``depth`` metres deep across one short end of the room, looking down its long axis
    (x): the end with more free floor. Views from there see most of the room's furniture."""
    w, d = scene.size[:2]
    y = (WALK_MARGIN, d - WALK_MARGIN)
    ends = [((WALK_MARGIN, y[0]), (WALK_MARGIN + depth, y[1]), 0.0),
            ((w - WALK_MARGIN - depth, y[0]), (w - WALK_MARGIN, y[1]), math.pi)]

    def free(lo, hi) -> float:
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 24), np.linspace(lo[1], hi[1], 24))
        return float((scene.clearance(np.stack([gx, gy], -1)) >= WALK_MARGIN + 0.1).mean())

    lo, hi, heading = max(ends, key=lambda e: free(e[0], e[1]))
    return ViewArea(tuple(round(v, 3) for v in lo), tuple(round(v, 3) for v in hi), heading, math.radians(spread_deg))


def random_free_point(scene: Scene, rng: np.random.Generator, margin: float,
                      area: ViewArea | None = None) -> np.ndarray:
    """A uniformly drawn plan position with clearance >= ``margin`` (rejection sampling), inside
    ``area`` when given."""
    lo, hi = (area.lo, area.hi) if area is not None else ((0, 0), scene.size[:2])
    for _ in range(10000):
        p = rng.uniform(lo, hi)
        if scene.clearance(p) >= margin:
            return p
    where = f"area {area.lo}..{area.hi} of room" if area is not None else "room"
    raise RuntimeError(f"{where} {scene.name!r} has no free floor with clearance {margin} m; "
                       "the layout is too crowded (try another seed)")


def _view_free_distance(scene: Scene, p: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Plan-view distance from ``p`` along headings ``yaw [K]`` to the first wall or tall box."""
    d = np.stack([np.cos(yaw), np.sin(yaw)], -1)
    inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
    t = np.maximum(-p * inv, (np.asarray(scene.size[:2]) - p) * inv).min(-1)
    rects = scene.obstacle_rects()
    if len(rects):
        ta = (rects[None, :, :2] - p) * inv[:, None]  # [K, N, 2]
        tb = (rects[None, :, 2:] - p) * inv[:, None]
        tn = np.minimum(ta, tb).max(-1)
        tf = np.maximum(ta, tb).min(-1)
        hit = (tn <= tf) & (tn > 0)
        t = np.minimum(t, np.where(hit, tn, np.inf).min(-1))
    return t


def _gradient(scene: Scene, p: np.ndarray, h: float = 0.02) -> np.ndarray:
    offsets = np.array([[h, 0], [-h, 0], [0, h], [0, -h]])
    c = scene.clearance(p + offsets)
    g = np.array([c[0] - c[1], c[2] - c[3]]) / (2 * h)
    n = np.linalg.norm(g)
    return g / n if n > 1e-9 else g


def walk(scene: Scene, rng: np.random.Generator, frames: int, duration: float = DURATION,
         area: ViewArea | None = None) -> list[np.ndarray]:
    """``frames`` camera-to-world poses sampled evenly along a ``duration``-second hand-held walk
    (inside ``area``, looking along its heading, when given)."""
    if frames < 1:
        raise ValueError(f"a walk needs at least one frame, got {frames}")
    n = int(round(duration / DT)) + 1
    wander = np.stack([smooth_noise(rng, n, 1.5), smooth_noise(rng, n, 1.5)], -1)
    turn = smooth_noise(rng, n, 1.2)
    height = smooth_noise(rng, n, 3.0)
    pitch_n = smooth_noise(rng, n, 2.5)
    roll_n = smooth_noise(rng, n, 2.0)

    p = random_free_point(scene, rng, WALK_MARGIN + 0.1, area)
    goal = random_free_point(scene, rng, WALK_MARGIN + 0.1, area)
    goal_time = 0.0
    v = np.zeros(2)
    yaw = float(rng.uniform(-math.pi, math.pi))
    omega = 0.0
    xy, yaws = np.empty((n, 2)), np.empty(n)
    for i in range(n):
        xy[i], yaws[i] = p, yaw
        if np.linalg.norm(goal - p) < 0.4 or (i * DT - goal_time) > 20.0:
            goal, goal_time = random_free_point(scene, rng, WALK_MARGIN + 0.1, area), i * DT
        to_goal = goal - p
        desired = SPEED * to_goal / max(np.linalg.norm(to_goal), 1e-9) + 0.15 * wander[i]
        clearance = float(scene.clearance(p))
        if clearance < 0.6:  # soft push away from walls and tall furniture
            desired = desired + 0.4 * (0.6 - clearance) / 0.6 * _gradient(scene, p)
        if area is not None:  # and back into the area when the wander carried it out
            desired = desired + 0.8 * (np.clip(p, area.lo, area.hi) - p)
        v = v + (desired - v) * (DT / 0.8)  # inertia: a body, not a point, carries the camera
        step = p + v * DT
        if scene.clearance(step) < WALK_MARGIN:
            g = _gradient(scene, p)
            v = v - min(float(v @ g), 0.0) * g  # slide along the obstacle
            step = p + v * DT
            if scene.clearance(step) < WALK_MARGIN:
                v, step = np.zeros(2), p
        p = step
        if area is not None:  # gaze: within the area's directions (set after the loop)
            continue
        # gaze: a random angular velocity, plus a turn away from a wall close ahead
        ahead = _view_free_distance(scene, p, yaw + np.radians([0.0, -50.0, 50.0]))
        steer = 0.0
        if ahead[0] < 1.5:
            steer = (1.5 - ahead[0]) * (1.0 if ahead[2] > ahead[1] else -1.0)
        omega += ((math.radians(40) * turn[i] + 1.5 * steer) - omega) * (DT / 0.5)
        yaw += omega * DT

    if area is not None:
        yaws = area.heading + area.spread * np.tanh(0.8 * turn)
    z = 0.5 * (CAMERA_Z_MIN + CAMERA_Z_MAX) + 0.5 * (CAMERA_Z_MAX - CAMERA_Z_MIN) * np.tanh(0.6 * height)
    pitch = np.radians(-5.0 + 18.0 * np.tanh(0.5 * pitch_n))
    roll = np.radians(6.0 * np.tanh(0.5 * roll_n))
    times = (np.arange(frames) + 0.5) * (n - 1) / frames
    sim = np.arange(n)
    pos = np.stack([np.interp(times, sim, xy[:, 0]), np.interp(times, sim, xy[:, 1]), np.interp(times, sim, z)], -1)
    yaw_f, pitch_f, roll_f = (np.interp(times, sim, a) for a in (yaws, pitch, roll))
    return [camera_to_world(pos[k], yaw_f[k], pitch_f[k], roll_f[k]) for k in range(frames)]


def random_viewpoints(scene: Scene, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` independent poses: free position, small pitch and roll, and a heading drawn
    uniformly among those that see at least 2 m of open floor (like a person taking a photo;
    any heading if none does)."""
    poses = []
    for _ in range(count):
        xy = random_free_point(scene, rng, WALK_MARGIN)
        z = rng.uniform(CAMERA_Z_MIN, CAMERA_Z_MAX)
        pitch = math.radians(float(np.clip(rng.normal(-5.0, 8.0), -25, 20)))
        roll = math.radians(float(np.clip(rng.normal(0.0, 3.0), -8, 8)))
        headings = rng.uniform(-math.pi, math.pi, 8)
        open_view = np.nonzero(_view_free_distance(scene, xy, headings) >= 2.0)[0]
        yaw = headings[open_view[0]] if len(open_view) else headings[0]
        poses.append(camera_to_world([xy[0], xy[1], z], yaw, pitch, roll))
    return poses
