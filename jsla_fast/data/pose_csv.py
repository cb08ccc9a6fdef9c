"""Generic pose CSV for a user's own SfM/SLAM data: ``<data>/train.csv`` and ``<data>/test.csv``,
lines ``path,x,y,z,qw,qx,qy,qz`` (camera-to-world, metres; an optional header line starting with
``path``); image paths are relative to the CSV's folder. The sequence of an image is its folder."""
from __future__ import annotations

from pathlib import Path

from .cambridge import read_pose_lines
from .records import Problems, Records, require_file


def read_pose_csv(root: Path, split: str, problems: Problems) -> Records:
    listing = require_file(root / f"{split}.csv",
                           "--data must be a folder holding train.csv and test.csv with lines path,x,y,z,qw,qx,qy,qz")
    first = listing.read_text().split("\n", 1)[0]
    header = 1 if first.strip().lower().startswith("path") else 0
    return read_pose_lines(listing, root, problems, header=header, sep=",")
