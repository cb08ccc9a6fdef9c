"""Per-image (aleatoric) uncertainty of the pose head (JSLAConfig(uncertainty="aleatoric"))."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from jsla_fast import JSLA, JSLAConfig, load_checkpoint, save_checkpoint
from jsla_fast.config import ConfigError, LossConfig
from jsla_fast.losses import JSLALoss, aleatoric_nll, posenet_terms
from jsla_fast.pose import rotation_error_vector
from jsla_fast.model import MODELS
from jsla_fast.model.base import JSLAOutput


def test_unknown_or_misplaced_uncertainty_modes_are_refused():
    with pytest.raises(ConfigError, match=r"'uncertainty' = 'epistemic' is invalid: use one of \('none', 'aleatoric'\)"):
        JSLAConfig(uncertainty="epistemic")
    with pytest.raises(ConfigError, match="per-image uncertainty is for the pose task"):
        JSLAConfig(task="scene", uncertainty="aleatoric")
    with pytest.raises(ConfigError, match=r"loss.aleatoric = 'laplace' is not a way to train an aleatoric head; "
                                          r"use one of \('decoupled', 'attenuation'\)"):
        LossConfig(aleatoric="laplace")


@pytest.mark.parametrize("mode", ["attenuation", "decoupled"])
def test_what_each_aleatoric_loss_trains(mode, seed):
    """decoupled: the pose gets exactly the pose loss's gradient and the variances the likelihood's;
    attenuation: the likelihood trains both, so the pose's gradient depends on the variances."""
    gen = torch.Generator().manual_seed(seed)
    target = noisy_poses(8, 0.5, 0.2, gen)
    pose_raw = (target + 0.1 * torch.randn(8, 7, generator=gen)).requires_grad_()
    log_var = torch.randn(8, 6, generator=gen).requires_grad_()
    cfg = JSLAConfig(uncertainty="aleatoric", loss=LossConfig(aleatoric=mode))
    loss_fn = JSLALoss(cfg)
    loss_fn.fit(target, target[0])
    out = JSLAOutput(pose=None, logits=None, layers=torch.zeros(8, 0), attention=[], selection_logits=[],
                     pose_raw=pose_raw, log_var=log_var)
    total, _ = loss_fn(out, target)
    g_pose, g_var = torch.autograd.grad(total, [pose_raw, log_var])
    assert g_var.abs().min() > 0
    want_var = torch.autograd.grad(aleatoric_nll(pose_raw, log_var, target), log_var)[0]
    torch.testing.assert_close(g_var, want_var)
    plain = JSLALoss(JSLAConfig())
    plain.fit(target, target[0])
    want_pose = torch.autograd.grad(plain.weigh(*posenet_terms(pose_raw, target)), pose_raw)[0]
    if mode == "decoupled":
        torch.testing.assert_close(g_pose, want_pose, rtol=1e-6, atol=1e-8)
        assert loss_fn.trains_weighting
    else:
        torch.testing.assert_close(g_pose, torch.autograd.grad(aleatoric_nll(pose_raw, log_var, target), pose_raw)[0])
        assert not torch.allclose(g_pose, want_pose) and not loss_fn.trains_weighting


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
    variance = model.head.variance[-1]  # decoupled (the default): the log-variances' own layers
    assert variance.weight.grad.abs().sum() > 0 and variance.bias.grad.abs().min() > 0
    assert math.isfinite(parts["total"])


