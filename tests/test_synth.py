"""Synthetic scene generator (jsla_fast.synth): layout of the written datasets, determinism, and
that poses, depth and pixels agree with the scene geometry.

Geometry is checked against an independent, one-ray-at-a-time caster written here, not against
the renderer's own vectorised code. Seeds are fixed: the generator itself is what is seeded.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jsla_fast.pose import matrix_to_quaternion, quaternion_to_matrix
from jsla_fast.synth import (Intrinsics, Lighting, camera_to_world, generate_pose_scene, generate_scene_classes,
                             look_rotation, make_room, random_viewpoints, read_pose, render, walk)
from jsla_fast.synth.files import prepare_output
from jsla_fast.synth.rng import stream

SIZE = (64, 48)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def room():
    return make_room(5)


@pytest.fixture(scope="module")
def pose_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scene"
    generate_pose_scene(out, seed=3, train=5, test=3, size=SIZE, workers=1, progress=False)
    return out


# ------------------------------------------------------------------------------------------------
# an independent reference: one ray at a time, plain Python


def cast_one(scene, origin, direction):
    """(t, surface id) of the first hit of ``origin + t * direction``."""
    best_t, best_sid = math.inf, -1
    for axis in range(3):  # room shell, from inside
        d = direction[axis]
        if abs(d) < 1e-15:
            continue
        side = 1 if d > 0 else 0
        t = ((scene.size[axis] if side else 0.0) - origin[axis]) / d
        if 0 < t < best_t:
            best_t, best_sid = t, 2 * axis + side
    for k, box in enumerate(scene.boxes):
        t_in, t_out, entry = -math.inf, math.inf, None
        for axis in range(3):
            d = direction[axis]
            if abs(d) < 1e-15:
                if not box.lo[axis] <= origin[axis] <= box.hi[axis]:
                    t_in = math.inf
                continue
            t0, t1 = (box.lo[axis] - origin[axis]) / d, (box.hi[axis] - origin[axis]) / d
            near_side = 0 if d > 0 else 1
            if t0 > t1:
                t0, t1 = t1, t0
            if t0 > t_in:
                t_in, entry = t0, 2 * axis + near_side
            t_out = min(t_out, t1)
        if entry is not None and 0 < t_in <= t_out and t_in < best_t:
            best_t, best_sid = t_in, 6 * (k + 1) + entry
    return best_t, best_sid


def unproject(pose, intr, row, col, depth):
    ray = np.array([(col - intr.cx) / intr.fx, (row - intr.cy) / intr.fy, 1.0])
    return pose[:3, 3] + pose[:3, :3] @ ray * depth, pose[:3, :3] @ ray


# ------------------------------------------------------------------------------------------------
# the 7-Scenes layout


def test_pose_layout(pose_dataset):
    out = pose_dataset
    meta = json.loads((out / "scene.json").read_text())
    assert meta["generator"] == "jsla_fast.synth" and meta["task"] == "pose" and meta["seed"] == 3
    assert meta["image_size"] == {"width": SIZE[0], "height": SIZE[1]}
    intr = meta["intrinsics"]
    assert intr["cx"] == SIZE[0] / 2 and intr["cy"] == SIZE[1] / 2 and intr["fx"] == intr["fy"] > 0
    assert "y down" in meta["camera_convention"] and "camera-to-world" in meta["camera_convention"]
    assert len(meta["room"]["boxes"]) >= 8
    seqs = meta["sequences"]
    assert [k for k, v in seqs.items() if v["split"] == "train"] == ["seq-01", "seq-02", "seq-03"]
    assert [k for k, v in seqs.items() if v["split"] == "test"] == ["seq-04", "seq-05"]
    assert (out / "TrainSplit.txt").read_text().split() == ["sequence1", "sequence2", "sequence3"]
    assert (out / "TestSplit.txt").read_text().split() == ["sequence4", "sequence5"]
    assert sum(v["frames"] for v in seqs.values()) == 8
    assert [v["frames"] for v in seqs.values()] == [2, 2, 1, 2, 1]  # frames split evenly
    for name, info in seqs.items():
        frames = sorted((out / name).iterdir())
        assert [p.name for p in frames] == sorted(
            f"frame-{i:06d}.{kind}" for i in range(info["frames"]) for kind in ("color.png", "pose.txt"))
        for i in range(info["frames"]):
            img = Image.open(out / name / f"frame-{i:06d}.color.png")
            assert img.format == "PNG" and img.mode == "RGB" and img.size == SIZE
            lines = (out / name / f"frame-{i:06d}.pose.txt").read_text().splitlines()
            assert len(lines) == 4 and all(len(line.split()) == 4 for line in lines)
            t = read_pose(out / name / f"frame-{i:06d}.pose.txt")
            r = t[:3, :3]
            np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-8)
            assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-8)
            np.testing.assert_array_equal(t[3], [0, 0, 0, 1])
            assert np.all(t[:3, 3] > 0) and np.all(t[:3, 3] < meta["room"]["size"])
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_pose_files_match_quaternion_conventions(pose_dataset):
    t = torch.from_numpy(read_pose(pose_dataset / "seq-01" / "frame-000000.pose.txt"))
    q = matrix_to_quaternion(t[:3, :3])
    assert q[0] >= 0 and float(q.norm()) == pytest.approx(1.0)
    torch.testing.assert_close(quaternion_to_matrix(q), t[:3, :3], atol=1e-8, rtol=0)


def test_deterministic_and_seed_dependent(tmp_path, pose_dataset):
    a = generate_pose_scene(tmp_path / "a", seed=3, train=5, test=3, size=SIZE, workers=2, progress=False)
    files_a = all_files(a)
    assert files_a == all_files(pose_dataset), "same seed and args, one vs two workers: bytes differ"
    generate_pose_scene(a, seed=3, train=5, test=3, size=SIZE, workers=1, progress=False)  # re-run in place
    assert all_files(a) == files_a
    b = all_files(generate_pose_scene(tmp_path / "b", seed=4, train=5, test=3, size=SIZE, workers=1, progress=False))
    assert b.keys() == files_a.keys()
    for name in files_a:
        if name.endswith((".png", ".pose.txt")):
            assert files_a[name] != b[name], f"{name} is the same for seeds 3 and 4"
    # a smaller re-run removes the frames the larger one left behind
    generate_pose_scene(a, seed=3, train=3, test=2, size=SIZE, workers=1, progress=False)
    assert sorted(p.name for p in a.iterdir() if p.is_dir()) == [f"seq-0{i}" for i in range(1, 6)]
    assert sum(1 for _ in a.rglob("*.color.png")) == 5


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        prepare_output(tmp_path, "pose")


# ------------------------------------------------------------------------------------------------
# geometry: poses, depth and surfaces agree


def test_depth_and_surface_ids_match_geometry(room):
    intr = Intrinsics.from_fov(*SIZE)
    rng = np.random.default_rng(0)
    for pose in walk(room, stream(5, "test-walk"), 4):
        rgb, depth, sid = render(room, pose, intr)
        assert rgb.shape == (SIZE[1], SIZE[0], 3) and rgb.dtype == np.uint8
        assert depth.dtype == np.float32 and sid.dtype == np.int32
        for row, col in zip(rng.integers(0, SIZE[1], 40), rng.integers(0, SIZE[0], 40)):
            point, direction = unproject(pose, intr, row, col, float(depth[row, col]))
            axis, coord, _ = room.surface_plane(sid[row, col])
            lo, hi = room.surface_rect(sid[row, col])
            assert abs(point[axis] - coord) < 1e-4, room.surface_name(sid[row, col])
            assert np.all(point > lo - 1e-4) and np.all(point < hi + 1e-4), room.surface_name(sid[row, col])
            t_ref, sid_ref = cast_one(room, pose[:3, 3], direction)
            assert depth[row, col] == pytest.approx(t_ref, rel=1e-5), (row, col)
            if abs(depth[row, col] - t_ref) < 1e-6 and sid_ref != sid[row, col]:
                # a ray through an edge shared by two faces may name either
                assert abs(point[room.surface_plane(sid_ref)[0]] - room.surface_plane(sid_ref)[1]) < 1e-4
            else:
                assert sid_ref == sid[row, col], (row, col)


def test_principal_point_looks_along_camera_z(room):
    intr = Intrinsics.from_fov(*SIZE)
    for pose in random_viewpoints(room, stream(5, "test-views"), 5):
        _, depth, sid = render(room, pose, intr)
        row, col = int(intr.cy), int(intr.cx)
        hit = pose[:3, 3] + depth[row, col] * pose[:3, 2]  # along the pose's +z axis
        t_ref, sid_ref = cast_one(room, pose[:3, 3], pose[:3, 2])
        assert depth[row, col] == pytest.approx(t_ref, rel=1e-6) and sid[row, col] == sid_ref
        axis, coord, _ = room.surface_plane(sid[row, col])
        assert abs(hit[axis] - coord) < 1e-4


def test_box_corners_project_onto_their_box(room):
    """Project box corners through pose and intrinsics: where a corner is visible (checked with the
    reference caster), the renderer drew that box on the pixels around it that see it."""
    intr = Intrinsics.from_fov(160, 120)
    checked = 0
    for pose in random_viewpoints(room, stream(5, "corner-views"), 12):
        _, _, sid = render(room, pose, intr)
        r, c = pose[:3, :3], pose[:3, 3]
        for k, box in enumerate(room.boxes):
            if min(np.subtract(box.hi, box.lo)) < 0.1:
                continue  # posters and legs are too thin to own a pixel next to every corner
            for corner in np.array(np.meshgrid(*zip(box.lo, box.hi))).reshape(3, -1).T:
                p_cam = r.T @ (corner - c)
                if p_cam[2] < 0.3:
                    continue
                u, v = intr.project(p_cam)
                col, row = int(round(u)), int(round(v))
                if not (2 <= col < intr.width - 2 and 2 <= row < intr.height - 2):
                    continue
                t_ref, _ = cast_one(room, c, (corner - c) / p_cam[2])  # t is depth: the corner is at p_cam z
                if t_ref < p_cam[2] * (1 - 1e-6):
                    continue  # hidden, by another box or by this box's own near faces
                # pixel centres next to the corner that the reference sees on this box; at a grazing
                # or partly hidden corner the box's silhouette may be thinner than a pixel: skip it
                expected = [(i, j) for i in range(row - 2, row + 3) for j in range(col - 2, col + 3)
                            if (cast_one(room, c, unproject(pose, intr, i, j, 1.0)[1])[1] - 6) // 6 == k]
                if not expected:
                    continue
                drawn = [(i, j) for i, j in expected if (sid[i, j] - 6) // 6 == k]
                assert drawn == expected, f"corner {corner} of {box.kind}: box not drawn where it projects"
                checked += 1
    assert checked >= 10, "too few visible corners to test"


def test_face_points_project_to_their_pixels(room):
    """Project points inside box faces: the pixel they land on shows that face, at the depth where
    that pixel's ray meets the face plane."""
    intr = Intrinsics.from_fov(160, 120)
    checked = 0
    for pose in random_viewpoints(room, stream(5, "face-views"), 8):
        _, depth, sid = render(room, pose, intr)
        r, c = pose[:3, :3], pose[:3, 3]
        for face in range(6, room.num_surfaces):
            axis, coord, normal = room.surface_plane(face)
            lo, hi = room.surface_rect(face)
            if normal @ (c - lo) <= 0:
                continue  # seen from behind: cannot be visible
            for a, b in ((0.2, 0.2), (0.8, 0.3), (0.5, 0.5), (0.3, 0.8)):
                point = lo.copy()
                others = [x for x in range(3) if x != axis]
                point[others[0]] += a * (hi - lo)[others[0]]
                point[others[1]] += b * (hi - lo)[others[1]]
                p_cam = r.T @ (point - c)
                if p_cam[2] < 0.3:
                    continue
                col, row = (int(round(x)) for x in intr.project(p_cam))
                if not (0 <= col < intr.width and 0 <= row < intr.height):
                    continue
                _, direction = unproject(pose, intr, row, col, 1.0)
                t_plane = (coord - c[axis]) / direction[axis]
                q = c + t_plane * direction
                inside = np.all(q[others] > lo[others] + 1e-3) and np.all(q[others] < hi[others] - 1e-3)
                if not inside or cast_one(room, c, direction)[1] != face:
                    continue  # the pixel centre misses the face, or something hides it
                assert sid[row, col] == face, room.surface_name(face)
                assert depth[row, col] == pytest.approx(t_plane, abs=1e-4)
                checked += 1
    assert checked >= 20, "too few visible face points to test"


