"""The two datasets: one scene in the 7-Scenes layout (pose regression) and several rooms in the
MIT-67 layout (scene classification)."""
from __future__ import annotations

import logging
import re
import string
import time
from pathlib import Path

import numpy as np

from .batch import FrameJob, run_jobs
from .camera import DEFAULT_HFOV_DEG, Intrinsics
from .files import (FRAME_FILE, GENERATOR, SEQUENCE_DIR, prepare_output, prune, prune_folders, write_json,
                    write_text)
from .render import Lighting
from .rng import stream
from .room import CAMERA_Z_MAX, CAMERA_Z_MIN, CLEARANCE, make_room
from .trajectory import DURATION, random_viewpoints, recording_area, smooth_noise, walk

log = logging.getLogger(__name__)

VERSION = "1.0"
TRAIN_SEQUENCES, TEST_SEQUENCES = 3, 2
#: "area": every walk records one area of the room, looking the same way (like 7-Scenes, whose
#: test sequences revisit the space of its training ones); "room": each walk roams the whole room
LAYOUTS = ("area", "room")
CAMERA_CONVENTION = ("OpenCV / 7-Scenes pinhole camera: x right, y down, z forward (viewing direction). "
                     "Pose files hold the 4x4 camera-to-world matrix (X_world = T @ X_cam), row-major, metres. "
                     "Pixel (row r, column c) samples image point (u, v) = (c, r): pixel centres at integer "
                     "coordinates, principal point (cx, cy) = (W/2, H/2).")
WORLD_CONVENTION = ("World frame: metres, z up, floor at z = 0, room spans [0, W] x [0, D] x [0, H] "
                    "with size = [W, D, H]; boxes are axis-aligned, given by their lo and hi corners.")
SURFACE_IDS = ("surface_id = 6 * object + 2 * axis + side; object 0 is the room shell, object k >= 1 is "
               "boxes[k - 1]; axis 0/1/2 = x/y/z of the face normal; side 0 = face at the minimum coordinate.")


def _size(size) -> tuple[int, int]:
    w, h = (int(x) for x in size)
    if w < 8 or h < 8:
        raise ValueError(f"image size must be at least 8x8 pixels, got {w}x{h}")
    return w, h


