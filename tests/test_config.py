"""Config dataclasses: the documented defaults, YAML round trip, errors that name the field."""
from __future__ import annotations

import pytest

from jsla_fast import ConfigError, JSLAConfig


def test_spec_defaults():
    cfg = JSLAConfig()
    assert cfg.task == "pose" and cfg.steps == 3
    assert cfg.layers == ("3b", "4c", "4e", "5b") and cfg.layer_channels == (480, 512, 832, 1024)
    assert cfg.hidden_channels == 96 and cfg.kernel_sizes == (1, 3, 5, 7)
    assert cfg.input_channels == 128 and cfg.grid == 14 and cfg.gate_embedding == 32
    assert (cfg.tau_start, cfg.tau_end) == (1.0, 0.1) and cfg.attention_slope == 0.01
    assert cfg.attention_kernel_sizes == (1, 3, 5) and cfg.attention_width == 16
    scene = JSLAConfig(task="scene")
    assert scene.steps == 2 and scene.num_classes == 67 and scene.output_dim == 67


def test_yaml_round_trip(tmp_path):
    cfg = JSLAConfig(task="scene", num_classes=10, layers=("5b", "3b", "4e"), steps=4, aux_heads=True,
                     loss={"beta": 250.0, "learned_weighting": True})
    assert cfg.layers == ("3b", "4e", "5b")  # network order
    path = tmp_path / "cfg.yaml"
    cfg.save_yaml(path)
    assert JSLAConfig.from_yaml(path) == cfg


def test_partial_yaml_uses_defaults(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("layers: [3b, 4e, 5b]\nloss:\n  beta: 120\n")
    cfg = JSLAConfig.from_yaml(path)
    assert cfg.layers == ("3b", "4e", "5b") and cfg.loss.beta == 120 and cfg.steps == 3


@pytest.mark.parametrize("text,match", [
    ("stepz: 3\n", r"unknown config field\(s\) \['stepz'\]"),
    ("loss:\n  bta: 3\n", r"loss\.bta"),
    ("steps: 7\n", r"'steps' = 7 .*1 to 5"),
    ("layers: [3b, 6a]\n", r"'layers'.*subset"),
    ("task: depth\n", r"'task' = 'depth'"),
    ("kernel_sizes: [1, 2]\n", r"odd kernel sizes"),
    ("- 1\n- 2\n", r"must hold a mapping"),
    ("steps: [\n", r"not valid YAML"),
])
def test_bad_config_files_are_explained(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        JSLAConfig.from_yaml(path)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        JSLAConfig.from_yaml(tmp_path / "nope.yaml")


def test_paper_preset_uses_the_scene_beta_or_keeps_the_learned_weighting():
    from jsla_fast.config import PAPER_BETA, RunConfig, apply_preset, scene_key

    assert scene_key("/data/Cambridge/KingsCollege/") == "kingscollege"
    assert scene_key("St_Marys-Church") == "stmaryschurch" and PAPER_BETA["stmaryschurch"] == 250.0
    cfg = RunConfig.from_dict({"data": {"resize": 64, "crop": 48}, "train": {"batch_size": 8, "lr": 1e-3}})
    said = apply_preset(cfg, "paper", "/data/ShopFacade")
    assert (cfg.data.resize, cfg.data.crop, cfg.train.batch_size, cfg.train.lr) == (256, 224, 40, 1e-4)
    assert (cfg.model.loss.learned_weighting, cfg.model.loss.beta) == (False, 100.0)
    assert "fixed beta = 100 for scene 'shopfacade'" in said[-1]
    other = RunConfig()
    said = apply_preset(other, "paper", "/data/7scenes/chess")
    assert other.model.loss.learned_weighting and "no published beta for scene 'chess'" in said[-1]
    assert "pass --beta B" in said[-1] and "7-Scenes 120-750" in said[-1]
    with pytest.raises(ConfigError, match="unknown preset 'fast'; use one of"):
        apply_preset(RunConfig(), "fast")


def test_training_clips_gradients_by_default_and_rejects_a_bad_norm(tmp_path):
    from jsla_fast.config import RunConfig, TrainConfig

    assert TrainConfig().grad_clip == 1.0
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  grad_clip: null\n")
    assert RunConfig.from_yaml(path).train.grad_clip is None  # how a user turns it off
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match=rf"train.grad_clip = {bad} must be a positive gradient norm, or null"):
            TrainConfig(grad_clip=bad)
