"""Backbone weight loaders, on files the tests write: torchvision state dicts and Caffe pickles."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from jsla_fast.config import layer_shapes
from jsla_fast.model.googlenet import GoogLeNet
from jsla_fast.model.pretrained import WeightsError, load_caffe_googlenet, load_torchvision_googlenet

DATA = Path(__file__).parent / "data"
CLASSIFIER = ("aux1.", "aux2.", "fc.")


def torchvision_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's googlenet(aux_logits=True), dumped from torchvision itself."""
    shapes = {}
    for line in (DATA / "torchvision_googlenet_keys.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ")
            shapes[key] = tuple(int(s) for s in shape.split("x")) if shape else ()
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], g: torch.Generator) -> dict[str, torch.Tensor]:
    return {k: (torch.randint(0, 1000, s, generator=g) if k.endswith("num_batches_tracked")
                else torch.randn(s, generator=g)) for k, s in shapes.items()}


def test_backbone_keys_are_torchvision_keys():
    expected = {k: s for k, s in torchvision_shapes().items() if not k.startswith(CLASSIFIER)}
    ours = {k: tuple(v.shape) for k, v in GoogLeNet().state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize("wrap", ["plain", "state_dict+module"])
def test_torchvision_file_loads_exactly(tmp_path, wrap, seed):
    written = random_state(torchvision_shapes(), torch.Generator().manual_seed(seed))
    obj = written if wrap == "plain" else {"state_dict": {f"module.{k}": v for k, v in written.items()}}
    path = tmp_path / "googlenet.pth"
    torch.save(obj, path)
    model = GoogLeNet()
    report = load_torchvision_googlenet(model, path)
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.skipped) == sorted(k for k in written if k.startswith(CLASSIFIER))
    state = model.state_dict()
    assert len(report.loaded) == len(state)
    for key, value in state.items():
        assert torch.equal(value, written[key]), key


def test_partial_file_reports_missing_and_unexpected(tmp_path, seed):
    written = random_state(torchvision_shapes(), torch.Generator().manual_seed(seed))
    del written["inception4c.branch2.1.conv.weight"]
    written["decoder.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(written, path)
    report = load_torchvision_googlenet(GoogLeNet(), path)
    assert report.missing == ["inception4c.branch2.1.conv.weight"]
    assert report.unexpected == ["decoder.weight"]
    assert "missing 1" in report.summary() and "unexpected 1" in report.summary()
    with pytest.raises(WeightsError, match="missing 1"):
        load_torchvision_googlenet(GoogLeNet(), path, strict=True)


def test_blocks_beyond_the_deepest_layer_are_skipped(tmp_path, seed):
    written = random_state(torchvision_shapes(), torch.Generator().manual_seed(seed))
    path = tmp_path / "g.pth"
    torch.save(written, path)
    model = GoogLeNet(outputs=("3b", "4e"))
    report = load_torchvision_googlenet(model, path)
    assert report.missing == [] and report.unexpected == []
    assert any(k.startswith("inception5b.") for k in report.skipped)


# The Caffe (BVLC/Places) GoogLeNet, Szegedy et al. Table 1: block -> (in, 1x1, 3x3r, 3x3, 5x5r, 5x5, pool)
CAFFE_BLOCKS = {
    "3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


def caffe_layers() -> dict[str, tuple[tuple[int, ...], str]]:
    """Caffe layer name -> (weight shape, the torchvision-style module it must land in)."""
    layers = {"conv1/7x7_s2": ((64, 3, 7, 7), "conv1.conv"), "conv2/3x3_reduce": ((64, 64, 1, 1), "conv2.conv"),
              "conv2/3x3": ((192, 64, 3, 3), "conv3.conv")}
    for b, (cin, c1, c3r, c3, c5r, c5, cp) in CAFFE_BLOCKS.items():
        m = f"inception{b}"
        layers.update({
            f"inception_{b}/1x1": ((c1, cin, 1, 1), f"{m}.branch1.conv"),
            f"inception_{b}/3x3_reduce": ((c3r, cin, 1, 1), f"{m}.branch2.0.conv"),
            f"inception_{b}/3x3": ((c3, c3r, 3, 3), f"{m}.branch2.1.conv"),
            f"inception_{b}/5x5_reduce": ((c5r, cin, 1, 1), f"{m}.branch3.0.conv"),
            f"inception_{b}/5x5": ((c5, c5r, 5, 5), f"{m}.branch3.1.conv"),
            f"inception_{b}/pool_proj": ((cp, cin, 1, 1), f"{m}.branch4.1.conv"),
        })
    return layers


def write_caffe_pickle(path: Path, rng: np.random.Generator, protocol: int) -> dict[bytes, np.ndarray]:
    data: dict[bytes, np.ndarray] = {}
    for name, (shape, _) in caffe_layers().items():
        data[f"{name}_0".encode()] = rng.standard_normal(shape).astype(np.float32)
        data[f"{name}_1".encode()] = rng.standard_normal(shape[0]).astype(np.float32)
    data[b"loss3/classifier_0"] = rng.standard_normal((365, 1024)).astype(np.float32)
    data[b"loss3/classifier_1"] = rng.standard_normal(365).astype(np.float32)
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return data


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_caffe_pickle_loads_exactly(tmp_path, protocol, seed):
    path = tmp_path / "places-googlenet.pickle"
    written = write_caffe_pickle(path, np.random.default_rng(seed), protocol)
    model = GoogLeNet(style="caffe")
    report = load_caffe_googlenet(model, path)
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]
    state = model.state_dict()
    for name, (_, module) in caffe_layers().items():
        assert torch.equal(state[f"{module}.weight"], torch.from_numpy(written[f"{name}_0".encode()]))
        assert torch.equal(state[f"{module}.bias"], torch.from_numpy(written[f"{name}_1".encode()]))
    feats = model.eval()(torch.randn(1, 3, 224, 224))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "3b": (480, 28, 28), "4c": (512, 14, 14), "4e": (832, 14, 14), "5b": (1024, 7, 7)} == layer_shapes(224)


def test_caffe_pickle_needs_caffe_style(tmp_path, seed):
    path = tmp_path / "places.pickle"
    write_caffe_pickle(path, np.random.default_rng(seed), 2)
    with pytest.raises(WeightsError, match="backbone_style: caffe"):
        load_caffe_googlenet(GoogLeNet(style="torchvision"), path)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_caffe_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({b"conv1/7x7_s2_0": _RunsCode(marker)}, protocol=2))
    with pytest.raises(WeightsError, match=r"unsafe pickle.*refusing to load .*system"):
        load_caffe_googlenet(GoogLeNet(style="caffe"), path)
    assert not marker.exists()


def test_broken_weight_files_are_explained(tmp_path, seed):
    path = tmp_path / "cut.pickle"
    write_caffe_pickle(path, np.random.default_rng(seed), 2)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WeightsError, match=f"{path}: truncated or corrupt"):
        load_caffe_googlenet(GoogLeNet(style="caffe"), path)
    with pytest.raises(WeightsError, match="file not found"):
        load_torchvision_googlenet(GoogLeNet(), tmp_path / "none.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a readable torch state-dict"):
        load_torchvision_googlenet(GoogLeNet(), bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.conv.weight": torch.zeros(64, 3, 5, 5)}, wrong)
    with pytest.raises(WeightsError, match=r"conv1.conv.weight has shape \(64, 3, 5, 5\)"):
        load_torchvision_googlenet(GoogLeNet(), wrong)
