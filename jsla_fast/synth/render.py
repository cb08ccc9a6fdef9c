"""Rendering one frame: ray cast, texture lookup, Lambertian shading with shadows, a simple camera
response (exposure, vignetting, gamma, sensor noise)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from .atlas import texel_density
from .camera import Intrinsics, check_pose
from .raycast import cast_camera_rays, shadowed
from .room import Scene

# light also reaches faces turned away from the sun, bounced off the floor and walls
BOUNCE = 0.25
VIGNETTE = 0.25  # relative darkening at the image corners


@dataclass(frozen=True)
class Lighting:
    """A directional light plus ambient light, in linear units.

    ``direction``: where the light travels (world, normalised on use; mostly downwards);
    ``colour``: its RGB tint; ``intensity``/``ambient``: directional and ambient strength;
    ``gain``: camera exposure, the per-frame flicker knob.
    """

    direction: tuple[float, float, float] = (0.35, 0.25, -0.9)
    colour: tuple[float, float, float] = (1.0, 0.97, 0.92)
    intensity: float = 0.9
    ambient: float = 0.35
    gain: float = 1.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Lighting":
        """A different light for a new sequence: direction, warm/cool tint and strength vary."""
        azimuth = rng.uniform(0, 2 * math.pi)
        elevation = rng.uniform(math.radians(35), math.radians(75))
        direction = (-math.cos(elevation) * math.cos(azimuth), -math.cos(elevation) * math.sin(azimuth), -math.sin(elevation))
        warmth = rng.uniform(-1, 1)
        colour = (1.0 + 0.08 * warmth, 1.0, 1.0 - 0.12 * warmth)
        return cls(tuple(round(x, 6) for x in direction), tuple(round(x, 6) for x in colour),
                   round(float(rng.uniform(0.6, 1.2)), 6), round(float(rng.uniform(0.2, 0.45)), 6), 1.0)

    def with_gain(self, gain: float) -> "Lighting":
        return replace(self, gain=float(gain))

    def to_json(self) -> dict:
        return {"direction": list(self.direction), "colour": list(self.colour), "intensity": self.intensity,
                "ambient": self.ambient, "gain": self.gain}


class Rendering(NamedTuple):
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32, metres along the optical axis
    surface_id: np.ndarray  # [H, W] int32, see room.py


def _vignette(intr: Intrinsics) -> np.ndarray:
    rays = intr.rays()
    r2 = rays[..., 0] ** 2 + rays[..., 1] ** 2
    return (1.0 - VIGNETTE * r2 / r2.max()).astype(np.float32)


def render(scene: Scene, cam_to_world: np.ndarray, intrinsics: Intrinsics, lighting: Lighting | None = None, *,
           shadows: bool = True, noise_std: float = 0.0, rng: np.random.Generator | None = None) -> Rendering:
    """Render ``scene`` from camera-to-world pose ``cam_to_world`` (4x4, OpenCV camera axes).

    Returns ``(rgb uint8 [H,W,3], depth float32 [H,W], surface_id int32 [H,W])``: depth is the
    distance along the optical axis (camera z) of the surface each pixel centre sees.
    ``noise_std`` adds Gaussian sensor noise (in 0..255 units) drawn from ``rng``.
    """
    t_pose = check_pose(cam_to_world)
    lighting = lighting or Lighting()
    t, sid, dirs = cast_camera_rays(scene, t_pose, intrinsics)
    h, w = t.shape
    flat_sid = sid.reshape(-1)
    flat_t = t.reshape(-1)
    flat_dirs = dirs.reshape(-1, 3)
    points = t_pose[:3, 3] + flat_t[:, None] * flat_dirs

    tables = scene.surface_tables()
    normal = tables["normal"][flat_sid]
    axis = tables["axis"][flat_sid]
    local = points - tables["origin"][flat_sid]
    # face coordinates: the two non-normal axes in increasing order
    u_axis = np.where(axis == 0, 1, 0)
    v_axis = np.where(axis == 2, 1, 2)
    rows = np.arange(len(local))
    u = local[rows, u_axis]
    v = local[rows, v_axis]
    # pixel footprint on the surface: depth / f, stretched by the grazing angle (capped)
    ray_len = np.linalg.norm(flat_dirs, axis=1)
    cos = np.abs(np.einsum("ij,ij->i", normal, flat_dirs)) / ray_len
    footprint = flat_t * ray_len / intrinsics.fx / np.maximum(cos, 0.3)
    atlas = scene.atlas(texel_density(intrinsics.fx))
    albedo = atlas.sample(flat_sid, u, v, footprint)

    to_light = -np.asarray(lighting.direction, np.float64)
    to_light /= np.linalg.norm(to_light)
    n_dot_l = normal @ to_light
    direct = np.maximum(n_dot_l, 0.0)
    if shadows:
        lit = np.nonzero(direct > 0)[0]
        blocked = shadowed(scene, points[lit] + 1e-4 * normal[lit], to_light)
        direct[lit[blocked]] = 0.0
    shade = lighting.ambient + lighting.intensity * direct + BOUNCE * lighting.intensity * np.maximum(-n_dot_l, 0.0)
    radiance = albedo * (shade.astype(np.float32)[:, None] * np.asarray(lighting.colour, np.float32))
    radiance = radiance.reshape(h, w, 3) * (lighting.gain * _vignette(intrinsics))[..., None]
    srgb = np.power(np.clip(radiance, 0.0, 1.0), 1 / 2.2) * 255.0
    if noise_std > 0:
        if rng is None:
            raise ValueError("noise_std > 0 needs an rng (numpy Generator) so the noise is reproducible")
        srgb = srgb + rng.normal(0.0, noise_std, srgb.shape).astype(np.float32)
    rgb = np.clip(np.rint(srgb), 0, 255).astype(np.uint8)
    return Rendering(rgb, t.astype(np.float32), sid)