def test_look_rotation_axes():
    r = look_rotation(0.0, 0.0, 0.0)
    np.testing.assert_allclose(r[:, 2], [1, 0, 0], atol=1e-12)  # looking along world +x
    np.testing.assert_allclose(r[:, 1], [0, 0, -1], atol=1e-12)  # image down = world down
    np.testing.assert_allclose(r[:, 0], [0, -1, 0], atol=1e-12)  # image right = world -y
    r = look_rotation(0.7, 0.2, -0.1)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    assert math.degrees(math.asin(r[2, 2])) == pytest.approx(math.degrees(0.2))  # pitch up


# ------------------------------------------------------------------------------------------------
# trajectories and images


def test_walk_stays_in_free_space_and_is_smooth(room):
    poses = np.array(walk(room, stream(5, "walk-check"), 600))
    centres = poses[:, :3, 3]
    assert room.distance_3d(centres).min() >= 0.3
    assert centres[:, 2].min() >= 1.2 and centres[:, 2].max() <= 1.8
    forward = poses[:, :3, 2]
    pitch = np.degrees(np.arcsin(forward[:, 2]))
    assert np.abs(pitch).max() < 30
    roll = np.degrees(np.arcsin(np.abs(poses[:, 2, 0])))  # camera x leaving the horizontal plane
    assert roll.max() < 15
    yaw = np.unwrap(np.arctan2(forward[:, 1], forward[:, 0]))
    assert np.ptp(yaw) > math.pi, "yaw should sweep widely"
    step = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert step.max() < 0.1 and np.degrees(np.abs(np.diff(yaw))).max() < 10
    assert np.ptp(centres[:, 0]) > 1.5 and np.ptp(centres[:, 1]) > 1.0, "the walk should roam the room"


