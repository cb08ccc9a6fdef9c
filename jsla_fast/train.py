"""Train JSLA (or the PoseNet / LSTM-PoseNet baselines) on a dataset.

    python -m jsla_fast.train --data DIR --format {cambridge,7scenes,csv,mit67} --out RUN
        [--config cfg.yaml] [--model jsla|posenet|poselstm] [--epochs N] [--resume] [--deterministic] ...
    torchrun --nproc_per_node=K -m jsla_fast.train ...      (DDP: gloo on CPU, NCCL on GPU)

RUN/ receives config.yaml, metrics.csv (one row per epoch), train.log, last.pt (rewritten
atomically after every epoch, with the optimiser state: ``--resume`` continues from it, so an
interruption loses at most the current epoch) and best.pt (best validation score so far; the
test split is never looked at). Every epoch's randomness (shuffle, crops, Gumbel noise) is seeded
from (seed, epoch), so a resumed run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .calibrate import MC_SAMPLES, calibrate_checkpoint
from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from .config import PRESETS, ConfigError, RunConfig, apply_preset
from .data import FORMATS, DataError, data_format, open_dataset
from .losses import JSLALoss
from .pose import rotation_error_vector
from .metrics import run_model, task_metrics
from .model.registry import MODELS, Model
from .model.pretrained import load_caffe_googlenet, load_torchvision_googlenet
from .progress import progress
from .references import mean_pose

log = logging.getLogger("jsla_fast.train")
METRIC_FIELDS = ["epoch", "train_loss", "train_term_t_m", "train_term_q", "s_x", "s_q", "val_loss", "val_median_t_m",
                 "val_median_r_deg", "val_accuracy", "score", "best", "tau", "lr", "seconds", "images_per_s"]


class TrainError(RuntimeError):
    """A training run cannot start or continue; the message says why and what to do."""


# -- processes and devices --------------------------------------------------------------------
@dataclass
class Processes:
    """This process's place in a (possibly single-process) torchrun job."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start_processes(device: str) -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    dev = torch.device(device)
    if device == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if device == "cpu":
        # a sharpening spatial softmax leaves most alphas (and their products) subnormal, and x86
        # computes on subnormals 10-100x slower: measured, JSLA's epochs went from 27 s to 75 s
        torch.set_flush_denormal(True)
    if world > 1:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Processes(rank, world, dev)


def seed_epoch(seed: int, epoch: int) -> int:
    """Seed every RNG for one epoch, so a run resumed at an epoch boundary replays it exactly."""
    s = (seed * 1_000_003 + epoch) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return s


def set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


# -- model and objective ----------------------------------------------------------------------
class Objective(nn.Module):
    """Model and loss as one module, so DDP also synchronises the loss's learned (s_x, s_q)."""

    def __init__(self, model: Model, loss: JSLALoss) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, images: torch.Tensor, targets: torch.Tensor):
        out = self.model(images)
        total, parts = self.loss(out, targets)
        return total, parts


def build_model(kind: str, cfg: RunConfig, pretrained: bool = True) -> Model:
    """The model; with ``pretrained`` its backbone starts from ``train.pretrained`` when set."""
    model = MODELS[kind](cfg.model)
    weights = cfg.train.pretrained
    if weights and pretrained:
        path = Path(weights)
        loader = load_caffe_googlenet if path.suffix in (".pickle", ".pkl") else load_torchvision_googlenet
        report = loader(model.backbone, path)
        log.info("pretrained backbone: %s", report.summary())
    return model


def init_pose_heads(model: Model, poses: torch.Tensor) -> None:
    """Fit a pose model's position standardisation (its ``pose_decoder``) to the training poses
    and start every pose head at the mean pose (position offset 0, mean orientation; with aleatoric
    uncertainty, the log-variances of the mean pose's own errors per axis); the heads' weights stay
    random."""
    model.pose_decoder.fit(poses[:, :3])
    mean = mean_pose(poses)
    start = torch.cat([torch.zeros(3), mean[3:]])
    if model.config.uncertainty == "aleatoric":  # + the mean pose's own error variance per axis
        rot = rotation_error_vector(mean[None, 3:].expand(len(poses), 4), poses[:, 3:])
        pos = (poses[:, :3] - mean[:3]) / model.pose_decoder.scale
        start = torch.cat([start, torch.log(torch.cat([pos, rot], dim=1).square().mean(0).clamp_min(1e-4))])
    with torch.no_grad():
        for head in model.pose_heads():
            head.start_at(start)


def learning_rate(cfg, progress: float) -> float:
    """The lr at training progress in [0, 1]; a pure function of the step, so --resume is exact."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return cfg.lr


def validation_score(task: str, metrics: dict, val_loss: float) -> float:
    """Lower is better. Poses: the validation loss with the loss's fixed weights (1, beta), or the
    learned weighting's starting ones (see ``JSLALoss.score``); scenes: 1 - accuracy."""
    return val_loss if task == "pose" else 1.0 - metrics["accuracy"]


