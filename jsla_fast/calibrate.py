"""Calibrate a pose checkpoint's per-image sigmas on held-out images (docs/TRAINING.md, "Per-image
uncertainty"), so that a filter given them neither trusts nor doubts the poses too much.

    python -m jsla_fast.calibrate --checkpoint RUN/best.pt --data DIR --format F [--split val] [--mc-samples K]

``train`` runs this itself on the validation split when it ends; the command is for a model
trained with your own loop (or saved from Python), or to calibrate on other held-out images. It
fits, on the split, one factor for position and one for rotation:

- for an aleatoric model (``uncertainty="aleatoric"``), the factors of its predicted sigmas;
- with ``--mc-samples K`` (for a model with dropout; ``train`` uses :data:`MC_SAMPLES`), the
  factors of test-time MC dropout's sigmas (the samples' spread, plus the predicted sigmas).

Each factor is ``sqrt(mean(e^2 / sigma^2))`` over the images and the three axes, the
maximum-likelihood scale of a Gaussian error model (:func:`jsla_fast.uncertainty.calibration_factors`).
They are stored in the model (so every runtime applies them) and in ``extra["calibration"]`` with
the split's coverage after scaling; the checkpoint is rewritten atomically (earlier factors are
replaced, not compounded: the fit starts from the uncalibrated sigmas).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from .data import FORMATS, DataError, open_dataset
from .metrics import run_model
from .model.base import Model
from .model.registry import model_from_payload
from .uncertainty import MCDropout, calibration_factors, check_samples, mc_spreads, uncertainty_metrics

log = logging.getLogger("jsla_fast.calibrate")
#: MC dropout samples ``train`` calibrates with: the spread's expected variance is (K-1)/K of the
#: samples' distribution's, within 2 % of any larger K's in sigma
MC_SAMPLES = 32


class CalibrationError(ValueError):
    """Nothing to calibrate, or nothing to calibrate on; the message says what to do."""


def _fit(preds) -> tuple[float, float, dict]:
    fp, fr = calibration_factors(preds.outputs, preds.log_var, preds.targets)
    scaled = preds.log_var + 2 * torch.log(torch.tensor([fp] * 3 + [fr] * 3, dtype=preds.log_var.dtype))
    return fp, fr, uncertainty_metrics(preds.outputs, scaled, preds.targets)


def calibrate_model(model: Model, dataset, mc_samples: int | None = None, batch_size: int = 16, workers: int = 0,
                    device: str | torch.device = "cpu") -> dict:
    """Fit and set the factors of ``model`` (a pose model) on ``dataset``; returns the record
    stored in ``extra["calibration"]``: ``images``, and ``position``, ``rotation``, ``validation``
    (coverage after scaling) for the predicted sigmas, ``mc`` (the same for MC dropout, with
    ``samples``) when ``mc_samples`` is given."""
    if model.pose_decoder is None:
        raise CalibrationError("calibration scales pose sigmas; this is a scene model")
    aleatoric = model.config.uncertainty == "aleatoric"
    if mc_samples is not None:
        check_samples(mc_samples)
        if not mc_spreads(model):
            raise CalibrationError("--mc-samples: the model has no dropout, so MC dropout gives it no spread; "
                                   "train with model.dropout > 0 or model.uncertainty: aleatoric")
    elif not aleatoric:
        raise CalibrationError("the model predicts no sigmas (uncertainty 'none'): pass --mc-samples K to "
                               "calibrate MC dropout, or train with model.uncertainty: aleatoric")
    if len(dataset) == 0:
        raise CalibrationError("the split holds no images to calibrate on")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    decoder = model.pose_decoder
    record: dict = {"images": len(dataset)}
    if aleatoric:
        decoder.set_calibration(1.0, 1.0)  # fit from the raw sigmas
        fp, fr, after = _fit(run_model(model, loader, device))
        decoder.set_calibration(fp, fr)
        record.update(position=fp, rotation=fr, validation=after)
    if mc_samples is not None:
        decoder.set_mc_calibration(1.0, 1.0, 0)
        fp, fr, after = _fit(run_model(MCDropout(model, mc_samples), loader, device))
        decoder.set_mc_calibration(fp, fr, mc_samples)
        record["mc"] = {"samples": mc_samples, "position": fp, "rotation": fr, "validation": after}
    return record


def calibrate_checkpoint(path: str | Path, dataset, mc_samples: int | None = None, batch_size: int = 16,
                         workers: int = 0, device: str | torch.device = "cpu", payload: dict | None = None,
                         model: Model | None = None) -> dict:
    """:func:`calibrate_model` on the checkpoint at ``path``, rewritten with the factors. ``payload``
    and ``model``: what :func:`read_checkpoint` gave for it and the model built from that, when the
    caller has them already."""
    payload = payload if payload is not None else read_checkpoint(path)
    model = (model if model is not None else model_from_payload(payload, path)).to(device)
    record = calibrate_model(model, dataset, mc_samples, batch_size, workers, device)
    extra = dict(payload["extra"], calibration=record)
    save_checkpoint(model.cpu(), path, extra=extra)
    for name, r in (("predicted sigmas", record if "position" in record else None),
                    (f"MC dropout ({mc_samples} samples)", record.get("mc"))):
        if r:
            log.info("calibrated the %s on %d images: position x %.3g, rotation x %.3g (errors within 1 sigma "
                     "after: %.0f %% position, %.0f %% rotation; a Gaussian: 68 %%)", name, len(dataset),
                     r["position"], r["rotation"], 100 * r["validation"]["position"]["within_1_sigma"],
                     100 * r["validation"]["rotation"]["within_1_sigma"])
    return record


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="pose checkpoint, rewritten with the factors")
    ap.add_argument("--data", required=True)
    ap.add_argument("--format", required=True, choices=[f for f, d in FORMATS.items() if d.task == "pose"])
    ap.add_argument("--split", default="val", choices=["val", "test"],
                    help="held-out images to fit on (default: the validation split, as train does; fitting on "
                         "test leaves no held-out images to check the result on)")
    ap.add_argument("--mc-samples", type=int, help="also calibrate test-time MC dropout with K samples")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.mc_samples is not None:
            check_samples(args.mc_samples)
        payload = read_checkpoint(args.checkpoint)  # read once: the dataset needs its preprocessing
        model = model_from_payload(payload, args.checkpoint)
        dataset = open_dataset(args.data, args.format, args.split, normalization=model.normalization, augment=False)
        calibrate_checkpoint(args.checkpoint, dataset, args.mc_samples, args.batch_size, device=args.device,
                             payload=payload, model=model)
    except (CalibrationError, CheckpointError, DataError, ValueError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
