"""One-file checkpoints: config, weights, normalisation statistics and a format version.

This module is the file format only; building the model a file names is
:func:`jsla_fast.model.registry.load_checkpoint` (``jsla_fast.load_checkpoint``), or
``JSLA.from_checkpoint`` for one kind.

Written atomically (temporary file in the same folder, fsync, rename), so a crash never leaves a
half-written checkpoint under the final name. Read with ``torch.load(weights_only=True)``, which
refuses any pickle that would construct arbitrary objects or run code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .config import ConfigError, JSLAConfig
from .normalization import Normalization

FORMAT = "jsla_fast.checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"checkpoint {path}: {problem}")
        self.path = str(path)
        self.problem = problem


def save_checkpoint(model, path: str | Path, *, normalization: Normalization | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (any :class:`jsla_fast.model.base.Model`) to ``path`` atomically.

    ``normalization`` defaults to ``model.normalization``; ``extra`` holds further plain data
    (tensors, numbers, strings, lists, dicts), e.g. training state.
    """
    path = Path(path)
    norm = normalization if normalization is not None else model.normalization
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.kind,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalization": None if norm is None else norm.to_dict(),
        "extra": extra or {},
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate the raw checkpoint dict (no model is built)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file does not exist")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, expected a checkpoint file (e.g. RUN/best.pt)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise CheckpointError(path, "refused: the file holds objects other than plain data and tensors "
                                        "(loading it could run code); it is not a jsla_fast checkpoint") from None
        raise CheckpointError(path, f"unreadable, truncated or not a torch file ({type(e).__name__}: "
                                    f"{text.splitlines()[0] if text else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(path, "not a jsla_fast checkpoint (no 'format' marker); "
                                    "for pretrained GoogLeNet weights use jsla_fast.model.pretrained")
    version = payload.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(path, f"format version {version!r} is newer than this jsla_fast reads "
                                    f"(up to {VERSION}); upgrade jsla_fast")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(path, f"missing or malformed {key!r}")
    return payload


def checkpoint_config(payload: dict[str, Any], path: str | Path) -> JSLAConfig:
    """The model config a payload from :func:`read_checkpoint` records; ``path`` names it in errors."""
    saved = dict(payload["config"])
    saved.setdefault("attention_rescale", False)  # checkpoints from before the field ran the paper's O
    try:
        return JSLAConfig.from_dict(saved)
    except ConfigError as e:
        raise CheckpointError(path, f"incompatible config: {e}") from None


def load_weights(model, payload: dict[str, Any], path: str | Path) -> None:
    """Load a payload's weights and normalisation into ``model`` (built from its config), naming
    every mismatch."""
    state = payload["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(path, f"weights do not match the config: missing {missing[:3]}, "
                                    f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    model.load_state_dict(state)
    if payload.get("normalization") is not None:
        try:
            model.normalization = Normalization.from_dict(payload["normalization"])
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(path, f"malformed normalization: {e}") from None