def test_images_are_not_degenerate(room):
    intr = Intrinsics.from_fov(*SIZE)
    poses = walk(room, stream(5, "images"), 200)
    light = Lighting.random(stream(5, "light"))
    frames = {i: render(room, poses[i], intr, light).rgb.astype(np.float32) for i in (20, 21, 60, 61, 120, 121, 180, 181)}
    for img in frames.values():
        assert img.std() > 15, "an image is nearly uniform"
    near = np.mean([np.abs(frames[i] - frames[i + 1]).mean() for i in (20, 60, 120, 180)])
    far = np.mean([np.abs(frames[i] - frames[j]).mean() for i, j in ((20, 120), (60, 180), (20, 180), (60, 120))])
    assert far > 2 * near, (near, far)


def test_lighting_changes_appearance_not_geometry(room):
    intr = Intrinsics.from_fov(*SIZE)
    pose = camera_to_world([room.size[0] / 2, room.size[1] / 2, 1.5], 0.3, -0.1, 0.0)
    a = render(room, pose, intr, Lighting.random(stream(1, "l")))
    b = render(room, pose, intr, Lighting.random(stream(2, "l")), noise_std=1.5, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.surface_id, b.surface_id)
    assert np.abs(a.rgb.astype(int) - b.rgb).mean() > 3


