"""Who runs the backbone inside :class:`jsla_fast.runtime.Localizer` on the CPU: one table.

    onednn       each conv + bias + ReLU one oneDNN primitive with its weights reordered once into
                 oneDNN's blocked layout, and each Inception block's three 1x1 convs on the same
                 input merged into one: no per-call weight reorder, no separate ReLU pass, one
                 larger GEMM instead of three small ones; the max pools on the C++ kernel
                 (csrc/cpu/maxpool.cpp) when the extension is built (no extra dependency)
    torchscript  frozen TorchScript graph: what the Localizer used before; its oneDNN calls reorder
                 every conv's weights on every call and run ReLU as a separate pass
    inductor     torch.compile with freezing and the C++ wrapper: needs a C++ compiler at run time
                 and compiles for 20-40 s at start (2 cores), again for each new input shape
    openvino     the backbone converted to OpenVINO and compiled for this CPU (``pip install
                 openvino``), in f32 or, for a bfloat16 Localizer, in bf16
    eager        the PyTorch module as it is
    auto         the first available of AUTO_ORDER

Only the backbone moves: the recurrent part (layer choice per sample, spatial attention, ConvLSTM)
stays on the fused ops, whose data-dependent layer choice a static graph cannot express without
running every branch. Every executor returns the eager module's ``{layer name: feature map}``;
docs/PERFORMANCE.md ("Backbone executors") has the measurements behind the order.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .ops import onednn
from .ops.onednn import PackedConv

log = logging.getLogger("jsla_fast.executors")


class _Outputs(nn.Module):
    """The backbone with a tuple of its outputs (what tracers and converters take)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.names = tuple(backbone.outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        return tuple(feats[n] for n in self.names)


class FrozenBackbone(nn.Module):
    """The backbone as a frozen TorchScript graph (oneDNN weights prepacked, no Python per layer)."""

    def __init__(self, backbone: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.names = tuple(backbone.outputs)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            self.graph = torch.jit.freeze(torch.jit.trace(_Outputs(backbone).eval(), example))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.graph(x)))


class InductorBackbone(nn.Module):
    """The backbone compiled by Inductor with freezing (weights folded into the graph as constants,
    prepacked for oneDNN) and the C++ wrapper (no Python between kernels). Compiles on the first
    call of each input shape, here at construction for ``example``'s."""

    def __init__(self, backbone: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.names = tuple(backbone.outputs)
        self.compiled = torch.compile(_Outputs(backbone).eval(), dynamic=False,
                                      options={"freezing": True, "cpp_wrapper": True})
        with torch.no_grad():
            self.compiled(example)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.compiled(x)))


class OpenVINOBackbone(nn.Module):
    """The backbone converted to OpenVINO (from the PyTorch module, in float32) and compiled for
    this CPU with the latency hint and torch's thread count; ``precision`` is OpenVINO's
    ``INFERENCE_PRECISION_HINT`` (``f32``, ``bf16`` on a CPU with native bfloat16, None for its
    default). Outputs are
    torch views of OpenVINO's output buffers (no copy), valid until the next call: the recurrent
    part consumes them within the same forward, and one Localizer serves one thread."""

    def __init__(self, backbone: nn.Module, example: torch.Tensor, precision: str | None = "f32") -> None:
        super().__init__()
        import openvino as ov

        self.names = tuple(backbone.outputs)
        self.precision = precision
        source = _Outputs(_float32_copy(backbone)).eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = ov.convert_model(source, example_input=example.float().contiguous(),
                                         input=[ov.PartialShape([-1, 3, -1, -1])])
        self.compiled = compile_openvino(converted, precision)
        self.request = self.compiled.create_infer_request()
        self.dtype = example.dtype

    @property
    def reported_precision(self) -> str:
        return openvino_precision(self.compiled)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = np.ascontiguousarray(x.detach().float().numpy())
        self.request.infer({0: x})
        outs = [torch.from_numpy(self.request.get_output_tensor(i).data) for i in range(len(self.names))]
        return {n: o if o.dtype == self.dtype else o.to(self.dtype) for n, o in zip(self.names, outs)}


