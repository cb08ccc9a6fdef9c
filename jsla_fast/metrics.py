"""Running a model over a dataset and the standard metrics (docs/DESIGN.md, "Conventions"): median/mean translation (m)
and rotation (deg) errors for poses, accuracy and per-class accuracy for scenes, layer usage."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from .pose import pose_errors
from .progress import progress as progress_bar


@dataclass
class Predictions:
    """Everything a pass over a dataset produced, in dataset order."""

    outputs: torch.Tensor  #: [N,7] poses or [N,K] logits
    targets: torch.Tensor  #: [N,7] or [N]
    layers: torch.Tensor  #: [N,T] chosen layer per step (T = 0 for PoseNet)
    aux: list[torch.Tensor] = field(default_factory=list)  #: per-step head outputs [N,7]/[N,K]
    seconds: float = 0.0
    log_var: torch.Tensor | None = None  #: [N,6] for models with per-image uncertainty


@torch.inference_mode()
def run_model(model, loader: DataLoader, device: torch.device | str = "cpu", progress: bool = False) -> Predictions:
    model.eval()
    outs, targets, layers, aux, log_var = [], [], [], [], []
    start = time.perf_counter()
    for images, target in progress_bar(loader, desc="predict", unit="batch", leave=False, disable=not progress):
        out = model(images.to(device))
        outs.append((out.pose if out.pose is not None else out.logits).float().cpu())
        targets.append(target)
        layers.append(out.layers.cpu())
        if out.aux:
            aux.append([a.float().cpu() for a in out.aux])
        if out.log_var is not None:
            log_var.append(out.log_var.float().cpu())
    steps_aux = [torch.cat([a[t] for a in aux]) for t in range(len(aux[0]))] if aux else []
    return Predictions(torch.cat(outs), torch.cat(targets), torch.cat(layers), steps_aux,
                       time.perf_counter() - start, torch.cat(log_var) if log_var else None)


def pose_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    t, r = pose_errors(pred.double(), target.double())
    # quantile, not Tensor.median: for an even count the median is the mean of the middle two
    # (numpy's and PoseNet's convention), while Tensor.median returns the lower one
    return {"median_t_m": float(t.quantile(0.5)), "median_r_deg": float(r.quantile(0.5)),
            "mean_t_m": float(t.mean()), "mean_r_deg": float(r.mean()),
            # root mean squares: what a Gaussian error model (the ROS node's covariance) is fitted to
            "rms_t_m": float(t.square().mean().sqrt()), "rms_r_deg": float(r.square().mean().sqrt()),
            "count": int(t.numel())}


def scene_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str] | None = None) -> dict:
    pred = logits.argmax(dim=1)
    k = logits.shape[1]
    names = classes or [str(i) for i in range(k)]
    per_class = {}
    for c in range(k):
        mask = labels == c
        if bool(mask.any()):
            per_class[names[c]] = float((pred[mask] == c).float().mean())
    return {"accuracy": float((pred == labels).float().mean()),
            "mean_class_accuracy": sum(per_class.values()) / max(len(per_class), 1),
            "per_class_accuracy": per_class, "count": int(labels.numel())}


def task_metrics(task: str, outputs: torch.Tensor, targets: torch.Tensor, classes: list[str] | None = None) -> dict:
    return pose_metrics(outputs, targets) if task == "pose" else scene_metrics(outputs, targets, classes)


def layer_usage(layers: torch.Tensor, names: tuple[str, ...] | list[str]) -> list[dict[str, float]]:
    """Per step, the fraction of images that chose each candidate layer (the paper's Fig. 3)."""
    n = max(layers.shape[0], 1)
    return [{name: float((layers[:, t] == i).sum()) / n for i, name in enumerate(names)}
            for t in range(layers.shape[1])]
