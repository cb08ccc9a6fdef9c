"""Checkpoints: round trip, atomic writes, and clear refusals of broken or unsafe files."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import jsla_fast.checkpoint as ckpt
from jsla_fast import JSLA, CheckpointError, JSLAConfig, Normalization, load_checkpoint, save_checkpoint


@pytest.fixture
def saved(tmp_path):
    cfg = JSLAConfig(layers=("3b", "4e", "5b"), steps=2, aux_heads=True, loss={"beta": 250.0})
    model = JSLA(cfg).eval()
    with torch.no_grad():  # make BN statistics non-trivial so they must be saved too
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    model.normalization = Normalization(torch.rand(3, 256, 341), torch.tensor([0.2, 0.3, 0.4]).view(3, 1, 1))
    path = save_checkpoint(model, tmp_path / "run" / "model.pt", extra={"epoch": 3})
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded = JSLA.from_checkpoint(path)
    assert not loaded.training and loaded.config == model.config
    x = torch.randn(2, 3, 224, 224)
    a, b = model(x), loaded(x)
    assert torch.equal(a.pose, b.pose) and torch.equal(a.layers, b.layers)
    assert all(torch.equal(p, q) for p, q in zip(a.attention, b.attention))
    assert torch.equal(loaded.normalization.mean, model.normalization.mean)
    assert torch.equal(loaded.normalization.std, model.normalization.std)
    assert ckpt.read_checkpoint(path)["extra"] == {"epoch": 3}
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary files left


def test_truncated_checkpoint_is_explained(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the bare pickle below is protocol 4
def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "version": 1, "config": {}, "state_dict": {}, "x": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    raw = tmp_path / "evil.pkl"  # a bare pickle, not even a torch zip
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_missing_and_foreign_files_are_explained(tmp_path, saved):
    model, path = saved
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
    plain = tmp_path / "weights.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a jsla_fast checkpoint"):
        load_checkpoint(plain)


def edit(path: Path, change) -> Path:
    """A deliberate change to a saved payload, re-stamped with its checksum (not damage)."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    payload["checksum"] = ckpt.checksum(payload)
    torch.save(payload, path)
    return path


