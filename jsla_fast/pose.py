"""Pose conventions (docs/DESIGN.md, "Conventions"): camera-to-world, metres, quaternions (w, x, y, z) unit with w >= 0.

ROS messages order quaternions (x, y, z, w): convert with :func:`wxyz_to_xyzw` /
:func:`xyzw_to_wxyz`, never by hand. All functions take torch tensors with any leading batch
dimensions and work in the input's dtype.
"""
from __future__ import annotations


import torch


def canonical_quaternion(q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Normalise ``q [...,4]`` (w,x,y,z) to unit length and flip its sign so that w >= 0."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.where(q[..., :1] < 0, -q, q)


def wxyz_to_xyzw(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q[..., 1:], q[..., :1]], dim=-1)


def xyzw_to_wxyz(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q[..., 3:], q[..., :3]], dim=-1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(w,x,y,z) ``[...,4]`` (normalised here) -> rotation matrix ``[...,3,3]``."""
    w, x, y, z = canonical_quaternion(q).unbind(-1)
    r = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return r.view(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(r: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``[...,3,3]`` -> unit (w,x,y,z) with w >= 0.

    Shepperd's method: of the four algebraically equal solutions, use the one whose divisor
    (2|w|, 2|x|, 2|y| or 2|z|) is largest, so no division is ill-conditioned.
    """
    m = r.reshape(*r.shape[:-2], 9).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    two_abs = torch.sqrt(torch.stack([
        1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22,
    ], dim=-1).clamp_min(0))  # 2|w|, 2|x|, 2|y|, 2|z|
    cand = torch.stack([
        torch.stack([two_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, two_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, two_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, two_abs[..., 3] ** 2], dim=-1),
    ], dim=-2) / (2 * two_abs.clamp_min(0.1)).unsqueeze(-1)
    best = two_abs.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return canonical_quaternion(q)


def pose_to_matrix(pose: torch.Tensor) -> torch.Tensor:
    """``[...,7]`` (x,y,z,qw,qx,qy,qz) -> 4x4 camera-to-world ``[...,4,4]``."""
    t = torch.zeros(*pose.shape[:-1], 4, 4, dtype=pose.dtype, device=pose.device)
    t[..., :3, :3] = quaternion_to_matrix(pose[..., 3:])
    t[..., :3, 3] = pose[..., :3]
    t[..., 3, 3] = 1
    return t


def matrix_to_pose(t: torch.Tensor) -> torch.Tensor:
    """4x4 camera-to-world ``[...,4,4]`` -> ``[...,7]`` (x,y,z,qw,qx,qy,qz), w >= 0."""
    return torch.cat([t[..., :3, 3], matrix_to_quaternion(t[..., :3, :3])], dim=-1)


def translation_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between positions ``[...,3]`` (or the first 3 entries of poses)."""
    return (pred[..., :3] - target[..., :3]).norm(dim=-1)


def rotation_error_deg(q_pred: torch.Tensor, q_true: torch.Tensor) -> torch.Tensor:
    """Angle of the relative rotation in degrees, ``2 acos(|<q, q^>|)``, invariant to the sign of
    either quaternion. Computed as ``2 atan2(|v|, |w|)`` of the relative quaternion, which equals
    the acos form but keeps full precision for small angles."""
    a, b = canonical_quaternion(q_pred), canonical_quaternion(q_true)
    w = (a * b).sum(-1)  # scalar part of conj(a) * b
    v = a[..., :1] * b[..., 1:] - b[..., :1] * a[..., 1:] - torch.linalg.cross(a[..., 1:], b[..., 1:], dim=-1)
    return torch.rad2deg(2 * torch.atan2(v.norm(dim=-1), w.abs()))


def rotation_error_vector(q_pred: torch.Tensor, q_true: torch.Tensor) -> torch.Tensor:
    """``[B,3]``: the rotation from the true to the predicted orientation as ``2 vec(q_true^-1 q^)``
    (q^ the normalised prediction, sign chosen so w >= 0): the rotation vector, in radians, to
    first order (2 sin(theta/2) times the axis), smooth everywhere, per axis of the camera frame."""
    q = q_pred / q_pred.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w1, v1 = q_true[:, :1], -q_true[:, 1:]  # the inverse of a unit quaternion
    w2, v2 = q[:, :1], q[:, 1:]
    w = w1 * w2 - (v1 * v2).sum(1, keepdim=True)
    v = w1 * v2 + w2 * v1 + torch.cross(v1, v2, dim=1)
    return 2 * torch.where(w < 0, -v, v)


def pose_errors(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (translation error in metres, rotation error in degrees) for poses ``[...,7]``."""
    return translation_error(pred, target), rotation_error_deg(pred[..., 3:], target[..., 3:])


