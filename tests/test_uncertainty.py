"""Per-image (aleatoric) uncertainty of the pose head (JSLAConfig(uncertainty="aleatoric"))."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from jsla_fast import JSLA, JSLAConfig, load_checkpoint, save_checkpoint
from jsla_fast.config import ConfigError
from jsla_fast.losses import JSLALoss, aleatoric_nll
from jsla_fast.pose import rotation_error_vector
from jsla_fast.model import MODELS


def test_unknown_or_misplaced_uncertainty_modes_are_refused():
    with pytest.raises(ConfigError, match=r"'uncertainty' = 'epistemic' is invalid: use one of \('none', 'aleatoric'\)"):
        JSLAConfig(uncertainty="epistemic")
    with pytest.raises(ConfigError, match="per-image uncertainty is for the pose task"):
        JSLAConfig(task="scene", uncertainty="aleatoric")


def test_rotation_error_vector_is_the_rotation_between_the_two():
    theta = torch.tensor([0.1, 0.7, 2.5])
    q_true = torch.tensor([[1.0, 0, 0, 0]]).expand(3, 4)
    about_z = torch.stack([torch.cos(theta / 2), 0 * theta, 0 * theta, torch.sin(theta / 2)], dim=1)
    r = rotation_error_vector(3.0 * about_z, q_true)  # an unnormalised prediction
    torch.testing.assert_close(r, torch.stack([0 * theta, 0 * theta, 2 * torch.sin(theta / 2)], dim=1))
    torch.testing.assert_close(rotation_error_vector(-about_z, q_true), r)  # q and -q: one rotation


def noisy_poses(n: int, sigma_t, sigma_r, gen: torch.Generator, offset=0.0) -> torch.Tensor:
    """``[n,7]`` poses about (offset, identity) with Gaussian position noise ``sigma_t`` (m) and
    rotation noise ``sigma_r`` (rad) per axis (small rotations: 2 sin(t/2) ~ t)."""
    half = torch.randn(n, 3, generator=gen) * sigma_r / 2
    quat = torch.cat([torch.cos(half.norm(dim=1, keepdim=True)), half], dim=1)
    return torch.cat([offset + torch.randn(n, 3, generator=gen) * sigma_t, quat / quat.norm(dim=1, keepdim=True)], dim=1)


def test_the_likelihood_recovers_a_known_noise_level(seed):
    """Targets with Gaussian noise of known sigma per axis; a free log-variance trained on the NLL
    converges to log(sigma^2) (its minimiser is the log of the mean squared error)."""
    gen = torch.Generator().manual_seed(seed)
    n = 4000
    sigma = torch.tensor([0.05, 0.2, 1.0, 0.02, 0.05, 0.1])
    pred = torch.cat([torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4)], dim=1)
    target = noisy_poses(n, sigma[:3], sigma[3:], gen)
    s = torch.zeros(6, requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        aleatoric_nll(pred, s.expand(n, 6), target).backward()
        opt.step()
    torch.testing.assert_close(torch.exp(s.detach() / 2), sigma, rtol=0.06, atol=0)


@pytest.mark.parametrize("kind", ["jsla", "posenet", "poselstm"])
def test_sigmas_are_per_image_survive_the_checkpoint_and_train_the_variance_head(tmp_path, kind, seed):
    torch.manual_seed(seed)
    cfg = JSLAConfig(task="pose", uncertainty="aleatoric", steps=2, layers=("4e", "5b"))
    model = MODELS[kind](cfg)
    images = torch.randn(4, 3, 96, 96)
    model.eval()
    out = model(images)
    assert out.log_var.shape == (4, 6) and out.pose.shape == (4, 7)
    assert bool((torch.exp(out.log_var / 2) > 0).all())  # (per image: the next test)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m.pt"))
    assert loaded.config.uncertainty == "aleatoric"
    assert torch.equal(loaded(images).log_var, out.log_var)
    # the NLL's gradient reaches the head's variance outputs
    model.train()
    loss, parts = JSLALoss(cfg)(model(images), torch.cat([torch.randn(4, 3), torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4)], 1))
    loss.backward()
    head = model.head
    assert head.weight.grad[7:13].abs().sum() > 0 and head.bias.grad[7:13].abs().min() > 0
    assert math.isfinite(parts["total"])


def test_a_head_learns_each_images_own_noise_level(seed):
    """Heteroscedastic data: images whose feature says 'noisy' have 10x the position and rotation
    noise of the others. A pose head (Linear + PoseDecoder, as in every model) trained on the NLL
    predicts each image's own sigma, in metres and radians."""
    from jsla_fast.model.pose_head import PoseDecoder

    gen = torch.Generator().manual_seed(seed)
    n = 2048
    noisy = torch.rand(n, generator=gen) < 0.5
    feats = torch.cat([noisy.float()[:, None], torch.randn(n, 7, generator=gen)], dim=1)
    sigma_t = torch.where(noisy, 0.5, 0.05)[:, None]  # metres
    sigma_r = torch.where(noisy, 0.2, 0.02)[:, None]  # radians
    target = noisy_poses(n, sigma_t, sigma_r, gen, offset=torch.tensor([3.0, -1.0, 0.5]))
    decoder = PoseDecoder(uncertainty=True)
    decoder.fit(target[:, :3])
    head = torch.nn.Linear(8, 13)
    with torch.no_grad():  # started at the mean pose, as training starts every pose head
        head.bias[:7] = torch.tensor([0.0, 0, 0, 1, 0, 0, 0])
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    for _ in range(1500):
        opt.zero_grad()
        _, pose_raw, log_var = decoder(head(feats))
        aleatoric_nll(pose_raw, log_var, target).backward()
        opt.step()
    with torch.no_grad():
        sigma = torch.exp(decoder(head(feats))[2] / 2)
    for group, want_t, want_r in ((noisy, 0.5, 0.2), (~noisy, 0.05, 0.02)):
        torch.testing.assert_close(sigma[group, :3].median(0).values, torch.full((3,), want_t), rtol=0.1, atol=0)
        torch.testing.assert_close(sigma[group, 3:].median(0).values, torch.full((3,), want_r), rtol=0.1, atol=0)


