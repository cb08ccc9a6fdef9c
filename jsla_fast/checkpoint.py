"""One-file checkpoints: config, weights, normalisation statistics and a format version.

This module is the file format only; building the model a file names is
:func:`jsla_fast.model.registry.load_checkpoint` (``jsla_fast.load_checkpoint``), or
``JSLA.from_checkpoint`` for one kind.

Written atomically (temporary file in the same folder, fsync, rename), so a crash never leaves a
half-written checkpoint under the final name. Read with ``torch.load(weights_only=True)``, which
refuses any pickle that would construct arbitrary objects or run code.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .config import ConfigError, JSLAConfig
from .normalization import Normalization, default_normalization

log = logging.getLogger("jsla_fast.checkpoint")

FORMAT = "jsla_fast.checkpoint"
#: 2: a SHA-256 of everything in the file (``checksum``), checked on every read; files of version 1
#: (no checksum) still load, with a warning
VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"checkpoint {path}: {problem}")
        self.path = str(path)
        self.problem = problem


def save_checkpoint(model, path: str | Path, *, normalization: Normalization | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (any :class:`jsla_fast.model.base.Model`) to ``path`` atomically.

    ``normalization`` (the input preprocessing) defaults to ``model.normalization`` and, when the
    model has none (built or trained outside ``jsla_fast.train``), to
    :func:`jsla_fast.normalization.default_normalization` (the paper's test time, ImageNet's mean),
    which is then stored and logged. ``extra`` holds further plain data (tensors, numbers,
    strings, lists, dicts), e.g. training state. A checksum of it all is stored with it.
    """
    path = Path(path)
    norm = normalization if normalization is not None else model.normalization
    if norm is None:
        norm = default_normalization()
        log.info("%s: the model records no preprocessing; saved with the default: %s", path, norm.describe())
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.kind,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalization": norm.to_dict(),
        "extra": extra or {},
    }
    payload["checksum"] = checksum(payload)
    return atomic_write(path, lambda f: torch.save(payload, f))


def checksum(payload: dict[str, Any]) -> str:
    """SHA-256 over everything in a payload but its ``checksum``: keys, plain values and tensors'
    dtypes, shapes and bytes, in a fixed order (a damaged byte anywhere in the data changes it)."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            digest.update(b"{")
            for k in sorted(value, key=str):
                digest.update(repr(k).encode())
                feed(value[k])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for v in value:
                feed(v)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    feed({k: v for k, v in payload.items() if k != "checksum"})
    return digest.hexdigest()


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
    if version < 2:
        log.warning("%s: format version %s carries no checksum, so damage to its bytes cannot be detected; "
                    "re-save it with jsla_fast.save_checkpoint", path, version)
    elif payload.get("checksum") != checksum(payload):
        raise CheckpointError(path, "damaged: its contents do not match the checksum stored when it was saved "
                                    "(a changed byte, a bad copy or disk); do not deploy it, copy it again or "
                                    "re-save it from the original")
    return payload


def checkpoint_config(payload: dict[str, Any], path: str | Path) -> JSLAConfig:
    """The model config a payload from :func:`read_checkpoint` records; ``path`` names it in errors."""
    saved = dict(payload["config"])
    saved.setdefault("attention_rescale", False)  # checkpoints from before the field ran the paper's O
    if saved.get("uncertainty") == "aleatoric":  # aleatoric heads from before loss.aleatoric: one 13-output FC
        saved["loss"] = {"aleatoric": "attenuation", **saved.get("loss", {})}
    try:
        return JSLAConfig.from_dict(saved)
    except ConfigError as e:
        raise CheckpointError(path, f"incompatible config: {e}") from None


def load_weights(model, payload: dict[str, Any], path: str | Path) -> None:
    """Load a payload's weights and normalisation into ``model`` (built from its config), naming
    every mismatch."""
    state = payload["state_dict"]
    own = model.state_dict()
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    # not strict: modules fill in what older files lack (PoseDecoder's MC calibration), and only
    # what is missing after that is an error
    missing = ([k for k in own if k not in state] if wrong or unexpected
               else model.load_state_dict(state, strict=False).missing_keys)
    if missing or unexpected or wrong:
        raise CheckpointError(path, f"weights do not match the config: missing {missing[:3]}, "
                                    f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    if payload.get("normalization") is None:  # only files older than save_checkpoint's default
        model.normalization = default_normalization()
        log.warning("%s records no input preprocessing; using the default: %s", path,
                    model.normalization.describe())
        return
    try:
        model.normalization = Normalization.from_dict(payload["normalization"])
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(path, f"malformed normalization: {e}") from None