@pytest.mark.parametrize("kind", ["jsla", "posenet", "poselstm"])
def test_decoupled_variances_do_not_train_the_network(kind, seed):
    """The likelihood reaches only the head's variance rows; the network trains on the pose loss,
    and at inference the head is the plain linear layer."""
    torch.manual_seed(seed)
    cfg = JSLAConfig(task="pose", uncertainty="aleatoric", steps=2, layers=("4e", "5b"),
                     loss=LossConfig(aleatoric="decoupled"))
    model = MODELS[kind](cfg).train()
    target = noisy_poses(4, 0.5, 0.2, torch.Generator().manual_seed(seed))
    out = model(torch.randn(4, 3, 64, 64))
    aleatoric_nll(out.pose_raw, out.log_var, target, detach_error=True).backward()
    head = model.head
    assert all(p.grad.abs().sum() > 0 for p in head.variance.parameters())
    others = [p.grad for n, p in model.named_parameters() if not n.startswith("head.variance.")]
    assert all(g is None or g.abs().sum() == 0 for g in others)  # the pose FC and the whole network
    x = torch.randn(3, head.in_features)
    with torch.no_grad():
        assert torch.equal(head(x)[:, :7], torch.nn.functional.linear(x, head.weight, head.bias))
        assert torch.equal(head(x)[:, 7:], head.variance(x))


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


@pytest.mark.slow
def test_onnx_export_carries_the_calibrated_log_variances(tmp_path, seed):
    from jsla_fast.export import compare_with_onnxruntime, main, output_names
    from jsla_fast.normalization import Normalization
    import onnxruntime as ort

    torch.manual_seed(seed)
    model = JSLA(JSLAConfig(task="pose", uncertainty="aleatoric", steps=2, layers=("4e", "5b"))).eval()
    model.normalization = Normalization(mean=torch.zeros(3, 1, 1), size=(96, 96), crop=96)
    model.pose_decoder.set_calibration(1.5, 0.5)
    ckpt = save_checkpoint(model, tmp_path / "m.pt")
    out = tmp_path / "m.onnx"
    assert main(["--checkpoint", str(ckpt), "--onnx", str(out)]) == 0
    assert output_names(model) == ["pose", "layers", "log_var"]
    images = torch.randn(3, 3, 96, 96)
    got = dict(zip(output_names(model), ort.InferenceSession(str(out)).run(None, {"images": images.numpy()})))
    with torch.inference_mode():
        want = model(images)
    torch.testing.assert_close(torch.from_numpy(got["log_var"]), want.log_var, rtol=0, atol=1e-4)
    assert compare_with_onnxruntime(model, out) < 1e-4
    # the calibration is in the graph: the same model uncalibrated gives other log-variances
    model.pose_decoder.set_calibration(1.0, 1.0)
    with torch.inference_mode():
        plain = model(images).log_var
    torch.testing.assert_close(want.log_var - plain, torch.log(torch.tensor([1.5] * 3 + [0.5] * 3)).expand(3, 6) * 2)


def _qmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    w = a[:, :1] * b[:, :1] - (a[:, 1:] * b[:, 1:]).sum(1, keepdim=True)
    return torch.cat([w, a[:, :1] * b[:, 1:] + b[:, :1] * a[:, 1:] + torch.cross(a[:, 1:], b[:, 1:], dim=1)], dim=1)


