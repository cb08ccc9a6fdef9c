"""evaluate and predict on checkpoints from short real training runs."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data import mit67, seven_scenes
from jsla_fast import load_checkpoint
from jsla_fast.config import RunConfig
from jsla_fast.data import load_image, open_dataset
from jsla_fast.train import train

TINY = {"model": {"steps": 2, "dropout": 0.0, "aux_heads": True}, "data": {"resize": 30, "crop": 24, "workers": 0},
        "train": {"epochs": 1, "batch_size": 2, "lr": 0.001}}


@pytest.fixture(scope="module")
def pose_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose")
    data = seven_scenes(root / "data", np.random.default_rng(0))
    best = train(RunConfig.from_dict(TINY), data, "7scenes", root / "run", "jsla", device="cpu")
    return data, best


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)


def test_evaluate_writes_metrics_plots_and_overlays(pose_run, tmp_path):
    data, best = pose_run
    out = tmp_path / "eval"
    proc = run("jsla_fast.evaluate", "--checkpoint", str(best), "--data", str(data), "--format", "7scenes",
               "--out", str(out), "--overlays", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["count"] == 4 and results["split"] == "test"
    # the medians agree with the per-image errors written beside them
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert results["median_t_m"] == pytest.approx(float(np.median([float(r["t_err_m"]) for r in rows])), abs=1e-3)
    assert len(results["layer_usage"]) == 2 and sum(results["layer_usage"][0].values()) == pytest.approx(1.0)
    assert len(results["per_step"]) == 2 and "median_t_m" in results["per_step"][0]
    for name in ("layer_usage.png", "trajectory.png"):
        assert Image.open(out / name).size[0] > 100
    overlays = sorted((out / "attention").glob("*.png"))
    assert len(overlays) == 2
    assert Image.open(overlays[0]).size == (24 * 3, 24)  # the crop, then one overlay per step


def test_predict_matches_the_model_and_writes_overlays(pose_run, tmp_path):
    data, best = pose_run
    proc = run("jsla_fast.predict", "--checkpoint", str(best), str(data / "seq-02"), "--overlay", str(tmp_path / "ov"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 4 and all(len(line["layers"]) == 2 and line["ms"] > 0 for line in lines)
    model = load_checkpoint(best)
    dataset = open_dataset(data, "7scenes", "test", normalization=model.normalization)
    with torch.inference_mode():
        expect = model(torch.stack([dataset[i][0] for i in range(4)])).pose.double()
    for i, line in enumerate(lines):
        assert line["image"] == str(dataset.records.paths[i])
        got = torch.tensor(line["position"] + line["orientation_wxyz"], dtype=torch.float64)
        torch.testing.assert_close(got, expect[i], atol=1e-5, rtol=0)
        assert line["orientation_xyzw"] == line["orientation_wxyz"][1:] + line["orientation_wxyz"][:1]
    assert len(list((tmp_path / "ov").glob("*.attention.png"))) == 4


def test_bad_inputs_to_predict_and_evaluate(pose_run, tmp_path):
    data, best = pose_run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    good = data / "seq-02" / "frame-000000.color.png"
    proc = run("jsla_fast.predict", "--checkpoint", str(best), str(good), str(broken))
    assert proc.returncode == 2 and "broken.png is unreadable" in proc.stderr
    proc = run("jsla_fast.predict", "--checkpoint", str(best), str(good), str(broken), "--skip-bad")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1 and "skipped 1 unreadable" in proc.stderr
    proc = run("jsla_fast.predict", "--checkpoint", str(tmp_path / "none.pt"), str(good))
    assert proc.returncode == 2 and "none.pt: file does not exist" in proc.stderr
    scenes = mit67(tmp_path / "mit", np.random.default_rng(0))
    proc = run("jsla_fast.evaluate", "--checkpoint", str(best), "--data", str(scenes), "--format", "mit67",
               "--out", str(tmp_path / "e"))
    assert proc.returncode == 2 and "is a pose model but --format mit67 is a scene dataset" in proc.stderr


def test_scene_model_evaluate_and_predict(tmp_path):
    data = mit67(tmp_path / "mit", np.random.default_rng(1))
    cfg = RunConfig.from_dict({**TINY, "model": {"task": "scene", "steps": 2, "dropout": 0.0}})
    best = train(cfg, data, "mit67", tmp_path / "run", "jsla", device="cpu")
    proc = run("jsla_fast.evaluate", "--checkpoint", str(best), "--data", str(data), "--format", "mit67",
               "--out", str(tmp_path / "e"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert set(results["per_class_accuracy"]) == {"airport_inside", "bookstore", "closet"}
    assert 0.0 <= results["accuracy"] <= 1.0 and results["count"] == 3
    proc = run("jsla_fast.predict", "--checkpoint", str(best), str(data / "Images" / "closet" / "img3.jpg"))
    line = json.loads(proc.stdout)
    assert line["class"] in {"airport_inside", "bookstore", "closet"} and 0 < line["probability"] <= 1
    model = load_checkpoint(best)
    with torch.inference_mode():
        logits = model(model.normalization.prepare(load_image(data / "Images" / "closet" / "img3.jpg"))[None]).logits
    assert line["class_index"] == int(logits.argmax())
