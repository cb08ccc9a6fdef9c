"""Pictures users open: attention overlays, layer-usage histograms (the paper's Fig. 3), and a
top view of ground-truth vs predicted camera positions. Matplotlib runs headless (Agg)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .atomic import atomic_write
from .normalization import centre_crop, preprocessing, resize_image


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map [0, 1] to a black-red-yellow-white ramp, ``[...,3]`` uint8 (no matplotlib needed)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    ramp = np.concatenate([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (ramp * 255).astype(np.uint8)


def overlay_attention(image: np.ndarray, alpha: np.ndarray, label: str = "", strength: float = 0.6) -> np.ndarray:
    """Blend an attention map over an RGB uint8 image ``[H,W,3]``; ``alpha [h,w]`` is upsampled
    (bilinear) and scaled to its maximum. ``label`` (e.g. "step 1: 4e") is drawn top-left."""
    h, w = image.shape[:2]
    a = torch.as_tensor(alpha, dtype=torch.float32)[None, None]
    a = torch.nn.functional.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    a = a / max(float(a.max()), 1e-12)
    out = (1 - strength * a[..., None]) * image.astype(np.float32) + strength * a[..., None] * heat_colours(a)
    canvas = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if label:
        draw = ImageDraw.Draw(canvas)
        box = draw.textbbox((3, 2), label)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((3, 2), label, fill=(255, 255, 255))
    return np.asarray(canvas)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    return atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def attention_strip(image: np.ndarray, maps: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """The image followed by one overlay per step, side by side."""
    return np.concatenate([image] + [overlay_attention(image, m, lab) for m, lab in zip(maps, labels)], axis=1)


def display_crop(model, image: torch.Tensor) -> np.ndarray:
    """The region the model saw, as RGB uint8 ``[crop,crop,3]`` (resized and cropped, not normalised)."""
    norm = preprocessing(model)
    shown = resize_image(image, norm.size) if norm.size else image
    shown = centre_crop(shown, norm.crop) if norm.crop else shown
    return (shown.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def attention_picture(model, image: torch.Tensor, result) -> np.ndarray:
    """``image`` as the model saw it with each step's attention map (``result``: a
    :class:`jsla_fast.runtime.Localization`) and the layer it chose."""
    names = model.layer_names
    labels = [f"step {t + 1}: {names[i] if i < len(names) else i}" for t, i in enumerate(result.layers)]
    return attention_strip(display_crop(model, image), result.attention, labels)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_layer_usage(usage: list[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """One bar group per step: the share of images that chose each candidate layer."""
    plt = _pyplot()
    names = list(usage[0]) if usage else []
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * max(len(usage), 1), 3.2))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        ax.bar([t + i * width for t in range(len(usage))], [100 * u[name] for u in usage], width, label=name)
    ax.set_xticks([t + 0.4 - width / 2 for t in range(len(usage))], [f"step {t + 1}" for t in range(len(usage))])
    ax.set_ylabel("images choosing the layer (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or "layer usage per step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_trajectory(truth: torch.Tensor, pred: torch.Tensor, path: str | Path, groups: list[str] | None = None,
                    title: str = "") -> Path:
    """Top view of camera positions: the two axes along which the ground truth spreads most."""
    plt = _pyplot()
    t, p = truth[:, :3].double().numpy(), pred[:, :3].double().numpy()
    axes = np.argsort(-t.std(axis=0))[:2]
    fig, ax = plt.subplots(figsize=(6, 5))
    for a, b in zip(t[:, axes], p[:, axes]):
        ax.plot([a[0], b[0]], [a[1], b[1]], color="0.8", linewidth=0.5, zorder=1)
    order = groups or ["all"] * len(t)
    for g in dict.fromkeys(order):
        idx = [i for i, x in enumerate(order) if x == g]
        ax.plot(t[idx, axes[0]], t[idx, axes[1]], "-", color="tab:green", linewidth=1.2, zorder=2)
    ax.plot([], [], "-", color="tab:green", label="ground truth")
    ax.scatter(p[:, axes[0]], p[:, axes[1]], s=6, color="tab:red", label="prediction", zorder=3)
    ax.set_xlabel(f"{'xyz'[axes[0]]} (m)")
    ax.set_ylabel(f"{'xyz'[axes[1]]} (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title or "camera positions, top view")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_sigma_vs_error(pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor, path: str | Path,
                        title: str = "") -> Path:
    """Per image, the predicted sigma (root of the summed per-axis variances) against the error,
    log-log, position and rotation side by side, with error = sigma and error = 2 sigma."""
    from .uncertainty import axis_errors

    plt = _pyplot()
    e_t, e_r = axis_errors(pred.double(), target.double())
    sigma = torch.exp(log_var.double() / 2)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, name, unit, e, s in ((axes[0], "position", "m", e_t, sigma[:, :3]), (axes[1], "rotation", "rad", e_r, sigma[:, 3:])):
        x, y = s.square().sum(1).sqrt().numpy(), e.norm(dim=1).clamp_min(1e-9).numpy()
        ax.scatter(x, y, s=6, color="tab:blue")
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        for k, style in ((1, "-"), (2, "--")):
            ax.plot([lo, hi], [k * lo, k * hi], style, color="0.4", linewidth=0.8, label=f"error = {k} sigma")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"predicted sigma ({unit})")
        ax.set_ylabel(f"{name} error ({unit})")
        ax.legend(fontsize=8)
    fig.suptitle(title or "predicted sigma against error")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)
