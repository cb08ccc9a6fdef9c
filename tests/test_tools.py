"""The commands in tools/ that reproduce documented numbers: the demo's settings sweep (its
settings, its decision rule) and the lower-precision accuracy comparison."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.data import seven_scenes
from jsla_fast import JSLA, JSLAConfig, save_checkpoint
from jsla_fast.normalization import Normalization
from jsla_fast.ops.onednn import native_bfloat16

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sweep = tool("demo_sweep")


def test_sweep_settings_apply_to_the_demo_config_and_bad_ones_are_refused():
    cfg = sweep.run_config("jsla", ["model.dropout=0.5", "train.grad_clip=null", "data.random_crop=true"], 3, False)
    assert (cfg.model.dropout, cfg.train.grad_clip, cfg.data.random_crop, cfg.train.seed) == (0.5, None, True, 3)
    demo = sweep.run_config("jsla", [], 0, False)
    from jsla_fast.demo import DEFAULT, demo_config
    assert demo.to_dict() == demo_config(DEFAULT, 0, kind="jsla").to_dict()
    assert sweep.run_config("posenet", [], 0, False).train.lr == DEFAULT["lr"]["posenet"]
    nested = sweep.run_config("jsla", ["model.loss.aleatoric=attenuation", "model.dropout=0.5,model.uncertainty=none"],
                              0, False)
    assert (nested.model.loss.aleatoric, nested.model.dropout, nested.model.uncertainty) == ("attenuation", 0.5, "none")
    assert sweep.variant_value("model.dropout=0.5,model.uncertainty=none") == {"model.dropout": 0.5,
                                                                            "model.uncertainty": "none"}
    assert sweep.value_of("train.grad_clip=null", demo.to_dict()) == 1.0
    with pytest.raises(SystemExit, match="no field model.loss.nothing"):
        sweep.run_config("jsla", ["model.loss.nothing=1"], 0, False)
    with pytest.raises(SystemExit, match="no field model.nothing"):
        sweep.run_config("jsla", ["model.nothing=1"], 0, False)
    with pytest.raises(SystemExit, match="SECTION.FIELD=VALUE"):
        sweep.run_config("jsla", ["model.dropout"], 0, False)
    with pytest.raises(Exception, match="dropout"):  # the config's own validation
        sweep.run_config("jsla", ["model.dropout=1.5"], 0, False)


def _results(scores: dict[str, list[list[float]]]) -> list[dict]:
    """variant -> per scene, the seeds' validation scores."""
    return [{"variant": v, "scene": scene, "seed": scene + i, "val_median_t_m": x, "test_median_t_m": x + 0.1}
            for v, per_scene in scores.items() for scene, xs in zip(sweep.SCENES, per_scene) for i, x in enumerate(xs)]


def test_sweep_rule_adopts_a_clear_gain_rejects_a_clear_loss_and_keeps_the_simpler_on_a_tie():
    variants = ["model.dropout=0.5", "data.random_crop=true", "train.grad_clip=null", "train.lr=1e-3"]
    current = {"model.dropout=0.5": 0.0, "data.random_crop=true": False, "train.grad_clip=null": 1.0,
               "train.lr=1e-3": 5e-4}
    # seeds' ranges: 0.02 on every (setting, scene), so the spread is 0.02 m
    results = _results({
        "demo": [[0.30, 0.32], [0.40, 0.42]],                    # mean 0.36
        "model.dropout=0.5": [[0.25, 0.27], [0.35, 0.37]],       # 0.05 better: adopted
        "data.random_crop=true": [[0.40, 0.42], [0.45, 0.47]],   # 0.075 worse: the demo's value stays
        "train.grad_clip=null": [[0.30, 0.32], [0.39, 0.41]],    # 0.005 better, within the spread: the simpler (no clip)
        "train.lr=1e-3": [[0.29, 0.31], [0.40, 0.42]],           # a tie with no simpler side: the demo's
    })
    simpler = {k: v for k, v in sweep.KNOBS.items() if k in variants}
    d = sweep.decide(results, variants, current, simpler)
    assert d["model.dropout=0.5"]["spread"] == pytest.approx(0.02)
    assert (d["model.dropout=0.5"]["adopted"], d["model.dropout=0.5"]["why"]) == (0.5, "better")
    assert (d["data.random_crop=true"]["adopted"], d["data.random_crop=true"]["why"]) == (False, "better")
    assert (d["train.grad_clip=null"]["adopted"], d["train.grad_clip=null"]["why"]) == (None, "tie")
    assert (d["train.lr=1e-3"]["adopted"], d["train.lr=1e-3"]["why"]) == (5e-4, "tie")
    table = sweep.markdown(results, variants, d, seeds=2)
    assert "| model.dropout=0.5 | 0.250 / 0.270 | 0.350 / 0.370 | 0.310 |" in table


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained JSLA with a small preprocessing, saved as a checkpoint, and a 7-Scenes folder."""
    root = tmp_path_factory.mktemp("dtype")
    data = seven_scenes(root / "data", np.random.default_rng(0))
    torch.manual_seed(0)
    model = JSLA(JSLAConfig(task="pose", grid=7, steps=2, dropout=0.0)).eval()
    norm = Normalization(mean=torch.full((3, 1, 1), 0.5), size=(40, 40), crop=32)
    return save_checkpoint(model, root / "model.pt", normalization=norm), data


def test_dtype_accuracy_compares_the_localizer_in_float32_and_another_dtype(checkpoint):
    path, data = checkpoint
    dtype_accuracy = tool("dtype_accuracy")
    r = dtype_accuracy.compare(str(path), str(data), "7scenes", "float64", batch_size=2)
    assert r["images"] == 4 and set(r["rows"]) == {"float32", "float64"}
    d = r["difference"]
    # the same model in float32 and float64: poses agree to float32 rounding (positions O(10 m))
    assert d["same_layers"] and d["position_max_m"] < 1e-4 and d["rotation_max_deg"] < 1e-3
    assert r["rows"]["float32"]["median_t_m"] == pytest.approx(r["rows"]["float64"]["median_t_m"], abs=1e-4)


def test_dtype_accuracy_bfloat16_runs_or_says_why_not(checkpoint, capsys):
    path, data = checkpoint
    dtype_accuracy = tool("dtype_accuracy")
    rc = dtype_accuracy.main(["--checkpoint", str(path), "--data", str(data), "--dtype", "bfloat16", "--batch-size", "2"])
    out = capsys.readouterr()
    reason = native_bfloat16()
    if reason is None:  # a CPU with AVX512_BF16 or AMX: the comparison runs
        assert rc == 0 and "| bfloat16 |" in out.out
    else:  # anywhere else the Localizer's start-up error, no traceback
        assert rc == 2 and reason in out.err and "Traceback" not in out.err
