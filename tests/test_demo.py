"""The README's main job, run as a user runs it."""
from __future__ import annotations

import re
import subprocess
import sys


def test_demo_prints_choices_poses_and_latency():
    proc = subprocess.run([sys.executable, "-m", "jsla_fast.demo", "--frames", "3", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if re.match(r"\s+\d+\s", line)]
    assert len(rows) == 3
    for i, row in enumerate(rows):
        assert int(row[0]) == i
        assert all(name in ("3b", "4c", "4e", "5b") for name in row[1:4])
        pose = [float(v) for v in row[4:11]]
        # printed to 4 decimals: |sum q^2 - 1| <= 2 * sum|q| * 5e-5 <= 2e-4 for a unit quaternion
        assert abs(sum(q * q for q in pose[3:]) - 1) <= 2e-4 and pose[3] >= 0
        assert float(row[11]) > 0
    assert re.search(r"median time per frame: [\d.]+ ms", proc.stdout)


def test_demo_scene_task_with_three_layers():
    proc = subprocess.run([sys.executable, "-m", "jsla_fast.demo", "--frames", "1", "--task", "scene",
                           "--layers", "3b,4e,5b"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "layers=3b/4e/5b, N=2 steps" in proc.stdout
