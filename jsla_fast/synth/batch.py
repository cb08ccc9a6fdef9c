"""Rendering and writing many frames, spread over worker processes.

A frame is independent of every other one (its noise has its own random stream), so frames can be
rendered in any order on any process and the files are still byte-identical. Workers are forked
after the textures are baked, so they share the baked atlas instead of rebuilding it.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import progress as progress_bar
from .atlas import texel_density
from .camera import Intrinsics
from .files import encode_image, pose_text, write_bytes, write_text
from .render import Lighting, render
from .rng import stream
from .room import Scene

log = logging.getLogger(__name__)

NOISE_STD = 1.5  # sensor noise, in 8-bit grey levels


@dataclass(frozen=True)
class FrameJob:
    """One image to render and write: which scene, from where, under which light, to which files."""

    scene: str
    cam_to_world: np.ndarray
    lighting: Lighting
    noise_key: tuple  # (seed, *keys) of the frame's own noise stream
    image_path: Path
    image_format: str  # "png" or "jpg"
    pose_path: Path | None = None


_SCENES: dict[str, Scene] = {}
_INTRINSICS: Intrinsics | None = None


def _init_worker(scenes: dict[str, Scene], intrinsics: Intrinsics) -> None:
    global _INTRINSICS
    _SCENES.clear()
    _SCENES.update(scenes)
    _INTRINSICS = intrinsics


def _run(job: FrameJob) -> None:
    rendering = render(_SCENES[job.scene], job.cam_to_world, _INTRINSICS, job.lighting,
                       noise_std=NOISE_STD, rng=stream(*job.noise_key))
    write_bytes(job.image_path, encode_image(rendering.rgb, job.image_format))
    if job.pose_path is not None:
        write_text(job.pose_path, pose_text(job.cam_to_world))


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def run_jobs(scenes: dict[str, Scene], intrinsics: Intrinsics, jobs: list[FrameJob], workers: int | None = None,
             progress: bool = True, desc: str = "rendering") -> None:
    """Render and write every job; ``workers`` processes (default: one per CPU, 1 for few jobs)."""
    for scene in scenes.values():
        scene.atlas(texel_density(intrinsics.fx))  # bake once, before forking
    if workers is None:
        workers = default_workers() if len(jobs) >= 32 else 1
    bar = progress_bar(total=len(jobs), desc=desc, unit="frame", disable=not progress, leave=False)
    try:
        if workers <= 1:
            _init_worker(scenes, intrinsics)
            for job in jobs:
                _run(job)
                bar.update()
            return
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else None)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(scenes, intrinsics)) as pool:
            for _ in pool.imap_unordered(_run, jobs, chunksize=4):
                bar.update()
    finally:
        bar.close()
