"""The README's main job, run as a user runs it (quick mode: tiny scene, one epoch)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from jsla_fast.demo import DEFAULT


def test_quick_demo_runs_the_whole_workflow(tmp_path):
    out = tmp_path / "demo_out"
    cmd = [sys.executable, "-m", "jsla_fast.demo", "--quick", "--out", str(out), "--threads", "2", "--frames", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for model in ("jsla", "posenet", "poselstm", "mean_pose", "retrieval", "nearest_pose"):
        assert summary[model]["median_t_m"] >= 0 and 0 <= summary[model]["median_r_deg"] <= 180
        assert summary[model]["count"] == 8
    assert summary["jsla"]["train_seconds"] > 0 and len(summary["jsla"]["layer_usage"]) == 3
    assert summary["posenet"]["layer_usage"] == [] and summary["poselstm"]["per_step"] == []
    assert len(summary["jsla"]["per_step"]) == 3  # the demo trains JSLA's per-step aux heads
    assert "HOG" in summary["retrieval"]["descriptor"] and summary["nearest_pose"]["nearest_position_median_m"] >= 0
    assert summary["setup"]["sequences"] == [2, 1] and summary["setup"]["loss"]["learned_weighting"]
    # every model trains with the clipping the summary reports (the training default; docs/TRAINING.md)
    assert summary["setup"]["grad_clip"] > 0
    for model in ("jsla", "posenet", "poselstm"):
        saved = yaml.safe_load((out / model / "run" / "config.yaml").read_text())
        assert saved["train"]["grad_clip"] == summary["setup"]["grad_clip"], model
        # and the learning rate chosen for it (docs/TRAINING.md), which the summary names
        assert saved["train"]["lr"] == summary["setup"]["lr"][model] == DEFAULT["lr"][model], model
    md = (out / "summary.md").read_text()
    for row in ("| JSLA |", "| PoseNet |", "| LSTM-PoseNet |", "| mean training pose |",
                "| retrieval (nearest training image by HOG) |", "| nearest training pose (oracle) |"):
        assert row in md, row
    assert "Coverage of the test views" in md and "| median error |" in md
    # every model's per-image sigmas, calibrated on validation (decoupled: its pose training unchanged)
    for model, label in (("jsla", "JSLA"), ("posenet", "PoseNet"), ("poselstm", "LSTM-PoseNet")):
        u = summary[model]["uncertainty"]
        saved = yaml.safe_load((out / model / "run" / "config.yaml").read_text())
        assert saved["model"]["uncertainty"] == "aleatoric" and saved["model"]["loss"]["aleatoric"] == u["loss"] == "decoupled"
        assert u["calibrated"] and u["calibration"]["images"] > 0
        assert u["factors"] == pytest.approx([u["calibration"]["position"], u["calibration"]["rotation"]])
        for q in ("position", "rotation"):
            assert 0 <= u[q]["within_1_sigma"] <= u[q]["within_2_sigma"] <= 1 and u[q]["median_sigma"] > 0
        assert re.search(rf"{label}'s per-image sigmas \(aleatoric head, trained `decoupled`; calibrated on the "
                         rf"\d+ validation images by the factors [\d.]+ \(position\) and [\d.]+ \(rotation\)\)", md), label
    for model in ("jsla", "posenet", "poselstm"):
        assert (out / model / "run" / "best.pt").is_file() and (out / model / "eval" / "results.json").is_file()
        assert Image.open(out / model / "eval" / "trajectory.png").size[0] > 100
    assert Image.open(out / "jsla" / "eval" / "layer_usage.png").size[0] > 100
    assert list((out / "jsla" / "eval" / "attention").glob("*.png"))
    assert (out / "data" / "TrainSplit.txt").is_file() and (out / "data" / "scene.json").is_file()
    # the frame-by-frame part: chosen layers per step, errors and time per frame
    rows = [line.split() for line in proc.stdout.splitlines() if re.match(r"seq-\d+/frame-\d+", line)]
    assert len(rows) == 3
    for row in rows:
        assert all(name in ("3b", "4c", "4e", "5b") for name in row[1:4])
        assert float(row[4]) >= 0 and 0 <= float(row[5]) <= 180 and float(row[6]) > 0
    assert re.search(r"median time per frame: [\d.]+ ms", proc.stdout)
    # the end: the test trajectory through the ROS node (make test installs ROS), the same poses as evaluate
    assert "ROS replay: 8/8 test images answered by localize_node" in proc.stdout, proc.stdout[-3000:]
    ros = summary["ros"]
    assert ros["answered"] == ros["frames"] == summary["jsla"]["count"] == 8
    assert ros["median_t_m"] == pytest.approx(summary["jsla"]["median_t_m"], abs=1e-4)
    assert ros["median_r_deg"] == pytest.approx(summary["jsla"]["median_r_deg"], abs=1e-2)
    assert 0 < ros["overhead_p50_ms"] < ros["latency_p50_ms"]
    assert "ROS replay of the test trajectory" in (out / "summary.md").read_text()
    assert json.loads((out / "ros_replay.json").read_text())["answered"] == 8

    # a second run reuses the rendered scene and retrains from scratch
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the synthetic scene" in again.stderr
