"""Shared fixtures. Every random input is drawn fresh from a seed printed on failure, so a failing
case can be replayed with ``JSLA_TEST_SEED=<seed>``."""
from __future__ import annotations

import os
import random

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
# Without a GPU the Triton kernels run in Triton's interpreter (SPEC §3); it is chosen when a kernel
# module is imported, so set it before any test imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skipped without it (run them with `pytest -m gpu` on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed(request) -> int:
    value = int(os.environ.get("JSLA_TEST_SEED", random.randrange(2**31)))
    request.node.user_properties.append(("seed", value))
    torch.manual_seed(value)
    return value


def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None:
        for name, value in item.user_properties:
            if name == "seed":
                item.add_report_section("call", "seed", f"replay with JSLA_TEST_SEED={value}")


@pytest.fixture
def images(seed):
    """Four normalised 224x224 images with distinct content."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 224, 224, generator=g)


def make_diverse_selector(model, images: torch.Tensor, seed: int) -> None:
    """Make different images choose different layers at step 1, as a trained model may.

    Random init gives nearly equal h0 for all images, so the selector's BN is calibrated on
    this batch (what training would do) and its output layer is drawn large."""
    g = torch.Generator().manual_seed(seed)
    sel = model.select_layer
    with torch.no_grad():
        feats = model.backbone(images)
        h0, _ = model.initial_state([feats[n] for n in model.config.layers])
        e = sel.fc1(h0.mean(dim=(2, 3)))
        sel.bn.running_mean.copy_(e.mean(0))
        sel.bn.running_var.copy_(e.var(0) + 1e-6)
        sel.fc2.weight.copy_(torch.randn(sel.fc2.weight.shape, generator=g) * 5)
        sel.fc2.bias.zero_()


def randomise_batchnorm(model: torch.nn.Module, gen: torch.Generator, keep=()) -> None:
    """Running statistics and affine parameters away from the identity, as after training
    (except the modules in ``keep``)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) and not any(m is k for k in keep):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def force_layer(model, layer: int) -> None:
    """Every sample picks candidate ``layer`` at every step."""
    with torch.no_grad():
        model.select_layer.fc2.weight.zero_()
        model.select_layer.fc2.bias.zero_()
        model.select_layer.fc2.bias[layer] = 1.0
