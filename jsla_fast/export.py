"""Export a trained model to ONNX, for users deploying with ONNX Runtime or TensorRT.

    python -m jsla_fast.export --checkpoint RUN/best.pt --onnx model.onnx [--opset 18]

The graph is the reference model in eval mode with a static layer selection: every candidate
layer's branch runs and each sample's chosen one is gathered by index, which equals running only
the chosen branch exactly (ONNX has no per-sample dynamic choice; this costs the unchosen branches'
compute). Input ``images`` [B,3,H,W], normalised as the checkpoint records (B dynamic); outputs
``pose`` [B,7] (x,y,z,qw,qx,qy,qz) or ``logits`` [B,classes], ``layers`` [B,N] (int64) and,
for a model with aleatoric uncertainty, ``log_var`` [B,6]: the calibrated per-axis log-variances
(position x,y,z in m^2, rotation about x,y,z in rad^2, as ``predict`` reports their roots).
Attention maps are not exported. After writing, the file is run with ONNX Runtime (when
installed) and compared with PyTorch; a mismatch is an error.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError
from .model.registry import load_checkpoint

log = logging.getLogger("jsla_fast.export")
TOLERANCE = 1e-4


def output_names(model) -> list[str]:
    """The exported graph's outputs, in order (see the module's docstring)."""
    names = ["pose" if model.config.task == "pose" else "logits", "layers"]
    return names + ["log_var"] if model.config.uncertainty == "aleatoric" else names


class StaticOutputs(nn.Module):
    """``images -> (pose or logits, layers[, log_var])`` through the model's static graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        first = (out.pose if out.pose is not None else out.logits, out.layers)
        return first + (out.log_var,) if out.log_var is not None else first


@contextlib.contextmanager
def _quiet(*loggers: str):
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def input_size(model) -> int:
    norm = model.normalization
    return int(norm.crop) if norm is not None and norm.crop else 224


def export_onnx(model: nn.Module, path: str | Path, opset: int = 18, batch: int = 1) -> Path:
    """Write ``model`` (eval, reference ops) to ``path`` as ONNX with a dynamic batch axis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    model.set_backend("reference")
    size = input_size(model)
    images = torch.randn(batch, 3, size, size)
    names = output_names(model)
    static = model.static_graph
    model.static_graph = model.has_static_form
    try:
        # the exporter narrates its passes on stdout and through logging: keep both for errors only
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet("onnx_ir", "onnxscript", "torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                StaticOutputs(model), (images,), dynamo=True, opset_version=opset, input_names=["images"],
                output_names=names, dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
                verbose=False)
        program.save(str(path))
    finally:
        model.static_graph = static
    return path


@torch.inference_mode()
def compare_with_onnxruntime(model: nn.Module, path: str | Path, batch: int = 2, seed: int = 0) -> float:
    """Max abs difference between PyTorch and ONNX Runtime on random normalised images, over the
    pose (or logits) and the log-variances (the layer choices must agree exactly). Raises
    ImportError without onnxruntime."""
    import onnxruntime as ort

    size = input_size(model)
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    out = model.eval()(images)
    expected = [out.pose if out.pose is not None else out.logits] + ([out.log_var] if out.log_var is not None else [])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(output_names(model), session.run(None, {"images": images.numpy()})))
    if got["layers"].tolist() != out.layers.tolist():
        raise AssertionError(f"ONNX chose layers {got['layers'].tolist()}, PyTorch {out.layers.tolist()}")
    got = [got[n] for n in output_names(model) if n != "layers"]
    return max(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--onnx", required=True, help="output .onnx file")
    ap.add_argument("--opset", type=int, default=18)
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    args = ap.parse_args(argv)
    try:
        model = load_checkpoint(args.checkpoint)
    except CheckpointError as e:
        log.error("%s", e)
        return 2
    path = export_onnx(model, args.onnx, args.opset)
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    if args.no_check:
        return 0
    try:
        diff = compare_with_onnxruntime(model, path)
    except ImportError:
        log.warning("onnxruntime is not installed: the export was not checked (pip install onnxruntime)")
        return 0
    if diff > TOLERANCE:
        log.error("ONNX Runtime differs from PyTorch by %.3g (> %g): please report this", diff, TOLERANCE)
        return 1
    log.info("ONNX Runtime matches PyTorch: max abs difference %.2e", diff)
    return 0


if __name__ == "__main__":
    sys.exit(main())
