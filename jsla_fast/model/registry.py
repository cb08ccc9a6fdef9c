"""Every model the pipeline trains, saves, loads and exports, by its ``kind``: the one table
``train`` (``--model``), ``checkpoint`` and ``export`` read."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, read_checkpoint
from .base import Model
from .jsla import JSLA
from .poselstm import PoseLSTM
from .posenet import PoseNet

MODELS: dict[str, type[Model]] = {cls.kind: cls for cls in (JSLA, PoseNet, PoseLSTM)}


def model_class(kind: str) -> type[Model]:
    """The class registered as ``kind``; a clear error for anything else."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODELS)}")
    return MODELS[kind]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Model:
    """Build the model a checkpoint describes (any registered kind), load its weights and
    normalisation, and return it in eval mode."""
    return model_from_payload(read_checkpoint(path, map_location), path).to(map_location)


def model_from_payload(payload: dict, path: str | Path) -> Model:
    """The model of a payload :func:`jsla_fast.checkpoint.read_checkpoint` returned, whatever its kind."""
    kind = payload.get("model", "jsla")
    if kind not in MODELS:
        raise CheckpointError(path, f"holds an unknown model kind {kind!r}; this jsla_fast knows {sorted(MODELS)}")
    return MODELS[kind].from_payload(payload, path)