def _split(total: int, parts: int) -> list[int]:
    parts = min(parts, total)
    return [total // parts + (i < total % parts) for i in range(parts)] if parts else []


def _flicker(seed: int, sequence: int, frames: int) -> np.ndarray:
    """Per-frame exposure of a sequence: a per-sequence level, slow drift and mild flicker."""
    rng = stream(seed, "exposure", sequence)
    level = rng.uniform(0.85, 1.15)
    drift = np.interp(np.linspace(0, 1, frames), np.linspace(0, 1, 1200), smooth_noise(rng, 1200, 4.0))
    return level * (1 + 0.05 * drift + 0.015 * rng.standard_normal(frames))


def generate_pose_scene(out, seed: int = 0, train: int = 600, test: int = 200, size=(320, 240), *,
                        layout: str = "area", sequences: tuple[int, int] = (TRAIN_SEQUENCES, TEST_SEQUENCES),
                        workers: int | None = None, progress: bool = True) -> Path:
    """Write one synthetic room as a 7-Scenes scene under ``out``; return ``out`` as a Path.

    ``train`` frames are split over ``sequences[0]`` training sequences and ``test`` frames over
    ``sequences[1]`` test sequences (separate walks, each under its own light); ``layout`` (see
    :data:`LAYOUTS`) says where the walks go. ``size`` is (width, height).
    Files: ``seq-NN/frame-NNNNNN.color.png`` and ``.pose.txt``, ``TrainSplit.txt``,
    ``TestSplit.txt`` and ``scene.json`` (intrinsics, conventions, layout, sequences).
    """
    start = time.perf_counter()
    if train < 1 or test < 0:
        raise ValueError(f"need train >= 1 and test >= 0 frames, got train={train}, test={test}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown walk layout {layout!r}; use one of {LAYOUTS}")
    if len(sequences) != 2 or sequences[0] < 1 or sequences[1] < 1:
        raise ValueError(f"need at least one training and one test sequence, got sequences={tuple(sequences)}")
    width, height = _size(size)
    out = prepare_output(out, "pose")
    intrinsics = Intrinsics.from_fov(width, height)
    scene = make_room(seed)
    area = recording_area(scene) if layout == "area" else None
    counts = [("train", n) for n in _split(train, sequences[0])] + [("test", n) for n in _split(test, sequences[1])]
    jobs, sequences = [], {}
    for number, (split, frames) in enumerate(counts, start=1):
        folder = out / f"seq-{number:02d}"
        folder.mkdir(exist_ok=True)
        poses = walk(scene, stream(seed, "walk", number), frames, DURATION, area)
        light = Lighting.random(stream(seed, "light", number))
        gains = _flicker(seed, number, frames)
        names = set()
        for i, pose in enumerate(poses):
            jobs.append(FrameJob("room", pose, light.with_gain(round(float(gains[i]), 6)), (seed, "noise", number, i),
                                 folder / f"frame-{i:06d}.color.png", "png", folder / f"frame-{i:06d}.pose.txt"))
            names |= {f"frame-{i:06d}.color.png", f"frame-{i:06d}.pose.txt"}
        prune(folder, names, FRAME_FILE)
        sequences[folder.name] = {"split": split, "frames": frames, "lighting": light.to_json()}
    prune_folders(out, set(sequences), SEQUENCE_DIR, FRAME_FILE)

    run_jobs({"room": scene}, intrinsics, jobs, workers, progress, desc=f"rendering {out.name}")
    for split, name in (("train", "TrainSplit.txt"), ("test", "TestSplit.txt")):
        write_text(out / name, "".join(f"sequence{int(k[4:])}\n" for k, v in sequences.items() if v["split"] == split))
    write_json(out / "scene.json", {
        "generator": GENERATOR, "version": VERSION, "task": "pose", "seed": seed,
        "image_size": {"width": width, "height": height},
        "intrinsics": {"fx": intrinsics.fx, "fy": intrinsics.fy, "cx": intrinsics.cx, "cy": intrinsics.cy,
                       "hfov_deg": DEFAULT_HFOV_DEG},
        "camera_convention": CAMERA_CONVENTION, "world_convention": WORLD_CONVENTION, "surface_ids": SURFACE_IDS,
        "room": {"size": list(scene.size), "boxes": [{"kind": b.kind, "lo": list(b.lo), "hi": list(b.hi)}
                                                     for b in scene.boxes]},
        "trajectory": {"layout": layout, "area": None if area is None else area.to_json(),
                       "camera_height_m": [CAMERA_Z_MIN, CAMERA_Z_MAX], "min_clearance_m": CLEARANCE,
                       "duration_s": DURATION},
        "sequences": sequences,
    })
    log.info("wrote %d frames (%d train, %d test; %d sequences) of %dx%d to %s in %.1f s",
             train + test, train, test, len(sequences), width, height, out, time.perf_counter() - start)
    return out


def class_name(k: int) -> str:
    """room_a ... room_z, room_aa, room_ab, ... for class index ``k``."""
    letters = string.ascii_lowercase
    suffix = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        suffix = letters[r] + suffix
    return f"room_{suffix}"


def generate_scene_classes(out, seed: int = 0, classes: int = 5, train: int = 60, test: int = 20, size=(320, 240), *,
                           workers: int | None = None, progress: bool = True) -> Path:
    """Write ``classes`` different rooms as an MIT-67-style classification set under ``out``.

    Each class is one room (its own layout, palette and furniture); ``train`` and ``test`` are
    images per class, from random viewpoints under random light. Files: ``Images/<class>/<class>_NNNNN.jpg``,
    ``TrainImages.txt`` / ``TestImages.txt`` (lines ``<class>/<file>.jpg``) and ``scene.json``.
    """
    start = time.perf_counter()
    if classes < 1 or train < 1 or test < 0:
        raise ValueError(f"need classes >= 1, train >= 1 and test >= 0, got classes={classes}, train={train}, test={test}")
    width, height = _size(size)
    out = prepare_output(out, "scene")
    intrinsics = Intrinsics.from_fov(width, height)
    images = out / "Images"
    images.mkdir(exist_ok=True)
    scenes, jobs, listing, rooms = {}, [], {"train": [], "test": []}, {}
    for k in range(classes):
        name = class_name(k)
        scene = make_room(seed, name=name, variety=1.0)
        scenes[name] = scene
        folder = images / name
        folder.mkdir(exist_ok=True)
        views = random_viewpoints(scene, stream(seed, "views", name), train + test)
        files = set()
        for i, pose in enumerate(views):
            file = f"{name}_{i:05d}.jpg"
            light = Lighting.random(stream(seed, "light", name, i))
            gain = float(stream(seed, "exposure", name, i).uniform(0.85, 1.15))
            jobs.append(FrameJob(name, pose, light.with_gain(round(gain, 6)), (seed, "noise", name, i),
                                 folder / file, "jpg"))
            listing["train" if i < train else "test"].append(f"{name}/{file}")
            files.add(file)
        prune(folder, files, re.compile(rf"^{re.escape(name)}_\d{{5}}\.jpg$"))
        rooms[name] = {"size": list(scene.size), "boxes": len(scene.boxes)}
    prune_folders(images, set(scenes), re.compile(r"^room_[a-z]+$"), re.compile(r"^room_[a-z]+_\d{5}\.jpg$"))

    run_jobs(scenes, intrinsics, jobs, workers, progress, desc=f"rendering {out.name}")
    write_text(out / "TrainImages.txt", "".join(line + "\n" for line in listing["train"]))
    write_text(out / "TestImages.txt", "".join(line + "\n" for line in listing["test"]))
    write_json(out / "scene.json", {
        "generator": GENERATOR, "version": VERSION, "task": "scene", "seed": seed,
        "image_size": {"width": width, "height": height},
        "intrinsics": {"fx": intrinsics.fx, "fy": intrinsics.fy, "cx": intrinsics.cx, "cy": intrinsics.cy,
                       "hfov_deg": DEFAULT_HFOV_DEG},
        "camera_convention": CAMERA_CONVENTION, "world_convention": WORLD_CONVENTION,
        "classes": list(scenes), "images_per_class": {"train": train, "test": test}, "rooms": rooms,
    })
    log.info("wrote %d images (%d classes x %d train + %d test) of %dx%d to %s in %.1f s",
             classes * (train + test), classes, train, test, width, height, out, time.perf_counter() - start)
    return out
