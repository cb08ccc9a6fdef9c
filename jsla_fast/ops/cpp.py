"""The C++ CPU backend: loads the extension ``jsla_fast._C`` (which defines ``torch.ops.jsla.*``)
and registers the ops' fake kernels (shapes for torch.compile / export) and autograd formulas.

The package imports without the extension; :func:`unavailable_reason` then says why and how to
build it, and ``backend="cpp"`` raises that message.
"""
from __future__ import annotations

import importlib

import torch

from .backward import register_autograd

_BUILD_HINT = ("build it with `pip install --no-build-isolation -e .` (or `python setup.py build_ext --inplace`) "
               "in the jsla_fast checkout, with torch installed and a C++ compiler on PATH")


def _load() -> str | None:
    try:
        importlib.import_module("jsla_fast._C")
    except ImportError as e:
        return f"the C++ extension jsla_fast._C is not built or does not load ({e}); {_BUILD_HINT}"
    return None


_UNAVAILABLE = _load()


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the cpp backend can run, else why not and what to do."""
    return _UNAVAILABLE


def attention(feat, eh, weight, bias, slope):
    return torch.ops.jsla.attention(feat, eh, weight, bias, float(slope))


def convlstm_step(x, h, c, weights, biases):
    return torch.ops.jsla.convlstm_step(x, h, c, list(weights), list(biases))


def _register() -> None:
    @torch.library.register_fake("jsla::attention")
    def _(feat, eh, weight, bias, slope):
        return torch.empty_like(feat), feat.new_empty(feat.shape[0], 1, *feat.shape[2:])

    @torch.library.register_fake("jsla::convlstm_step")
    def _(x, h, c, weights, biases):
        return torch.empty_like(h), torch.empty_like(h)

    register_autograd("jsla::attention", "jsla::convlstm_step")


if _UNAVAILABLE is None:
    _register()
