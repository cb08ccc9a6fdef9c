"""Writing dataset files safely: atomic replacement, exact pose text, and clean re-runs.

Every file is written under a hidden temporary name in its final folder and then moved into place
with ``os.replace``, so a crash never leaves a truncated image under a name a loader would read.
Re-running into the same folder rewrites identical bytes and removes frames a previous, larger
run left behind, but only files this generator could have written: anything else in the folder
makes the run stop rather than mix datasets.
"""
from __future__ import annotations

import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_write

log = logging.getLogger(__name__)

GENERATOR = "jsla_fast.synth"
# names this generator writes at the top of an output folder (files and folders)
_OWN_TOP = re.compile(r"^(seq-\d{2,}|Images|TrainSplit\.txt|TestSplit\.txt|TrainImages\.txt|TestImages\.txt|"
                      r"scene\.json|\..*\.tmp)$")
FRAME_FILE = re.compile(r"^frame-\d{6}\.(color\.png|pose\.txt)$")
SEQUENCE_DIR = re.compile(r"^seq-\d{2,}$")


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    atomic_write(path, lambda f: f.write(data), durable=False)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def encode_image(rgb: np.ndarray, fmt: str) -> bytes:
    """PNG (lossless, fast zlib level) or JPEG (quality 90) bytes of a uint8 ``[H, W, 3]`` image;
    Pillow writes no timestamps, so equal pixels give equal bytes."""
    buf = io.BytesIO()
    img = Image.fromarray(rgb, "RGB")
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=3)
    elif fmt == "jpg":
        img.save(buf, format="JPEG", quality=90)
    else:
        raise ValueError(f"unknown image format {fmt!r}; expected 'png' or 'jpg'")
    return buf.getvalue()


def pose_text(cam_to_world: np.ndarray) -> str:
    """The 7-Scenes pose file: the 4x4 matrix row-major, 4 lines of 4 numbers, 10 significant digits."""
    return "".join(" ".join(f"{x:.9e}" for x in row) + "\n" for row in np.asarray(cam_to_world, np.float64))


def read_pose(path: Path) -> np.ndarray:
    """Parse a pose file written by :func:`pose_text` (or a real 7-Scenes one)."""
    values = np.array(Path(path).read_text().split(), np.float64)
    if values.size != 16:
        raise ValueError(f"{path}: expected 16 numbers (a 4x4 matrix), found {values.size}")
    return values.reshape(4, 4)


def prepare_output(out: Path, task: str) -> Path:
    """Create ``out`` or check that what is already there came from this generator, for ``task``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output path {out} exists and is not a folder; choose a folder path")
    out.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in out.iterdir() if not _OWN_TOP.match(p.name))
    marker = out / "scene.json"
    if marker.exists():
        try:
            meta = json.loads(marker.read_text())
            ours, their_task = meta.get("generator") == GENERATOR, meta.get("task")
        except (ValueError, AttributeError):
            ours, their_task = False, None
        if not ours:
            foreign.append("scene.json (not written by jsla_fast.synth)")
        elif their_task != task:
            foreign.append(f"a dataset for --task {their_task}")
    if foreign:
        raise FileExistsError(f"output folder {out} already holds files this generator did not write "
                              f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                              "choose an empty or new folder, or delete those files")
    return out


def prune(folder: Path, keep: set[str], pattern: re.Pattern) -> int:
    """Delete files in ``folder`` whose names match ``pattern`` but are not in ``keep`` (stale
    frames of an earlier run); return how many."""
    removed = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and pattern.match(p.name) and p.name not in keep:
                p.unlink()
                removed += 1
    return removed


def prune_folders(parent: Path, keep: set[str], pattern: re.Pattern, file_pattern: re.Pattern) -> int:
    """Remove sub-folders of ``parent`` matching ``pattern`` and not in ``keep`` if they hold only
    files matching ``file_pattern``; return how many."""
    removed = 0
    if not parent.is_dir():
        return 0
    for d in sorted(parent.iterdir()):
        if d.is_dir() and pattern.match(d.name) and d.name not in keep:
            if all(p.is_file() and (file_pattern.match(p.name) or p.name.endswith(".tmp")) for p in d.iterdir()):
                shutil.rmtree(d)
                removed += 1
            else:
                log.warning("left stale folder %s in place: it holds files this generator did not write", d)
    return removed