def test_without_uncertainty_there_is_no_log_variance():
    out = JSLA(JSLAConfig(task="pose", steps=1, layers=("5b",))).eval()(torch.randn(1, 3, 64, 64))
    assert out.log_var is None and out.pose.shape == (1, 7)


def test_calibration_recovers_the_noise_level_and_the_metrics_read_a_gaussian(seed):
    """Sigmas predicted as 1 (m, rad) for errors of known sigma: the factors are those sigmas, and
    after scaling, the errors fall within 1 and 2 sigma as often as a Gaussian's."""
    from jsla_fast.uncertainty import calibration_factors, uncertainty_metrics

    gen = torch.Generator().manual_seed(seed)
    n = 20000
    target = noisy_poses(n, 0.3, 0.01, gen)
    pred = torch.cat([torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4)], dim=1)
    fp, fr = calibration_factors(pred, torch.zeros(n, 6), target)
    assert fp == pytest.approx(0.3, rel=0.02) and fr == pytest.approx(0.01, rel=0.02)
    log_var = torch.log(torch.tensor([fp] * 3 + [fr] * 3)).mul(2).expand(n, 6)
    m = uncertainty_metrics(pred, log_var, target)
    for q in ("position", "rotation"):
        assert m[q]["within_1_sigma"] == pytest.approx(0.683, abs=0.01)
        assert m[q]["within_2_sigma"] == pytest.approx(0.954, abs=0.01)
    # sigmas that follow the errors rank with them
    wide = torch.rand(n, generator=gen) < 0.5
    target[wide, :3] *= 10
    log_var = torch.where(wide[:, None], 2 * math.log(3.0), 2 * math.log(0.3)).expand(n, 6).clone()
    assert uncertainty_metrics(pred, log_var, target)["position"]["spearman_sigma_error"] > 0.5


