"""Loading pretrained GoogLeNet weights into :class:`GoogLeNet`, kept apart from the model.

- torchvision format: a ``torch.save``-d state dict of ``torchvision.models.googlenet`` (or a dict
  holding it under ``state_dict``/``model``), read with ``torch.load(weights_only=True)``;
- Caffe format: the Places-GoogLeNet pickle used by PoseNet ports, ``{b"inception_3a/1x1_0": W,
  b"inception_3a/1x1_1": b, ...}`` with numpy arrays; read with an unpickler that only admits
  numpy's array reconstruction, so a file cannot run code.

Both return a :class:`LoadReport` naming the keys that were missing, unexpected or skipped.
"""
from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .googlenet import INCEPTION_BLOCKS, GoogLeNet

log = logging.getLogger(__name__)

# torchvision's classifier parts; JSLA uses features only, so these are skipped, not "unexpected"
CLASSIFIER_PREFIXES = ("aux1.", "aux2.", "fc.")


class WeightsError(RuntimeError):
    """A weights file could not be loaded; the message names the file and the problem."""


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  #: model keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  #: file keys the model has no place for
    skipped: list[str] = field(default_factory=list)  #: classifier keys, or blocks this model does not build

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f", ... (+{len(keys) - 6})" if len(keys) > 6 else "")

        parts = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {few(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {few(self.unexpected)}")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} (classifier or unused blocks)")
        return "; ".join(parts)


def load_torchvision_googlenet(model: GoogLeNet, path: str | Path, strict: bool = False) -> LoadReport:
    """Load a torchvision-format GoogLeNet state-dict file into ``model``."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except Exception as e:  # truncated zip, foreign pickle, ...
        raise WeightsError(f"{path}: not a readable torch state-dict file ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return _assign(model, state, str(path), strict)


def load_caffe_googlenet(model: GoogLeNet, path: str | Path, strict: bool = False) -> LoadReport:
    """Load the Caffe-named Places/BVLC GoogLeNet pickle into a ``style="caffe"`` model."""
    path = Path(path)
    if model.style != "caffe":
        raise WeightsError(
            f"{path}: Caffe GoogLeNet weights need the Caffe architecture (5x5 branch, conv bias, LRN); "
            f"set backbone_style: caffe in the config (the model has {model.style!r})"
        )
    raw = read_caffe_pickle(path)
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for name, value in raw.items():
        stem, _, idx = name.rpartition("_")
        target = caffe_to_torch_name(stem)
        if target is None or idx not in ("0", "1"):
            unexpected.append(name)
            continue
        state[f"{target}.{'weight' if idx == '0' else 'bias'}"] = torch.from_numpy(np.ascontiguousarray(value))
    report = _assign(model, state, str(path), strict, extra_unexpected=unexpected)
    return report


def caffe_to_torch_name(caffe: str) -> str | None:
    """``inception_4e/5x5_reduce`` -> ``inception4e.branch3.0.conv``; classifier names -> ``fc`` etc."""
    fixed = {
        "conv1/7x7_s2": "conv1.conv",
        "conv2/3x3_reduce": "conv2.conv",
        "conv2/3x3": "conv3.conv",
        "loss1/conv": "aux1.conv.conv",
        "loss1/fc": "aux1.fc1",
        "loss1/classifier": "aux1.fc2",
        "loss2/conv": "aux2.conv.conv",
        "loss2/fc": "aux2.fc1",
        "loss2/classifier": "aux2.fc2",
        "loss3/classifier": "fc",
    }
    if caffe in fixed:
        return fixed[caffe]
    block, _, part = caffe.partition("/")
    if not block.startswith("inception_") or block[len("inception_"):] not in INCEPTION_BLOCKS:
        return None
    branches = {"1x1": "branch1.conv", "3x3_reduce": "branch2.0.conv", "3x3": "branch2.1.conv",
                "5x5_reduce": "branch3.0.conv", "5x5": "branch3.1.conv", "pool_proj": "branch4.1.conv"}
    if part not in branches:
        return None
    return f"inception{block[len('inception_'):]}.{branches[part]}"


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a callable outside the numpy-array allow-list."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled dict of numpy arrays needs; anything else (os.system, eval,
    arbitrary classes) is refused before it can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 (numpy >= 1.16)
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol-2 pickles from Python 3 encode raw bytes this way
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def read_caffe_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``{name: ndarray}`` pickle safely; bytes keys (Python 2 pickles) become str."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as e:
        raise WeightsError(f"{path}: unsafe pickle: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise WeightsError(f"{path}: truncated or corrupt pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for k, v in obj.items():
        key = k.decode("latin1") if isinstance(k, bytes) else str(k)
        if not isinstance(v, np.ndarray):
            raise WeightsError(f"{path}: entry {key!r} is {type(v).__name__}, expected a numpy array")
        out[key] = v
    return out


def _assign(model: GoogLeNet, state: dict[str, torch.Tensor], path: str, strict: bool,
            extra_unexpected: list[str] | None = None) -> LoadReport:
    own = model.state_dict()
    built = tuple(f"inception{b}." for b in model.blocks)
    report = LoadReport(path=path, unexpected=list(extra_unexpected or []))
    for key, value in state.items():
        if key in own:
            if own[key].shape != value.shape:
                raise WeightsError(
                    f"{path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)} "
                    f"(backbone_style={model.style!r}; torchvision files need 'torchvision', Caffe pickles 'caffe')"
                )
            report.loaded.append(key)
        elif key.startswith(CLASSIFIER_PREFIXES) or (
            key.startswith("inception") and not key.startswith(built)
        ):
            report.skipped.append(key)
        else:
            report.unexpected.append(key)
    report.missing = [k for k in own if k not in state]
    if strict and (report.missing or report.unexpected):
        raise WeightsError(report.summary())
    with torch.no_grad():
        for key in report.loaded:
            own[key].copy_(state[key])
    log.info("%s", report.summary())
    return report
