"""Pose conventions: quaternion <-> matrix <-> 4x4 <-> ROS order, and the error metrics."""
from __future__ import annotations

import math

import pytest
import torch

from jsla_fast.pose import (canonical_quaternion, matrix_to_pose, matrix_to_quaternion, pose_errors,
                            pose_to_matrix, quaternion_to_matrix, rotation_error_deg, translation_error,
                            wxyz_to_xyzw, xyzw_to_wxyz)


def approx(x):
    return pytest.approx(x, rel=1e-6, abs=1e-6)


def random_quaternions(n: int, g: torch.Generator) -> torch.Tensor:
    return canonical_quaternion(torch.randn(n, 4, generator=g, dtype=torch.float64))


def axis_angle(axis, deg: float) -> torch.Tensor:
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    half = math.radians(deg) / 2
    return torch.cat([torch.tensor([math.cos(half)], dtype=torch.float64), math.sin(half) * axis])


def test_matrix_quaternion_round_trip(seed):
    g = torch.Generator().manual_seed(seed)
    q = random_quaternions(1000, g)
    # include the hard cases: identity, 180 degree turns (w = 0) about each axis and a diagonal
    special = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0.6, 0.8, 0]],
                           dtype=torch.float64)
    q = torch.cat([q, special])
    r = quaternion_to_matrix(q)
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    torch.testing.assert_close(r @ r.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(len(q), dtype=torch.float64))
    q2 = matrix_to_quaternion(r)
    assert bool((q2[:, 0] >= 0).all())
    # q and -q are the same rotation; where w = 0 either sign is canonical
    same = torch.minimum((q2 - q).norm(dim=1), (q2 + q).norm(dim=1))
    assert same.max() < 1e-12
    torch.testing.assert_close(quaternion_to_matrix(q2), r, atol=1e-12, rtol=0)


def test_pose_matrix_round_trip_and_frame(seed):
    g = torch.Generator().manual_seed(seed)
    pose = torch.cat([torch.randn(50, 3, generator=g, dtype=torch.float64), random_quaternions(50, g)], 1)
    t = pose_to_matrix(pose)
    assert t.shape == (50, 4, 4)
    torch.testing.assert_close(t[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(50, 4))
    torch.testing.assert_close(matrix_to_pose(t), pose, atol=1e-12, rtol=0)
    # camera-to-world: the camera centre (origin of the camera frame) maps to the position
    origin = torch.tensor([0, 0, 0, 1.0], dtype=torch.float64)
    torch.testing.assert_close((t @ origin)[:, :3], pose[:, :3])


def test_ros_order_round_trip(seed):
    q = random_quaternions(20, torch.Generator().manual_seed(seed))
    ros = wxyz_to_xyzw(q)
    torch.testing.assert_close(ros[:, 3], q[:, 0])
    torch.testing.assert_close(ros[:, :3], q[:, 1:])
    assert torch.equal(xyzw_to_wxyz(ros), q)


def test_rotation_error_known_angles_and_sign_invariance(seed):
    q0 = axis_angle([0, 0, 1], 0)
    for deg in (0.001, 0.5, 10, 90, 179.9):
        q1 = axis_angle([1, 2, 3], deg)
        for a, b in ((q0, q1), (-q0, q1), (q0, -q1), (-q0, -q1)):
            assert float(rotation_error_deg(a, b)) == approx(deg)
    g = torch.Generator().manual_seed(seed)
    qa, qb = random_quaternions(200, g), random_quaternions(200, g)
    e = rotation_error_deg(qa, qb)
    torch.testing.assert_close(rotation_error_deg(-qa, qb), e)
    torch.testing.assert_close(rotation_error_deg(qa, -qb), e)
    acos_form = torch.rad2deg(2 * torch.acos((qa * qb).sum(1).abs().clamp(max=1)))
    torch.testing.assert_close(e, acos_form, atol=1e-6, rtol=0)
    # and it is the angle between the rotation matrices
    rel = quaternion_to_matrix(qa).transpose(1, 2) @ quaternion_to_matrix(qb)
    trace_form = torch.rad2deg(torch.acos(((rel.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)))
    torch.testing.assert_close(e, trace_form, atol=1e-5, rtol=0)


def test_translation_and_pose_errors():
    a = torch.tensor([[1.0, 2.0, 3.0, 1, 0, 0, 0]])
    b = torch.tensor([[4.0, 6.0, 3.0, 0, 0, 0, 1]])
    assert float(translation_error(a, b)) == approx(5.0)
    t, r = pose_errors(a, b)
    assert float(t) == approx(5.0) and float(r) == approx(180.0)

