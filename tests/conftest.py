"""Shared fixtures. Every random input is drawn fresh from a seed printed on failure, so a failing
case can be replayed with ``JSLA_TEST_SEED=<seed>``."""
from __future__ import annotations

import os
import random

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
# Without a GPU the Triton kernels run in Triton's interpreter (docs/DESIGN.md, "Backends"); it is chosen when a kernel
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
