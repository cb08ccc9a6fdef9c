"""The one model interface every model of the pipeline implements (docs/DESIGN.md, "Models"),
and what every model returns.

``train``, ``checkpoint``, ``calibrate``, ``uncertainty``, ``export``, the runtime and the bench
talk to models only through :class:`Model`, whose parts are declared there: they never probe for
attributes. A new model subclasses it, sets ``kind`` and the declared parts, and adds itself to
:data:`jsla_fast.model.registry.MODELS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..checkpoint import CheckpointError, checkpoint_config, load_weights, read_checkpoint
from ..config import ModelConfig
from ..normalization import Normalization
from .pose_head import PoseDecoder, PoseHead


@dataclass
class ModelOutput:
    """What every model returns. ``pose`` is [B,7] (x,y,z, unit qw,qx,qy,qz with qw >= 0) for
    the pose task, ``logits`` [B,num_classes] for the scene task; the other is None. Models
    without layer attention return ``layers`` [B,0] and no maps."""

    pose: torch.Tensor | None
    logits: torch.Tensor | None
    layers: torch.Tensor  #: [B,N] index into ``config.layers`` of the layer chosen per step
    attention: list[torch.Tensor]  #: N maps [B,1,h,w], each summing to 1 over h*w (empty in a static graph)
    selection_logits: list[torch.Tensor]  #: N tensors [B,K], the layer-selection scores
    pose_raw: torch.Tensor | None = None  #: [B,7] with the quaternion before normalisation (for losses)
    aux: list[torch.Tensor] = field(default_factory=list)  #: per-step head outputs, when enabled
    #: ``uncertainty="aleatoric"``: [B,6] per-image log-variances, position x,y,z (m^2) and rotation
    #: about x,y,z (rad^2); None otherwise
    log_var: torch.Tensor | None = None
    #: static graph only: per step, every candidate layer's map [B,1,h_i,w_i]; sample b's map at
    #: step t is ``branch_attention[t][layers[b, t]][b]``
    branch_attention: list[list[torch.Tensor]] = field(default_factory=list)


#: the name ModelOutput had when JSLA was the only model; kept for user code
JSLAOutput = ModelOutput


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d | nn.Linear, bn: nn.BatchNorm2d | nn.BatchNorm1d) -> None:
    """Make ``conv`` compute ``bn(conv(x))`` (eval statistics); the caller then drops ``bn``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight.mul_(scale.view(shape))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    conv.bias = nn.Parameter(new_bias, requires_grad=False)


def fuse_bn(owner: nn.Module, layer: nn.Conv2d | nn.Linear) -> int:
    """Fold ``owner.bn`` into ``layer`` (the layer it follows) and drop it; 1 when there was one."""
    if not isinstance(owner.bn, nn.modules.batchnorm._BatchNorm):
        return 0
    fold_conv_bn(layer, owner.bn)
    owner.bn = nn.Identity()
    return 1


class Fusable:
    """A module that can fold itself for inference (BatchNorm into the layer before it, a chain of
    linear maps into one); exact in eval. :meth:`Model.fuse` calls every one, as timm's
    ``reparameterize_model`` does."""

    def fuse(self) -> int:
        """Fold in place; returns how many BatchNorm layers were folded away."""
        raise NotImplementedError


class Model(nn.Module):
    """``model(images [B,3,H,W], generator=None) -> ModelOutput``, images normalised as recorded
    in ``normalization`` (set by training and checkpoints).

    Every model is ``backbone`` -> its own middle -> ``head(dropout(features))``, and a pose model
    decodes the head's output with ``pose_decoder``. Each subclass's ``__init__`` sets the parts
    declared below (tests/test_architecture.py checks every registered kind, both tasks)."""

    kind: ClassVar[str] = ""  #: the registry key (``--model`` of train, stored in checkpoints)
    #: whether the model has a static form without data-dependent control flow
    #: (``static_graph = True``), what ONNX export and CUDA graphs capture
    has_static_form: ClassVar[bool] = False
    #: the Gumbel temperature for models that anneal one (logged by training), else None
    tau: float | None = None

    config: ModelConfig
    normalization: Normalization | None  #: the input preprocessing (None until trained or loaded)
    #: GoogLeNet: ``images -> {layer name: feature map}``; pretrained weights load into it, and the
    #: CPU Localizer may replace it by an executor's module that returns the same
    backbone: nn.Module
    dropout: nn.Dropout  #: on the head's input: what training drops and test-time MC dropout samples
    head: PoseHead  #: the final FC: the pose (+ log-variances) or the class logits
    #: pose models: turns the head's output into the pose (position standardisation, unit
    #: quaternion, log-variances and their calibration); None: a scene model
    pose_decoder: PoseDecoder | None

    def __init__(self, config: ModelConfig | None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.normalization = None
        self.static_graph = False
        self.backend = "reference"

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The names behind the indices in ``ModelOutput.layers``; () for models without layer attention."""
        return ()

    def set_backend(self, name: str) -> "Model":
        """Run the fused ops with backend ``name`` (see :mod:`jsla_fast.ops.dispatch`; 'auto' picks
        the fastest one for the input's device at each call). Raises if it can't run here. Models
        without fused ops check the name and run PyTorch's ops whatever it is."""
        from ..ops import NAMES, resolve

        if name not in NAMES:
            raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
        if name != "auto":
            resolve(name, next(self.parameters()).device)  # fail now, with the reason
        self.backend = name
        return self

    def set_progress(self, progress: float) -> float | None:
        """Training progress in [0, 1] for models with annealed parts; returns the new ``tau``."""
        return None

    def pose_heads(self) -> list[PoseHead]:
        """The final layers whose outputs are poses (started at the training set's mean pose)."""
        return [self.head]

    def fuse(self) -> int:
        """Fold every :class:`Fusable` part for inference (eval mode; changes the model in place,
        its parameters must not change afterwards); returns how many BatchNorm layers were folded."""
        return sum(m.fuse() for m in self.modules() if isinstance(m, Fusable))

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Model":
        """The model saved at ``path`` in eval mode; raises when it holds another kind of model
        (``jsla_fast.load_checkpoint`` builds whichever kind a file holds)."""
        return cls.from_payload(read_checkpoint(path, map_location), path).to(map_location)

    @classmethod
    def from_payload(cls, payload: dict, path: str | Path) -> "Model":
        """The model of a payload :func:`jsla_fast.checkpoint.read_checkpoint` returned (for callers
        that also want its ``extra`` without reading the file twice); ``path`` names it in errors."""
        kind = payload.get("model", "jsla")
        if kind != cls.kind:
            raise CheckpointError(path, f"holds a {kind!r} model, not {cls.__name__}; use jsla_fast.load_checkpoint")
        model = cls(checkpoint_config(payload, path))
        load_weights(model, payload, path)
        return model.eval()