def test_mc_dropout_runs_the_network_once_and_is_reproducible(seed):
    from jsla_fast.runtime import Localizer
    from jsla_fast.uncertainty import mc_dropout

    torch.manual_seed(seed)
    image = torch.rand(3, 240, 320)
    # K = 1 without dropout: the deterministic pose, exactly
    plain = JSLA(JSLAConfig(task="pose", dropout=0.0, steps=2, layers=("4e", "5b"))).eval()
    # (each Localizer optimises its own copy: folding an already folded model moves it by ulps)
    want = Localizer(copy.deepcopy(plain), mc_samples=None).localize(image)
    got = Localizer(copy.deepcopy(plain), mc_samples=1).localize(image)
    assert got.pose == want.pose and want.position_sigma_m is None
    # K samples: the backbone and the recurrence run once, the head K times
    model = JSLA(JSLAConfig(task="pose", dropout=0.5, uncertainty="aleatoric", steps=2, layers=("4e", "5b"))).eval()
    with torch.no_grad():
        model.head.weight.mul_(20)  # a head whose samples spread
    calls = {"backbone": 0, "head": 0}
    model.backbone.register_forward_hook(lambda *a: calls.__setitem__("backbone", calls["backbone"] + 1))
    model.head.register_forward_hook(lambda *a: calls.__setitem__("head", calls["head"] + 1))
    x = torch.randn(2, 3, 96, 96)
    out = mc_dropout(model, x, 16, torch.Generator().manual_seed(1))
    assert calls == {"backbone": 1, "head": 2}  # the normal forward, then all 16 samples in one batch
    # without aleatoric outputs the variance is the samples' spread alone: real, not the clamp
    spread_only = JSLA(JSLAConfig(task="pose", dropout=0.5, steps=2, layers=("4e", "5b"))).eval()
    with torch.no_grad():
        spread_only.head.weight.mul_(20)
    assert spread_only(x).log_var is None
    assert bool((mc_dropout(spread_only, x, 16, torch.Generator().manual_seed(1)).log_var > -20).all())
    torch.testing.assert_close(out.pose[:, 3:].norm(dim=1), torch.ones(2))
    # reproducible for a seed, different for another
    a = mc_dropout(model, x, 16, torch.Generator().manual_seed(7)).pose
    assert torch.equal(a, mc_dropout(model, x, 16, torch.Generator().manual_seed(7)).pose)
    assert not torch.equal(a, mc_dropout(model, x, 16, torch.Generator().manual_seed(8)).pose)
    loc1, loc2 = (Localizer(copy.deepcopy(model), mc_samples=8, mc_seed=3) for _ in range(2))
    assert loc1.localize(image).pose == loc2.localize(image).pose


@pytest.mark.parametrize("k", [0, -2, 1.5])
def test_mc_samples_below_one_are_refused(k):
    from jsla_fast.runtime import Localizer

    with pytest.raises(ValueError, match=f"mc_samples must be an integer >= 1 .*got {k!r}"):
        Localizer(JSLA(JSLAConfig(task="pose", steps=1, layers=("5b",))).eval(), mc_samples=k)


def test_predict_and_evaluate_refuse_mc_samples_below_one_at_start(tmp_path):
    import subprocess
    import sys

    path = save_checkpoint(JSLA(JSLAConfig(task="pose", steps=1, layers=("5b",))).eval(), tmp_path / "m.pt")
    out = subprocess.run([sys.executable, "-m", "jsla_fast.predict", "--checkpoint", str(path), "--mc-samples", "0",
                          str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "mc_samples must be an integer >= 1 (or None for no MC dropout), got 0" in out.stderr