# -- the run ----------------------------------------------------------------------------------
def train(cfg: RunConfig, data: str | Path, fmt: str, out: str | Path, kind: str = "jsla", *,
          resume: bool = False, skip_bad: bool = False, device: str = "auto") -> Path:
    """Train and return the path of best.pt (or last.pt when there is no validation split)."""
    out = Path(out)
    procs = start_processes(device)
    try:
        return _train(cfg, Path(data), fmt, out, kind, resume, skip_bad, procs)
    finally:
        if procs.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: RunConfig, data: Path, fmt: str, out: Path, kind: str, resume: bool, skip_bad: bool,
           procs: Processes) -> Path:
    set_deterministic(cfg.train.deterministic)
    last, best = out / "last.pt", out / "best.pt"
    state = None
    if resume:
        if not last.is_file():
            raise TrainError(f"--resume: {last} does not exist; start a new run without --resume")
        saved = RunConfig.from_yaml(out / "config.yaml")
        if saved.to_dict() != cfg.to_dict():
            log.info("--resume: using the run's own config %s (the command-line config is ignored)", out / "config.yaml")
        cfg = saved
        payload = read_checkpoint(last)
        kind = payload["model"]
        state = payload["extra"]["train_state"]
    elif last.exists():
        raise TrainError(f"{out} already holds a run ({last}); pass --resume to continue it or choose another --out")

    task = data_format(fmt).task
    if cfg.model.task != task:
        raise TrainError(f"--format {fmt} is a {task} dataset but the model config says task: {cfg.model.task}; "
                         f"set model.task: {task}")
    seed_epoch(cfg.train.seed, 0)
    train_set = open_dataset(data, fmt, "train", cfg.data, skip_bad=skip_bad)
    val_set = open_dataset(data, fmt, "val", cfg.data, normalization=train_set.normalization, skip_bad=skip_bad)
    classes = train_set.records.classes
    if task == "scene" and cfg.model.num_classes != len(classes):
        log.info("num_classes set to %d from the data (config had %d)", len(classes), cfg.model.num_classes)
        cfg.model.num_classes = len(classes)

    model = build_model(kind, cfg, pretrained=state is None)  # a resumed run takes its own weights
    objective = Objective(model, JSLALoss(cfg.model))
    if task == "pose" and state is None:
        poses = train_set.records.targets.float()
        if cfg.train.head_init_mean:
            init_pose_heads(model, poses)
        lx, lq = objective.loss.fit(poses, mean_pose(poses))
        if procs.main:
            loss = objective.loss
            weighting = (f"learned weighting from s_x = {loss.s_x.item():.3f}, s_q = {loss.s_q.item():.3f}"
                         if loss.learned else f"fixed beta = {cfg.model.loss.beta:g}")
            if loss.aleatoric == "attenuation":
                weighting = ("Kendall & Gal's likelihood on the main head (pose and variances)"
                             + (f", aux heads by the {weighting}" if cfg.model.aux_heads else ""))
            elif loss.aleatoric == "decoupled":
                weighting += "; the variances by Kendall & Gal's likelihood of the detached pose errors"
            log.info("pose loss: %s; the mean training pose has terms %.3f m and %.4f (quaternion distance)",
                     weighting, lx, lq)
    objective = objective.to(procs.device)
    model.normalization = train_set.normalization
    optimizer = torch.optim.Adam(objective.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    amp = cfg.train.amp and procs.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    start_epoch, best_score, history = 0, math.inf, []
    if state is not None:
        model.load_state_dict(payload["state_dict"])
        objective.loss.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_score, history = state["epoch"] + 1, state["best_score"], state["history"]
        log.info("resuming %s at epoch %d of %d", out, start_epoch + 1, cfg.train.epochs)
    board = None
    if procs.main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(out / "config.yaml")
        _log_to_file(out / "train.log")
        board = tensorboard_writer(out)
    trainable = (nn.parallel.DistributedDataParallel(objective, device_ids=None if procs.device.type == "cpu"
                                                     else [procs.device]) if procs.world > 1 else objective)

    per_process = cfg.train.batch_size // procs.world
    if per_process < 2:  # BatchNorm in training mode cannot normalise a batch of one
        raise TrainError(f"train.batch_size = {cfg.train.batch_size} gives {per_process} image(s) per process with "
                         f"{procs.world} process(es); BatchNorm needs at least 2: use --batch-size {2 * procs.world} or more")
    if len(train_set) < per_process:
        raise TrainError(f"the train split has {len(train_set)} images, fewer than one batch of {per_process}; "
                         f"lower --batch-size")
    sampler = DistributedSampler(train_set, procs.world, procs.rank, shuffle=True, seed=cfg.train.seed,
                                 drop_last=True) if procs.world > 1 else None
    extra = {"classes": classes, "data_format": fmt, "model_kind": kind}
    steps_per_epoch = max(1, len(train_set) // (per_process * procs.world))
    total_steps = cfg.train.epochs * steps_per_epoch
    if procs.main:
        log.info("%s: %d train / %d val images, %d epochs x %d steps, batch %d (%d process(es)), device %s",
                 kind, len(train_set), len(val_set), cfg.train.epochs, steps_per_epoch, per_process * procs.world,
                 procs.world, procs.device)

    for epoch in range(start_epoch, cfg.train.epochs):
        seed = seed_epoch(cfg.train.seed, epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=per_process, shuffle=sampler is None, sampler=sampler,
                            drop_last=True, num_workers=cfg.data.workers,
                            generator=torch.Generator().manual_seed(seed), persistent_workers=False,
                            pin_memory=procs.device.type == "cuda")
        objective.train()
        started, losses, terms, seen = time.perf_counter(), [], [], 0
        bar = progress(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch", disable=not procs.main,
                   leave=False)
        for step, (images, targets) in enumerate(bar):
            done = (epoch * steps_per_epoch + step) / max(total_steps - 1, 1)  # training progress
            model.set_progress(done)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg.train, done)
            images, targets = images.to(procs.device, non_blocking=True), targets.to(procs.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(procs.device.type, dtype=torch.float16, enabled=amp):
                loss, parts = trainable(images, targets)
            if not torch.isfinite(loss):
                raise TrainError(f"epoch {epoch + 1} step {step}: the loss is {float(loss)}; lower --lr "
                                 f"(now {cfg.train.lr}) or check the data's poses")
            scaler.scale(loss).backward()
            if cfg.train.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(objective.parameters(), cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            if "t_m" in parts:
                terms.append((parts["t_m"], parts["q"]))
            seen += images.shape[0] * procs.world
            bar.set_postfix(loss=f"{losses[-1]:.3f}", **({"tau": f"{model.tau:.2f}"} if model.tau is not None else {}), refresh=False)
        seconds = time.perf_counter() - started

        row = {"epoch": epoch + 1, "train_loss": sum(losses) / max(len(losses), 1), "tau": "" if model.tau is None else model.tau,
               **_term_columns(terms, objective.loss),
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2), "images_per_s": round(seen / max(seconds, 1e-9), 2)}
        if procs.main:
            row.update(_validate(objective, val_set, cfg, task, classes, procs))
            improved = row.get("score", math.inf) < best_score or (len(val_set) == 0)
            if improved and len(val_set):
                best_score = row["score"]
            row["best"] = int(improved)
            history.append(row)
            extra_last = dict(extra, epoch=epoch + 1, train_state={
                "loss": objective.loss.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "best_score": best_score, "history": history})
            save_checkpoint(model, last, extra=extra_last)
            if improved:
                save_checkpoint(model, best, extra=dict(extra, epoch=epoch + 1, val=_plain(row)))
            _append_csv(out / "metrics.csv", row)
            if board is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        board.add_scalar(key, value, epoch + 1)
                board.flush()
            terms = (f" (terms {row['train_term_t_m']:.3f} m, {row['train_term_q']:.4f}"
                     + (f"; s_x {row['s_x']:.2f}, s_q {row['s_q']:.2f}" if "s_x" in row else "") + ")"
                     if "train_term_t_m" in row else "")
            log.info("epoch %d/%d: train loss %.4f%s, %s%s (%.1f s, %.1f img/s)", epoch + 1, cfg.train.epochs,
                     row["train_loss"], terms, _describe(row, task), " *best*" if improved else "", seconds,
                     row["images_per_s"])
        procs.barrier()
    if board is not None:
        board.close()
    if procs.main and task == "pose" and best.exists() and len(val_set):
        # the sigmas a filter will be given, scaled to describe the validation errors
        mc = MC_SAMPLES if cfg.model.dropout > 0 else None
        if mc or cfg.model.uncertainty == "aleatoric":
            calibrate_checkpoint(best, val_set, mc, cfg.train.batch_size, cfg.data.workers, procs.device)
    return best if best.exists() else last


def _validate(objective: Objective, val_set, cfg: RunConfig, task: str, classes, procs: Processes) -> dict:
    if len(val_set) == 0:
        return {}
    loader = DataLoader(val_set, batch_size=cfg.train.batch_size, shuffle=False, num_workers=cfg.data.workers)
    preds = run_model(objective.model, loader, procs.device)
    metrics = task_metrics(task, preds.outputs, preds.targets, classes)
    with torch.no_grad():  # the loss on the normalised (reported) output, comparable across epochs
        objective.loss.eval()
        if task == "pose":
            val_loss = float(objective.loss.score(preds.outputs.double(), preds.targets.double()))
        else:
            val_loss = float(nn.functional.cross_entropy(preds.outputs, preds.targets))
    row = {"val_loss": val_loss, "score": validation_score(task, metrics, val_loss)}
    if task == "pose":
        row.update(val_median_t_m=metrics["median_t_m"], val_median_r_deg=metrics["median_r_deg"],
                   val_rms_t_m=metrics["rms_t_m"], val_rms_r_deg=metrics["rms_r_deg"])
    else:
        row["val_accuracy"] = metrics["accuracy"]
    return row


def _term_columns(terms: list[tuple[float, float]], loss: JSLALoss) -> dict:
    """The epoch's mean pose terms (metres, quaternion distance) and the learned s_x, s_q: what
    shows whether one term starves the other."""
    if not terms:
        return {}
    row = {"train_term_t_m": sum(t for t, _ in terms) / len(terms), "train_term_q": sum(q for _, q in terms) / len(terms)}
    if loss.trains_weighting:
        row.update(s_x=loss.s_x.item(), s_q=loss.s_q.item())
    return row


def _describe(row: dict, task: str) -> str:
    if "val_loss" not in row:
        return "no validation split"
    if task == "pose":
        return f"val loss {row['val_loss']:.4f}, median {row['val_median_t_m']:.3f} m {row['val_median_r_deg']:.2f} deg"
    return f"val loss {row['val_loss']:.4f}, accuracy {row['val_accuracy']:.3f}"


def _plain(row: dict) -> dict:
    return {k: (float(v) if isinstance(v, (int, float)) else str(v)) for k, v in row.items()}


def tensorboard_writer(out: Path):
    """A SummaryWriter into RUN/tensorboard when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed; metrics go to %s only", out / "metrics.csv")
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})


def _log_to_file(path: Path) -> None:
    root = logging.getLogger("jsla_fast")
    if not any(isinstance(h, logging.FileHandler) and h.baseFilename == str(path.resolve()) for h in root.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


# -- command line -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder")
    ap.add_argument("--format", required=True, choices=list(FORMATS), help="dataset layout")
    ap.add_argument("--out", required=True, help="run folder (config, metrics, checkpoints)")
    ap.add_argument("--config", help="YAML with sections model:, data:, train: (see RunConfig)")
    ap.add_argument("--model", default="jsla", choices=list(MODELS))
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    ap.add_argument("--skip-bad", action="store_true", help="skip bad entries/images and report their count")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, help="CPU threads per process")
    ap.add_argument("--preset", choices=list(PRESETS),
                    help="paper: the JSLA paper's input 224, batch 40, Adam and the scene's fixed beta "
                         "(applied over --config; the options below override it)")
    over = ap.add_argument_group("overrides of the config file")
    over.add_argument("--epochs", type=int)
    over.add_argument("--batch-size", type=int)
    over.add_argument("--lr", type=float)
    over.add_argument("--seed", type=int)
    over.add_argument("--deterministic", action="store_true", default=None)
    over.add_argument("--workers", type=int)
    over.add_argument("--pretrained", help="torchvision googlenet state dict (.pth) or Caffe pickle (.pickle)")
    over.add_argument("--steps", type=int, help="ConvLSTM steps N")
    over.add_argument("--beta", type=float, help="PoseNet's fixed rotation weight (turns the learned weighting off)")
    return ap.parse_args(argv)


def run_config(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    task = FORMATS[args.format].task
    if not args.config or "task" not in (_yaml_section(args.config, "model")):
        cfg.model.task = task
    if args.preset:
        for line in apply_preset(cfg, args.preset, args.data):
            log.info("%s", line)
    overrides = {("train", "epochs"): args.epochs, ("train", "batch_size"): args.batch_size,
                 ("train", "lr"): args.lr, ("train", "seed"): args.seed, ("train", "deterministic"): args.deterministic,
                 ("data", "workers"): args.workers, ("train", "pretrained"): args.pretrained,
                 ("model", "steps"): args.steps}
    for (section, name), value in overrides.items():
        if value is not None:
            setattr(getattr(cfg, section), name, value)
    if args.beta is not None:
        cfg.model.loss.beta = args.beta
        cfg.model.loss.learned_weighting = False
    return RunConfig.from_dict(cfg.to_dict())  # re-validate after overrides


def _yaml_section(path: str, section: str) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    return data.get(section) or {}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = run_config(args)
        best = train(cfg, args.data, args.format, args.out, args.model, resume=args.resume,
                     skip_bad=args.skip_bad, device=args.device)
    except (TrainError, DataError, ConfigError, CheckpointError) as e:
        log.error("%s", e)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