def test_mc_dropout_calibration_recovers_a_known_scale_and_every_runtime_applies_it(tmp_path, seed):
    """Targets drawn about each image's MC-dropout mean with c times its own MC sigma per axis: the
    fitted factors are c, they survive the checkpoint, scale the sigmas the Localizer reports
    (which then say they are calibrated), and a file from before MC calibration loads uncalibrated."""
    from torch.utils.data import DataLoader, TensorDataset

    from jsla_fast.calibrate import calibrate_model
    from jsla_fast.metrics import run_model
    from jsla_fast.runtime import Localizer
    from jsla_fast.uncertainty import MCDropout, mc_dropout

    torch.manual_seed(seed)
    model = MODELS["posenet"](JSLAConfig(task="pose", dropout=0.5)).eval()
    with torch.no_grad():
        model.head.weight.mul_(20)  # samples that spread
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(96, 3, 32, 32, generator=gen)
    placeholder = TensorDataset(images, torch.zeros(96, 7))
    # what calibrate_model's own pass sees: the same batches, the same sample generator (seed 0)
    ref = run_model(MCDropout(model, 16), DataLoader(placeholder, batch_size=16))
    sigma = torch.exp(ref.log_var / 2)
    c = torch.tensor([2.5, 0.4])
    pos = ref.outputs[:, :3] + c[0] * sigma[:, :3] * torch.randn(96, 3, generator=gen)
    rot = c[1] * sigma[:, 3:] * torch.randn(96, 3, generator=gen)  # the error vector each target leaves
    delta = torch.cat([torch.sqrt(1 - rot.square().sum(1, keepdim=True) / 4), rot / 2], dim=1)
    quat = _qmul(ref.outputs[:, 3:], delta * torch.tensor([1.0, -1, -1, -1]))  # q_true = q^ delta^-1
    targets = torch.cat([pos, quat], dim=1)
    torch.testing.assert_close(rotation_error_vector(ref.outputs[:, 3:], quat), rot, rtol=1e-4, atol=1e-6)
    record = calibrate_model(model, TensorDataset(images, targets), mc_samples=16)
    factors = torch.tensor([record["mc"]["position"], record["mc"]["rotation"]])
    torch.testing.assert_close(factors, c, rtol=0.12, atol=0)  # 288 errors per quantity: ~4 % spread
    assert record["mc"]["samples"] == 16 and "position" not in record  # no predicted sigmas to calibrate
    for q in ("position", "rotation"):
        assert 0.6 < record["mc"]["validation"][q]["within_1_sigma"] < 0.76
    # in the model: the checkpoint keeps it, mc_dropout applies it, the Localizer says so
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m.pt"))
    assert int(loaded.pose_decoder.mc_samples) == 16 and torch.equal(loaded.pose_decoder.mc_scale, factors.float())
    x = images[:2]
    after = mc_dropout(loaded, x, 16, torch.Generator().manual_seed(3)).log_var
    loaded.pose_decoder.set_mc_calibration(1.0, 1.0, 0)
    before = mc_dropout(loaded, x, 16, torch.Generator().manual_seed(3)).log_var
    torch.testing.assert_close(after - before, (2 * torch.log(factors.float())).repeat_interleave(3).expand(2, 6))
    image = torch.rand(3, 48, 64)
    assert Localizer(copy.deepcopy(model), mc_samples=8).localize(image).sigma_calibrated is True
    assert Localizer(copy.deepcopy(loaded), mc_samples=8).localize(image).sigma_calibrated is False
    # a checkpoint written before MC calibration existed (no mc_* buffers): loads, uncalibrated
    state = {k: v for k, v in model.state_dict().items() if ".mc_" not in k}
    old = MODELS["posenet"](JSLAConfig(task="pose", dropout=0.5))
    old.load_state_dict(state)
    assert int(old.pose_decoder.mc_samples) == 0 and old.pose_decoder.mc_scale.tolist() == [1.0, 1.0]


def test_calibrate_refuses_what_it_cannot_calibrate(seed):
    from torch.utils.data import TensorDataset

    from jsla_fast.calibrate import CalibrationError, calibrate_model

    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.zeros(4, 7))
    plain = MODELS["posenet"](JSLAConfig(task="pose", dropout=0.0))
    with pytest.raises(CalibrationError, match="the model predicts no sigmas .*pass --mc-samples K"):
        calibrate_model(plain, data)
    with pytest.raises(CalibrationError, match="--mc-samples: the model has no dropout"):
        calibrate_model(plain, data, mc_samples=8)
    with pytest.raises(ValueError, match="mc_samples must be an integer >= 1"):
        calibrate_model(MODELS["posenet"](JSLAConfig(task="pose")), data, mc_samples=0)
    with pytest.raises(CalibrationError, match="scene model"):
        calibrate_model(MODELS["posenet"](JSLAConfig(task="scene", num_classes=3)), data)
    with pytest.raises(CalibrationError, match="no images"):
        calibrate_model(MODELS["posenet"](JSLAConfig(task="pose")), TensorDataset(torch.zeros(0, 3, 32, 32)), 8)