def test_render_rejects_bad_poses(room):
    intr = Intrinsics.from_fov(*SIZE)
    with pytest.raises(ValueError, match="outside the room"):
        render(room, camera_to_world([-1.0, 1.0, 1.5], 0, 0, 0), intr)
    with pytest.raises(ValueError, match="rigid"):
        render(room, np.diag([2.0, 1, 1, 1]), intr)


# ------------------------------------------------------------------------------------------------
# the MIT-67 layout and the command line


def test_scene_classes_layout(tmp_path):
    out = generate_scene_classes(tmp_path / "rooms", seed=1, classes=3, train=2, test=1, size=SIZE, workers=1,
                                 progress=False)
    classes = ["room_a", "room_b", "room_c"]
    assert sorted(p.name for p in (out / "Images").iterdir()) == classes
    train = (out / "TrainImages.txt").read_text().split()
    test = (out / "TestImages.txt").read_text().split()
    assert len(train) == 6 and len(test) == 3 and not set(train) & set(test)
    assert sorted({line.split("/")[0] for line in train + test}) == classes
    for line in train + test:
        with Image.open(out / "Images" / line) as img:
            assert img.format == "JPEG" and img.size == SIZE
            assert np.asarray(img.convert("RGB"), np.float32).std() > 5
    meta = json.loads((out / "scene.json").read_text())
    assert meta["classes"] == classes and meta["task"] == "scene"
    sizes = [tuple(meta["rooms"][c]["size"]) for c in classes]
    assert len(set(sizes)) == 3, "each class should be a different room"


