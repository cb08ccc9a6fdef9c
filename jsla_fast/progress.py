"""Progress bars (tqdm) that stay readable in log files: when stderr is not a terminal they
redraw at most every 30 s instead of ten times a second."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress(iterable=None, **kwargs) -> tqdm:
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(iterable, **kwargs)
