"""The newest-frame mailbox of the ROS node: newest wins, each frame at most once, stale frames
dropped and counted, a real producer/consumer pair never re-processes or goes stale."""
from __future__ import annotations

import threading
import time

import pytest

from jsla_fast.ros.latest_frame import LatestFrame


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_newest_frame_wins_and_is_taken_once():
    box = LatestFrame()
    box.put("a", 1.0)
    box.put("b", 2.0)
    frame = box.take(timeout=0)
    assert (frame.payload, frame.stamp, frame.seq) == ("b", 2.0, 2)
    assert box.take(timeout=0) is None  # nothing new: nothing handed out
    assert (box.counts.received, box.counts.processed, box.counts.replaced) == (2, 1, 1)


def test_stale_frames_are_dropped_and_counted():
    clock = FakeClock()
    box = LatestFrame(max_age=0.05, clock=clock)
    box.put("old", 1.0)
    clock.now += 0.2
    assert box.take(timeout=0) is None and box.counts.stale == 1
    box.put("fresh", 2.0)
    clock.now += 0.01
    assert box.take(timeout=0).payload == "fresh"
    with pytest.raises(ValueError, match="max_age"):
        LatestFrame(max_age=0)


def test_take_blocks_until_a_frame_or_close():
    box = LatestFrame()
    threading.Timer(0.05, box.put, args=("x", 1.0)).start()
    assert box.take(timeout=5).payload == "x"
    threading.Timer(0.05, box.close).start()
    assert box.take() is None


def test_slow_worker_sees_only_fresh_frames_once():
    """30 Hz producer, 12 Hz consumer: every processed frame is the newest one at take time
    (age well under a frame period) and none is processed twice."""
    box = LatestFrame(max_age=0.5)
    seen, ages = [], []
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            frame = box.take(timeout=0.1)
            if frame is None:
                continue
            ages.append(time.monotonic() - frame.received)
            seen.append(frame.seq)
            time.sleep(1 / 12)

    t = threading.Thread(target=worker)
    t.start()
    for i in range(45):
        box.put(i, float(i))
        time.sleep(1 / 30)
    stop.set()
    t.join()
    assert len(seen) == len(set(seen)) >= 8
    assert sorted(ages)[len(ages) // 2] < 1 / 30
    c = box.counts
    left = 1 if box.take(timeout=0) is not None else 0  # a frame may still wait in the slot
    assert c.received == 45 and c.processed == len(seen) + left
    assert c.processed + c.replaced + c.stale == 45  # every frame accounted for exactly once
