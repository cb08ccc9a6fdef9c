"""The C++ CPU backend: loads the extension ``jsla_fast._C`` (which defines ``torch.ops.jsla.*``)
and registers the ops' fake kernels (shapes for torch.compile / export) and autograd formulas.

The package imports without the extension; :func:`unavailable_reason` then says why and how to
build it, and ``backend="cpp"`` raises that message.
"""
from __future__ import annotations

import importlib

import torch

from .backward import attention_backward, convlstm_backward

_BUILD_HINT = ("build it with `pip install --no-build-isolation -e .` (or `python setup.py build_ext --inplace`) "
               "in the jsla_fast checkout, with torch installed and a C++ compiler on PATH")


def _load() -> str | None:
    try:
        importlib.import_module("jsla_fast._C")
    except ImportError as e:
        return f"the C++ extension jsla_fast._C is not built or does not load ({e}); {_BUILD_HINT}"
    return None


_UNAVAILABLE = _load()


def unavailable_reason() -> str | None:
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

    def attention_setup(ctx, inputs, output):
        feat, eh, weight, _, slope = inputs
        ctx.slope = slope
        ctx.save_for_backward(feat, eh, weight, output[1])

    def attention_grad(ctx, g_out, g_alpha):
        feat, eh, weight, alpha = ctx.saved_tensors
        g_feat, g_eh, g_weight, g_bias = attention_backward(feat, eh, weight, alpha, ctx.slope, g_out, g_alpha)
        return g_feat, g_eh, g_weight, g_bias, None

    def convlstm_setup(ctx, inputs, output):
        x, h, c, weights, biases = inputs
        ctx.branches = len(weights)
        ctx.save_for_backward(x, h, c, output[1], *weights, *biases)

    def convlstm_grad(ctx, g_h, g_c):
        x, h, c, c_next, *params = ctx.saved_tensors
        weights, biases = params[:ctx.branches], params[ctx.branches:]
        g_x, g_hp, g_cp, g_w, g_b = convlstm_backward(x, h, c, weights, biases, c_next, g_h, g_c)
        return g_x, g_hp, g_cp, g_w, g_b

    torch.library.register_autograd("jsla::attention", attention_grad, setup_context=attention_setup)
    torch.library.register_autograd("jsla::convlstm_step", convlstm_grad, setup_context=convlstm_setup)


if _UNAVAILABLE is None:
    _register()