def test_cli(tmp_path):
    out = tmp_path / "cli"
    run = subprocess.run([sys.executable, "-m", "jsla_fast.synth", "--out", str(out), "--seed", "2", "--train", "3",
                          "--test", "2", "--size", "48x32", "--quiet"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "wrote 5 frames" in run.stderr and str(out) in run.stderr
    assert Image.open(out / "seq-05" / "frame-000000.color.png").size == (48, 32)
    bad = subprocess.run([sys.executable, "-m", "jsla_fast.synth", "--out", str(out), "--size", "48by32"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--size" in bad.stderr
    room = subprocess.run([sys.executable, "-m", "jsla_fast.synth", "--out", str(tmp_path / "room"), "--train", "4",
                           "--test", "1", "--size", "32x24", "--layout", "room", "--sequences", "4,1", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert room.returncode == 0, room.stderr
    meta = json.loads((tmp_path / "room" / "scene.json").read_text())
    assert meta["trajectory"]["layout"] == "room" and meta["trajectory"]["area"] is None
    assert sorted(meta["sequences"]) == [f"seq-0{i}" for i in range(1, 6)]
    bad = subprocess.run([sys.executable, "-m", "jsla_fast.synth", "--out", str(out), "--sequences", "6"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--sequences must look like 6,2" in bad.stderr


def test_area_walks_revisit_one_area_and_its_directions(room):
    from jsla_fast.synth.trajectory import recording_area

    area = recording_area(room)
    assert room.clearance(np.array([(area.lo[0] + area.hi[0]) / 2, (area.lo[1] + area.hi[1]) / 2])) > 0
    walks = [np.array(walk(room, stream(5, "area", k), 300, area=area)) for k in range(3)]
    for poses in walks:
        xy = poses[:, :2, 3]
        # the pull back into the area is soft: a little overshoot, never a walk elsewhere
        assert (xy >= np.array(area.lo) - 0.25).all() and (xy <= np.array(area.hi) + 0.25).all()
        assert room.distance_3d(poses[:, :3, 3]).min() >= 0.3
        forward = poses[:, :3, 2]
        yaw = np.arctan2(forward[:, 1], forward[:, 0])
        off = np.degrees(np.abs(np.angle(np.exp(1j * (yaw - area.heading)))))
        assert off.max() <= math.degrees(area.spread) + 1e-6
        assert np.ptp(off) > 20, "the gaze should still sweep within the sector"
    # the walks cover the same ground: each position of walk 0 is near one of walk 1 or 2
    others = np.concatenate([w[:, :2, 3] for w in walks[1:]])
    nearest = np.linalg.norm(walks[0][:, None, :2, 3] - others[None], axis=2).min(1)
    assert np.median(nearest) < 0.2


def test_pose_scene_layouts_are_recorded_and_checked(tmp_path):
    out = generate_pose_scene(tmp_path / "a", seed=1, train=6, test=2, size=SIZE, layout="area", sequences=(3, 1),
                              workers=1, progress=False)
    meta = json.loads((out / "scene.json").read_text())
    assert meta["trajectory"]["layout"] == "area" and meta["trajectory"]["area"]["spread_deg"] == 60.0
    assert (out / "TrainSplit.txt").read_text().split() == ["sequence1", "sequence2", "sequence3"]
    assert (out / "TestSplit.txt").read_text().split() == ["sequence4"]
    with pytest.raises(ValueError, match="unknown walk layout 'hall'"):
        generate_pose_scene(tmp_path / "b", layout="hall")
    with pytest.raises(ValueError, match="at least one training and one test sequence"):
        generate_pose_scene(tmp_path / "c", sequences=(0, 1))