def test_incompatible_checkpoints_are_explained(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        load_checkpoint(edit(path, lambda p: p.update(version=99)))
    edit(path, lambda p: p.update(version=1))
    with pytest.raises(CheckpointError, match=r"incompatible config: unknown config field\(s\) \['flux'\]"):
        load_checkpoint(edit(path, lambda p: p["config"].update(flux=1)))
    edit(path, lambda p: p["config"].pop("flux"))
    with pytest.raises(CheckpointError, match="weights do not match the config"):
        load_checkpoint(edit(path, lambda p: p["config"].update(layers=["3b", "4c", "4e", "5b"])))
    edit(path, lambda p: p["config"].update(layers=["3b", "4e", "5b"]))
    with pytest.raises(CheckpointError, match="malformed normalization"):
        load_checkpoint(edit(path, lambda p: p.update(normalization={"mean": [1.0, 2.0]})))


def test_write_is_atomic(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("kind", ["posenet", "poselstm"])
def test_baseline_round_trip(tmp_path, kind):
    from jsla_fast.model import MODELS

    model = MODELS[kind](JSLAConfig(task="scene", num_classes=4)).eval()
    path = save_checkpoint(model, tmp_path / f"{kind}.pt")
    loaded = load_checkpoint(path)
    assert type(loaded) is MODELS[kind]
    x = torch.randn(2, 3, 224, 224)
    assert torch.equal(model(x).logits, loaded(x).logits)
    with pytest.raises(CheckpointError, match=f"holds a '{kind}' model, not JSLA"):
        JSLA.from_checkpoint(path)


def test_checkpoints_from_before_attention_rescale_keep_the_papers_o(tmp_path):
    model = JSLA(JSLAConfig(task="pose", grid=7)).eval()
    path = save_checkpoint(model, tmp_path / "new.pt")
    assert load_checkpoint(path).config.attention_rescale
    payload = torch.load(path, weights_only=True)
    del payload["config"]["attention_rescale"]  # as written before the field existed (format 1)
    payload["version"] = 1
    del payload["checksum"]
    torch.save(payload, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert not old.config.attention_rescale and not old.branches[0].rescale


def test_a_damaged_byte_is_refused_naming_the_file(saved):
    """One byte flipped a third of the way into the file: the weights' bytes no longer match the
    checksum stored at saving (or the pickle around them no longer parses)."""
    _, path = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    damaged = path.with_name("damaged.pt")
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged: its contents do not match the checksum") as info:
        load_checkpoint(damaged)
    assert str(damaged) in str(info.value)
    load_checkpoint(path)  # the original still loads


def test_files_without_a_checksum_load_with_a_warning(saved, tmp_path, caplog):
    model, path = saved
    payload = torch.load(path, weights_only=True)
    payload["version"] = 1  # what save_checkpoint wrote before format 2
    del payload["checksum"]
    torch.save(payload, tmp_path / "v1.pt")
    with caplog.at_level("WARNING", logger="jsla_fast.checkpoint"):
        loaded = load_checkpoint(tmp_path / "v1.pt")
    assert "format version 1 carries no checksum" in caplog.text and str(tmp_path / "v1.pt") in caplog.text
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(loaded(x).pose, model(x).pose)


def test_a_model_without_preprocessing_is_saved_with_the_documented_default(tmp_path, caplog):
    from jsla_fast.normalization import DEFAULT_CROP, DEFAULT_MEAN, DEFAULT_SHORTER

    model = JSLA(JSLAConfig(task="pose")).eval()
    assert model.normalization is None  # built in Python, trained with one's own loop
    with caplog.at_level("INFO", logger="jsla_fast.checkpoint"):
        path = save_checkpoint(model, tmp_path / "m.pt")
    assert "saved with the default: shorter side to 256, per-channel mean (0.485, 0.456, 0.406)" in caplog.text
    norm = load_checkpoint(path).normalization
    assert norm.shorter == DEFAULT_SHORTER and norm.crop == DEFAULT_CROP and norm.size is None and norm.std is None
    assert norm.mean.flatten().tolist() == pytest.approx(DEFAULT_MEAN)
    # any camera: the shorter side to 256 (aspect kept), then the centre 224 crop
    image = torch.rand(3, 480, 640)
    prepared = norm.prepare(image)
    assert prepared.shape == (3, 224, 224)
    from jsla_fast.normalization import centre_crop, resize_image

    want = centre_crop(resize_image(image, (256, 341)) - torch.tensor(DEFAULT_MEAN).view(3, 1, 1), 224)
    torch.testing.assert_close(prepared, want, rtol=0, atol=0)
    # an explicit normalisation wins and round-trips
    mine = Normalization(torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.25), shorter=128, crop=112)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "mine.pt", normalization=mine)).normalization
    assert (loaded.shorter, loaded.crop) == (128, 112) and torch.equal(loaded.std, mine.std)
    # a file written before the default existed (no normalisation) gets it on loading, with a warning
    edit(path, lambda p: p.update(normalization=None))
    with caplog.at_level("WARNING", logger="jsla_fast.checkpoint"):
        assert load_checkpoint(path).normalization.shorter == DEFAULT_SHORTER
    assert "records no input preprocessing; using the default" in caplog.text
    with pytest.raises(ValueError, match="'shorter' .* needs size None and a per-channel mean"):
        Normalization(torch.rand(3, 8, 8), size=(8, 8), shorter=128)


def test_checkpoints_from_before_decoupled_variances_and_mc_calibration_still_load(tmp_path):
    """An aleatoric checkpoint of the previous release: one 13-output FC trained by the likelihood,
    no ``loss.aleatoric`` in its config and no MC-calibration buffers. It loads as what it was."""
    from jsla_fast.checkpoint import checksum
    from jsla_fast.config import LossConfig

    torch.manual_seed(0)
    model = JSLA(JSLAConfig(task="pose", grid=7, uncertainty="aleatoric",
                            loss=LossConfig(aleatoric="attenuation"))).eval()
    payload = torch.load(save_checkpoint(model, tmp_path / "new.pt"), weights_only=True)
    del payload["config"]["loss"]["aleatoric"]
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if ".mc_" not in k}
    payload["checksum"] = checksum(payload)
    torch.save(payload, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.config.loss.aleatoric == "attenuation" and old.head.out_features == 13 and old.head.variance is None
    assert int(old.pose_decoder.mc_samples) == 0
    x = torch.randn(1, 3, 96, 96)
    assert torch.equal(old(x).log_var, model(x).log_var)
