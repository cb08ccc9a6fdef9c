"""Model set-ups the tests share: a layer selector that makes images choose different layers,
BatchNorm statistics as after training, a forced layer choice; and the comparison of two model
outputs in units of float32's rounding of each sample's output."""
from __future__ import annotations

import torch


def make_diverse_selector(model, images: torch.Tensor, seed: int) -> None:
    """Make different images choose different layers at step 1, as a trained model may.

    Random init gives nearly equal h0 for all images, so the selector's BN is calibrated on
    this batch (what training would do) and its output layer is drawn large."""
    g = torch.Generator().manual_seed(seed)
    sel = model.select_layer
    with torch.no_grad():
        feats = model.backbone(images)
        h0, _ = model.initial_state([feats[n] for n in model.config.layers])
        e = sel.fc1(h0.mean(dim=(2, 3)))
        sel.bn.running_mean.copy_(e.mean(0))
        sel.bn.running_var.copy_(e.var(0) + 1e-6)
        sel.fc2.weight.copy_(torch.randn(sel.fc2.weight.shape, generator=g) * 5)
        sel.fc2.bias.zero_()


def choice_margin(model, images: torch.Tensor) -> float:
    """The smallest gap, over samples and steps, between the best and the second-best layer score
    of the (eval-mode) selector: below the rounding difference of two runtimes, a sample's layer
    choice may legitimately differ between them."""
    scores = []
    handle = model.select_layer.register_forward_hook(lambda m, i, o: scores.append(o.detach()))
    try:
        with torch.inference_mode():
            model(images)
    finally:
        handle.remove()
    top2 = torch.stack(scores).topk(2, dim=-1).values
    return float((top2[..., 0] - top2[..., 1]).min())


def randomise_batchnorm(model: torch.nn.Module, gen: torch.Generator, keep=()) -> None:
    """Running statistics and affine parameters away from the identity, as after training
    (except the modules in ``keep``)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) and not any(m is k for k in keep):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def force_layer(model, layer: int) -> None:
    """Every sample picks candidate ``layer`` at every step."""
    with torch.no_grad():
        model.select_layer.fc2.weight.zero_()
        model.select_layer.fc2.bias.zero_()
        model.select_layer.fc2.bias[layer] = 1.0


#: float32's unit roundoff (half the spacing of floats in [1, 2))
U32 = 2.0 ** -24


def excess_u(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest ``|got - want|`` in units of u times its sample's largest ``|want|`` (samples
    along dim 0): float32 rounding at the scale of each sample's output."""
    got, want = got.detach(), want.detach()
    dims = tuple(range(1, want.dim()))
    return float(((got - want).abs() / (want.abs().amax(dim=dims, keepdim=True) * U32)).max())


def pose_excess_u(got: torch.Tensor, want: torch.Tensor) -> float:
    """:func:`excess_u` of poses [B,7]: the positions and the quaternions, each at its own scale."""
    return max(excess_u(got[:, :3], want[:, :3]), excess_u(got[:, 3:], want[:, 3:]))
