"""Pinhole camera in the OpenCV / 7-Scenes convention.

Camera frame: x right, y down, z forward (the viewing direction). Poses are camera-to-world 4x4
matrices ``T`` with ``X_world = T @ [X_cam, 1]``: the rotation's columns are the camera axes in
world coordinates and the last column is the camera centre. Pixel ``(row r, column c)`` samples
the ray through image point ``(u, v) = (c, r)``: pixel centres sit at integer coordinates, so the
principal point ``(cx, cy) = (W / 2, H / 2)`` is the centre of pixel ``(H / 2, W / 2)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_HFOV_DEG = 65.0


@dataclass(frozen=True)
class Intrinsics:
    """Image size (pixels) and pinhole parameters (pixels)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> "Intrinsics":
        """Square pixels, principal point at the image centre, horizontal field of view ``hfov_deg``."""
        if width < 2 or height < 2:
            raise ValueError(f"image size must be at least 2x2 pixels, got {width}x{height}")
        if not 10.0 <= hfov_deg <= 150.0:
            raise ValueError(f"horizontal field of view must be in [10, 150] degrees, got {hfov_deg}")
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(int(width), int(height), f, f, width / 2.0, height / 2.0)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def rays(self) -> np.ndarray:
        """Camera-frame ray directions ``[H, W, 3]`` with z = 1, so a hit at ray parameter t lies
        at depth t along the optical axis."""
        c = (np.arange(self.width, dtype=np.float64) - self.cx) / self.fx
        r = (np.arange(self.height, dtype=np.float64) - self.cy) / self.fy
        out = np.ones((self.height, self.width, 3))
        out[..., 0] = c[None, :]
        out[..., 1] = r[:, None]
        return out

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points ``[..., 3]`` -> image points ``[..., 2]`` (u = column, v = row)."""
        z = points_cam[..., 2]
        return np.stack([self.fx * points_cam[..., 0] / z + self.cx, self.fy * points_cam[..., 1] / z + self.cy], -1)

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}


def look_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation for a camera looking along heading ``yaw`` (radians, from world +x
    towards +y), tilted up by ``pitch`` and rolled by ``roll`` about the viewing axis
    (positive turns the camera x axis towards its y axis); world z is up."""
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])  # level right-hand direction
    down = np.cross(forward, right)  # camera y = z x x keeps the frame right-handed
    cr, sr = math.cos(roll), math.sin(roll)
    x = cr * right + sr * down
    y = -sr * right + cr * down
    return np.stack([x, y, forward], 1)


def camera_to_world(position, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """4x4 camera-to-world pose from a camera centre (world metres) and look angles."""
    t = np.eye(4)
    t[:3, :3] = look_rotation(yaw, pitch, roll)
    t[:3, 3] = position
    return t


def check_pose(cam_to_world: np.ndarray) -> np.ndarray:
    """Validate a 4x4 rigid camera-to-world transform; return it as float64."""
    t = np.asarray(cam_to_world, np.float64)
    if t.shape != (4, 4):
        raise ValueError(f"cam_to_world must be a 4x4 matrix, got shape {t.shape}")
    r = t[:3, :3]
    if not (np.allclose(r @ r.T, np.eye(3), atol=1e-6) and np.linalg.det(r) > 0 and np.allclose(t[3], [0, 0, 0, 1])):
        raise ValueError("cam_to_world must be rigid: orthonormal rotation with det +1 and last row 0 0 0 1")
    return t
