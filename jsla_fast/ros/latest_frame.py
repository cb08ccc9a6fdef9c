"""The newest-frame hand-off between a camera callback and an inference worker (the ROS node's
core, kept free of ROS so it is tested on its own).

The callback only :meth:`LatestFrame.put`s: a frame waiting when a newer one arrives is replaced
and counted as dropped (never processed). The worker :meth:`LatestFrame.take`s: it blocks until
a frame it has not seen arrives, then drops it (counted) if it is older than ``max_age`` seconds,
so the model never spends time on a stale view. Each frame is handed out at most once.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Frame:
    payload: Any
    stamp: float  #: the image's own time (seconds; the message header stamp)
    received: float = field(default_factory=time.monotonic)  #: when the callback got it (monotonic)
    seq: int = 0


@dataclass
class FrameCounts:
    received: int = 0
    processed: int = 0
    replaced: int = 0  #: overwritten by a newer frame before the worker took it
    stale: int = 0  #: older than max_age when the worker took it
    bad: int = 0  #: could not be decoded (counted by the caller through :meth:`LatestFrame.count_bad`)


class LatestFrame:
    """A one-slot mailbox: put() from the callback, take() from the worker thread."""

    def __init__(self, max_age: float | None = None, clock=time.monotonic) -> None:
        if max_age is not None and max_age <= 0:
            raise ValueError(f"max_age must be positive seconds or None, got {max_age}")
        self.max_age = max_age
        self.clock = clock
        self.counts = FrameCounts()
        self._frame: Frame | None = None
        self._seq = 0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, payload: Any, stamp: float) -> None:
        with self._cond:
            self._seq += 1
            self.counts.received += 1
            if self._frame is not None:
                self.counts.replaced += 1
            self._frame = Frame(payload, stamp, self.clock(), self._seq)
            self._cond.notify()

    def count_bad(self) -> None:
        with self._cond:
            self.counts.bad += 1

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest unseen, fresh-enough frame; None on timeout or after :meth:`close`."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                frame, self._frame = self._frame, None
                if frame is not None:
                    if self.max_age is not None and self.clock() - frame.received > self.max_age:
                        self.counts.stale += 1
                        continue
                    self.counts.processed += 1
                    return frame
                remaining = None if deadline is None else deadline - self.clock()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