def compile_openvino(model, precision: str | None):
    """``model`` (an OpenVINO model or a model file) compiled for this CPU with the latency hint
    and torch's thread count; ``precision``: ``INFERENCE_PRECISION_HINT`` (None: OpenVINO's default)."""
    import openvino as ov

    hint = {} if precision is None else {"INFERENCE_PRECISION_HINT": precision}
    return ov.Core().compile_model(model, "CPU", {**hint, "PERFORMANCE_HINT": "LATENCY",
                                                   "INFERENCE_NUM_THREADS": torch.get_num_threads()})


def openvino_precision(compiled) -> str:
    """The precision a compiled OpenVINO model says it runs (its answer, not our request)."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def _float32_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).float().to(memory_format=torch.contiguous_format)


class PackedConvReLU(nn.Module):
    """``relu(conv(x) + b)`` as one oneDNN primitive on weights packed once for ``input_size``
    (:class:`jsla_fast.ops.onednn.PackedConv`)."""

    def __init__(self, conv: nn.Conv2d, input_size: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise RuntimeError(f"onednn executor: conv with padding {conv.padding!r} ({conv.padding_mode})")
        # a plain attribute, not parameters: the packed weight is an opaque oneDNN tensor that .to(),
        # state_dict and deepcopy must not touch
        self.conv = PackedConv(conv.weight.to(dtype), None if conv.bias is None else conv.bias.to(dtype),
                               conv.padding, conv.stride, conv.dilation, conv.groups, input_size, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MaxPool(nn.Module):
    """An ``nn.MaxPool2d`` (dilation 1, no indices) on the C++ kernel ``torch.ops.jsla.max_pool2d``
    (csrc/cpu/maxpool.cpp, 3x torch's channels-last pool): the same values, channels-last out."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        pair = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]  # noqa: E731
        self.args = (pair(pool.kernel_size), pair(pool.stride or pool.kernel_size), pair(pool.padding),
                     bool(pool.ceil_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.jsla.max_pool2d(x, *self.args)


def _pool(pool: nn.Module) -> nn.Module:
    """``pool`` on the C++ kernel where that computes the same thing, else as it is."""
    from .ops.extension import unavailable_reason

    if (isinstance(pool, nn.MaxPool2d) and unavailable_reason() is None and not pool.return_indices
            and pool.dilation in (1, (1, 1))):
        return MaxPool(pool)
    return pool


def _packed(basic: nn.Module, input_size, dtype) -> PackedConvReLU:
    if not isinstance(basic.bn, nn.Identity):
        raise RuntimeError("onednn executor: fold the BatchNorm layers first (model.fuse())")
    return PackedConvReLU(basic.conv, input_size, dtype)


class PackedInception(nn.Module):
    """An Inception block on packed convs, its three 1x1 convs that read the block's input
    (branch1, and the reductions of branch2 and branch3) merged into one conv whose output is split
    by channel: the same arithmetic per output channel, one GEMM instead of three."""

    def __init__(self, block: nn.Module, input_size: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__()
        firsts = [block.branch1, block.branch2[0], block.branch3[0]]
        if any(not isinstance(b.bn, nn.Identity) for b in firsts):
            raise RuntimeError("onednn executor: fold the BatchNorm layers first (model.fuse())")
        convs = [b.conv for b in firsts]
        merged = nn.Conv2d(convs[0].in_channels, sum(c.out_channels for c in convs), 1)
        with torch.no_grad():
            merged.weight.copy_(torch.cat([c.weight for c in convs]))
            merged.bias.copy_(torch.cat([c.bias if c.bias is not None else torch.zeros(c.out_channels)
                                         for c in convs]))
        self.split = [c.out_channels for c in convs]
        self.reduce = PackedConvReLU(merged, input_size, dtype)
        mid = lambda c: (input_size[0], c, *input_size[2:])  # noqa: E731
        self.conv2 = _packed(block.branch2[1], mid(self.split[1]), dtype)
        self.conv3 = _packed(block.branch3[1], mid(self.split[2]), dtype)
        self.pool = _pool(block.branch4[0])
        self.proj = _packed(block.branch4[1], input_size, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1, r2, r3 = self.reduce(x).split(self.split, dim=1)
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return torch.cat([b1, self.conv2(r2.contiguous(memory_format=layout)),
                          self.conv3(r3.contiguous(memory_format=layout)), self.proj(self.pool(x))], 1)


def onednn_backbone(backbone: nn.Module, example: torch.Tensor) -> nn.Module:
    """``backbone`` (a GoogLeNet with its BatchNorms folded) with every BasicConv2d and Inception
    block replaced in place by :class:`PackedConvReLU` / :class:`PackedInception`, packed for
    ``example``'s shape and dtype."""
    from .model.googlenet import BasicConv2d, Inception

    sizes: dict[nn.Module, tuple[int, ...]] = {}
    targets = [m for m in backbone.modules() if isinstance(m, (BasicConv2d, Inception))]
    if not targets:
        raise RuntimeError(f"onednn executor: {type(backbone).__name__} has no GoogLeNet convs to pack")
    hooks = [m.register_forward_pre_hook(lambda m, args: sizes.__setitem__(m, tuple(args[0].shape)))
             for m in targets]
    try:
        with torch.no_grad():
            backbone(example)
    finally:
        for h in hooks:
            h.remove()
    for name, child in list(backbone.named_children()):
        if isinstance(child, Inception):
            setattr(backbone, name, PackedInception(child, sizes[child], example.dtype))
        elif isinstance(child, BasicConv2d):
            setattr(backbone, name, _packed(child, sizes[child], example.dtype))
        elif isinstance(child, nn.MaxPool2d):
            setattr(backbone, name, _pool(child))
    return backbone


def _openvino_missing() -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "OpenVINO is not installed (pip install openvino)"
    return None


def _compiler_missing() -> str | None:
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "Inductor needs a C++ compiler (g++ or clang++) on PATH at run time"
    return None


@dataclass(frozen=True)
class Executor:
    name: str
    build: Callable[[nn.Module, torch.Tensor], nn.Module | None]  #: (backbone, example) -> module
    unavailable: Callable[[], str | None] = lambda: None


def _openvino(backbone: nn.Module, example: torch.Tensor) -> nn.Module:
    return OpenVINOBackbone(backbone, example, "bf16" if example.dtype == torch.bfloat16 else "f32")


EXECUTORS: dict[str, Executor] = {e.name: e for e in (
    Executor("onednn", onednn_backbone, onednn.unavailable_reason),
    Executor("torchscript", FrozenBackbone),
    Executor("inductor", InductorBackbone, _compiler_missing),
    Executor("openvino", _openvino, _openvino_missing),
    Executor("eager", lambda backbone, example: backbone),
)}
#: 'auto' takes the first available, the measured order on the CPU (docs/PERFORMANCE.md). OpenVINO
#: and Inductor are asked for by name: inside the Localizer neither beat onednn (OpenVINO's own
#: worker threads and torch's compete for the cores between the backbone and the recurrent part),
#: and Inductor compiles for half a minute at every start.
AUTO_ORDER = ("onednn", "torchscript")
NAMES = ("auto", *EXECUTORS)


def resolve_executor(name: str, dtype: torch.dtype) -> Executor:
    """The executor called ``name`` (``auto``: the first available of AUTO_ORDER); a clear error
    naming the value and what to do when it cannot run here."""
    if name == "auto":
        return next(EXECUTORS[n] for n in AUTO_ORDER if EXECUTORS[n].unavailable() is None)
    if name not in EXECUTORS:
        raise ValueError(f"backbone executor {name!r} unknown; choose one of {', '.join(NAMES)}")
    if name == "openvino" and dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"backbone executor 'openvino' runs float32 or bfloat16 Localizers, not {dtype}; "
                         "use backbone='onednn'")
    reason = EXECUTORS[name].unavailable()
    if reason is not None:
        raise RuntimeError(f"backbone executor {name!r} cannot run here: {reason}; "
                           "or use backbone='onednn' (no extra dependency)")
    return EXECUTORS[name]
