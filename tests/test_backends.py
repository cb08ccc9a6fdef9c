"""Backends at the model level: the dispatch table, the whole JSLA with fused ops against the
reference (eval outputs, training gradients), the Localizer runtime, ONNX export and the bench."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from helpers.backends import require_triton
from helpers.models import choice_margin, excess_u, force_layer, make_diverse_selector, pose_excess_u, randomise_batchnorm
from jsla_fast import JSLA, JSLAConfig, save_checkpoint
from jsla_fast.config import layer_shapes
from jsla_fast.ops import AUTO_ORDER, BackendUnavailable, available, resolve, why_unavailable
from jsla_fast.model.jsla import gather_attention
from jsla_fast.normalization import Normalization
from jsla_fast import executors
from jsla_fast.ops import onednn
from jsla_fast.executors import EXECUTORS, PackedConvReLU, PackedInception, onednn_backbone, resolve_executor
from jsla_fast.runtime import Localizer

# the fused CPU backends the whole model runs on (Triton runs on CPU only interpreted: far too slow
# for a 224x224 model; its model-level checks are GPU tests)
FUSED = [name for name in AUTO_ORDER["cpu"] if name != "reference"]


@pytest.fixture(params=FUSED)
def fused(request):
    assert why_unavailable(request.param, "cpu") is None, why_unavailable(request.param, "cpu")
    return request.param


def trained_like_model(seed: int, images: torch.Tensor, **cfg) -> JSLA:
    torch.manual_seed(seed)
    model = JSLA(JSLAConfig(**cfg)).eval()
    # the selector's BN is calibrated on the batch by make_diverse_selector instead
    randomise_batchnorm(model, torch.Generator().manual_seed(seed), keep=[model.select_layer.bn])
    # a random selector may still send a small batch to one layer: redraw it until step 1 differs,
    # and until no sample sits within CHOICE_MARGIN of a tie, which another runtime's fp32 rounding
    # (folded BN, another backbone executor: ~1e-5 here) could flip
    for attempt in range(50):
        make_diverse_selector(model, images, seed + attempt)
        with torch.inference_mode():
            diverse = len(set(model(images).layers[:, 0].tolist())) > 1
        if diverse and choice_margin(model, images) > CHOICE_MARGIN:
            return model
    raise AssertionError(f"no selector drawn from seed {seed} is both diverse and clear of ties")


#: the smallest score gap between a sample's best and second-best layer in the test models: 100x
#: the runtimes' fp32 differences, so every runtime must make the same choices
CHOICE_MARGIN = 1e-3


# -- the dispatch table ---------------------------------------------------------------------------
def test_dispatch_table_names_and_errors():
    assert available("cpu")[0] == "cpp" and resolve("auto", "cpu").name == "cpp"
    assert resolve("reference", "cpu").name == "reference"
    with pytest.raises(BackendUnavailable, match="unknown backend 'fast'"):
        resolve("fast")
    with pytest.raises(BackendUnavailable, match="runs on cuda, not cpu"):
        resolve("cuda", "cpu")
    with pytest.raises(BackendUnavailable, match="runs on cpu, not cuda"):
        resolve("cpp", "cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        JSLA(JSLAConfig(), backend="fastest")
    with pytest.raises(BackendUnavailable, match="runs on cuda, not cpu"):
        JSLA(JSLAConfig(), backend="cuda")  # a CPU model


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is missing")
def test_cuda_backend_says_why_it_is_missing():
    # a CPU build of torch: the extension has no CUDA kernels, and there is no device
    reason = why_unavailable("cuda", "cuda")
    assert reason is not None
    assert ("built without its CUDA kernels" in reason and torch.__version__ in reason) or "no CUDA device" in reason
    assert "cuda" not in available("cpu")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    require_triton()
    assert "triton" not in available("cpu")  # never picked by 'auto' on CPU: the interpreter is slow
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve("triton", "cpu").name == "triton"
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        resolve("triton", "cpu")


def test_the_table_says_which_backends_get_the_folded_attention(monkeypatch, seed):
    """The model asks the entry (``folds_attention``), not the backend's name, whether to hand the
    attention to the fused op on the folded conv or to run E_att -> BN -> C_A unfolded."""
    from dataclasses import replace

    import jsla_fast.ops as ops
    from jsla_fast.model import SpatialAttention

    assert {name for name, b in ops.BACKENDS.items() if not b.folds_attention} == {"reference"}
    calls, fused_op = [], ops.attention

    def recording(*args, backend, **kwargs):
        calls.append(backend.name)
        return fused_op(*args, backend=backend, **kwargs)

    monkeypatch.setattr(ops, "attention", recording)
    torch.manual_seed(seed)
    att = SpatialAttention(32, 96).eval()
    feat, h = torch.randn(2, 32, 7, 7), torch.randn(2, 96, 7, 7)
    cpp = ops.BACKENDS["cpp"]
    with torch.inference_mode():
        for backend in (None, ops.BACKENDS["reference"], replace(cpp, name="unfolding", folds_attention=False), cpp):
            att(feat, h, backend)
        att.bn.train()  # batch statistics: nothing to fold
        att(feat, h, cpp)
    assert calls == ["cpp"]


# -- the whole model ------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["pose", "scene"])
def test_model_with_fused_backend_equals_reference(fused, task, images, seed):
    ref = trained_like_model(seed, images, task=task)
    fast = copy.deepcopy(ref).set_backend(fused)
    with torch.inference_mode():
        want, got = ref(images), fast(images)
    assert got.layers.tolist() == want.layers.tolist()
    assert len(set(want.layers[:, 0].tolist())) > 1, "the test batch should choose different layers"
    if task == "pose":
        torch.testing.assert_close(got.pose, want.pose, rtol=0, atol=1e-4)
    else:
        torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-4)
    for a, b in zip(got.attention, want.attention):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _grads(model: JSLA, images: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    model.zero_grad()
    out = model(images, generator=torch.Generator().manual_seed(seed))
    (out.pose_raw.square().sum() + sum(s.square().sum() for s in out.selection_logits) * 0.01).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("frozen_attention_bn", [False, True], ids=["train-bn", "frozen-attention-bn"])
def test_training_gradients_match_reference(fused, frozen_attention_bn, seed):
    """Training with the fused ops gives the reference's gradients. With BN in training mode the
    attention can't be folded (batch statistics) and runs the reference path, the ConvLSTM step is
    fused; with the attention's BN frozen the fused attention op is in the graph too."""
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    ref = JSLA(JSLAConfig(dropout=0.0)).train()
    randomise_batchnorm(ref, torch.Generator().manual_seed(seed))
    if frozen_attention_bn:
        for branch in ref.branches:
            branch.attention.bn.eval()
    fast = copy.deepcopy(ref).set_backend(fused)
    want, got = _grads(ref, images, seed), _grads(fast, images, seed)
    assert want.keys() == got.keys() and any("embed_att" in n for n in want)
    # each gradient to 1e-4 of its own scale; gradients that are analytically ~0 (biases before a
    # BN in training mode or before the softmax) hold rounding noise: 1% of the largest one floors the scale
    largest = max(g.abs().max() for g in want.values())
    for name in want:
        scale = torch.maximum(want[name].abs().max(), 1e-2 * largest)
        torch.testing.assert_close(got[name] / scale, want[name] / scale, rtol=0, atol=1e-4, msg=name)


# -- the runtime ----------------------------------------------------------------------------------
def test_localizer_equals_reference_model(images, seed, tmp_path):
    ref = trained_like_model(seed, images)
    ref.normalization = Normalization(mean=torch.zeros(3, 1, 1), std=None, size=(256, 256), crop=224)
    with torch.inference_mode():
        want = ref(images)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ref, ckpt)
    threads = torch.get_num_threads()
    loc = Localizer(ckpt, threads=1)
    try:
        assert torch.get_num_threads() == 1 and loc.backend == "cpp"
        got = loc(images)
    finally:
        torch.set_num_threads(threads)
    assert got.layers.tolist() == want.layers.tolist()
    torch.testing.assert_close(got.pose, want.pose, rtol=0, atol=1e-4)
    for module in loc.model.modules():  # BN folded away everywhere
        assert not isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) or module in [
            b.attention.bn for b in loc.model.branches]
    result = loc.localize(torch.rand(3, 300, 400))
    assert len(result.pose) == 7 and len(result.layers) == 3 and result.ms > 0


def static_and_eager(model: JSLA, images: torch.Tensor):
    with torch.inference_mode():
        want = model(images)
        model.static_graph = True
        try:
            got = model(images)
        finally:
            model.static_graph = False
    assert got.attention == [] and len(got.branch_attention) == model.config.steps
    assert torch.equal(got.layers, want.layers)
    return got, want


@pytest.mark.parametrize("backend", ["reference", *FUSED])
def test_static_form_equals_eager_bit_for_bit_when_samples_agree(backend, images, seed):
    """The static form (what CUDA graphs and ONNX capture: every branch runs on the whole batch,
    each sample's chosen one is gathered) equals the eager model, which runs only the chosen
    branch, bit for bit whenever all samples choose the same layer at each step: for every forced
    layer, and for single images (every camera frame) of a model whose images choose differently."""
    base = trained_like_model(seed, images).set_backend(backend)
    cases = [(layer, images) for layer in range(len(base.branches))] + [(None, images[i:i + 1]) for i in range(2)]
    for layer, batch in cases:
        model = copy.deepcopy(base)
        if layer is not None:
            force_layer(model, layer)
        got, want = static_and_eager(model, batch)
        assert all(len(set(want.layers[:, t].tolist())) == 1 for t in range(model.config.steps)), want.layers
        if layer is not None:
            assert set(want.layers.flatten().tolist()) == {layer}
        assert torch.equal(got.pose, want.pose) and torch.equal(got.pose_raw, want.pose_raw), (layer, len(batch))
        assert all(torch.equal(a, b) for a, b in zip(got.selection_logits, want.selection_logits, strict=True))
        for t, maps in enumerate(got.branch_attention):
            assert torch.equal(gather_attention(maps, got.layers[:, t]), want.attention[t]), (layer, len(batch), t)


#: A mixed batch's static form agrees with the eager model within this many u (2^-24 times each
#: sample's largest output; positions and quaternions each at their own scale). Where a step's
#: samples chose differently, the eager model runs each branch on its sub-batch, and the
#: convolutions sum in another order (oneDNN picks its algorithm by batch size; the cpp attention
#: kernel splits its channel sum when a batch has few positions): measured, the branch outputs x_t
#: change by <= 7 u and 1 u rms of their sample's largest |x_t| (sub-batches of 1-3 of 4, both
#: backends). A random +-1 u change of every x_t (1 u rms) moves the pose by <= 8.5 u (measured,
#: several seeds, both backends), so ~9 u is expected; 32 u leaves room for seeds whose heads
#: condition worse. Measured end to end: pose <= 6.6 u, maps <= 4.5 u.
MIXED_BUDGET_U = 32


@pytest.mark.parametrize("backend", ["reference", *FUSED])
def test_static_form_of_a_mixed_batch_agrees_to_float32_rounding(backend, images, seed, monkeypatch):
    """A batch whose samples choose different layers: the same choices exactly, poses and maps
    within MIXED_BUDGET_U; a static form that gathers the wrong branch fails the same comparison."""
    model = trained_like_model(seed, images).set_backend(backend)
    got, want = static_and_eager(model, images)
    assert len(set(want.layers[:, 0].tolist())) > 1, "the test batch should choose different layers"
    assert pose_excess_u(got.pose, want.pose) <= MIXED_BUDGET_U
    for t, maps in enumerate(got.branch_attention):
        assert excess_u(gather_attention(maps, got.layers[:, t]), want.attention[t]) <= MIXED_BUDGET_U, t
    # mutations: each sample's map taken from its neighbour's choice, and a gather of the next branch
    wrong_maps = gather_attention(got.branch_attention[0], got.layers[:, 0].roll(1))
    assert excess_u(wrong_maps, want.attention[0]) > MIXED_BUDGET_U
    every = JSLA._attend_every

    def next_branch(self, feats, h, index, backend):
        return every(self, feats, h, (index + 1) % len(self.branches), backend)

    monkeypatch.setattr(JSLA, "_attend_every", next_branch)
    with torch.inference_mode():
        model.static_graph = True
        wrong = model(images)
    assert pose_excess_u(wrong.pose, want.pose) > MIXED_BUDGET_U


#: bfloat16's unit roundoff: 8 significant bits
U_BF16 = 2.0 ** -8
#: The bfloat16 Localizer's pose against the float32 reference model, in u = 2^-8: quaternion
#: components (unit, so absolute) and positions at the scale of the sample's largest |x|. Budget:
#: - the last roundings, each <= 1 u: the head's output; the decode, x = scale * raw + mean
#:   (2 u of |x|) and q / |q| (norm, divide: 2 u); at most 3 u per component;
#: - everything before the head: every weight and every layer's output rounded to bf16 (about 60
#:   layers deep), accumulations in float32; the errors' random signs add in quadrature and global
#:   average pooling averages them. Measured (3 seeds x 4 forced layers): the features entering the
#:   head <= 2.1 u of their largest, the pose <= 1.5 u in all. 3 u for it, as AMX's ConvLSTM rounds
#:   its gates once more per step (ops/onednn.py);
#: 6 u = 0.023 in all.
BF16_BUDGET_U = 6


def bf16_pose_excess_u(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest error of ``got`` (bf16) against ``want`` (fp32) in u = 2^-8: quaternions
    absolute, positions of each sample's largest |x|. q and -q are one rotation, and a qw near 0
    may round to either sign: the signs are aligned first."""
    got = got.float()
    quat = got[:, 3:] * torch.where((got[:, 3:] * want[:, 3:]).sum(1, keepdim=True) < 0, -1.0, 1.0)
    pos = (got[:, :3] - want[:, :3]).abs() / want[:, :3].abs().amax(dim=1, keepdim=True)
    return float(torch.cat([pos, (quat - want[:, 3:]).abs()], dim=1).max()) / U_BF16


@pytest.mark.skipif(onednn.native_bfloat16() is not None,
                    reason=f"a bfloat16 Localizer needs native bf16: {onednn.native_bfloat16()}")
def test_localizer_in_bfloat16_gives_the_float32_pose_to_bf16_rounding(images, seed):
    """For each forced layer (so the choices agree whatever the rounding), the bf16 Localizer's
    pose is the float32 reference model's within BF16_BUDGET_U, and the float32 pose of another
    layer's branch fails the same comparison."""
    model = trained_like_model(seed, images)
    forced = [copy.deepcopy(model) for _ in model.branches]
    wants = []
    for layer, m in enumerate(forced):
        force_layer(m, layer)
        with torch.inference_mode():
            wants.append(m(images[:2]))
    for layer, m in enumerate(forced):
        want = wants[layer]
        loc = Localizer(m, dtype="bfloat16")
        assert loc.backend == "cpp" and loc.executor == "onednn"  # auto on a CPU with native bf16
        assert {p.dtype for p in loc.model.parameters()} == {torch.bfloat16}
        assert all(t.dtype == torch.bfloat16 for b in loc.model.branches for t in b.attention._frozen)
        got = loc(images[:2])  # float32 input, cast by the runtime
        assert got.pose.dtype == torch.bfloat16 and torch.equal(got.layers, want.layers)
        assert set(got.layers.flatten().tolist()) == {layer}
        assert bf16_pose_excess_u(got.pose, want.pose) <= BF16_BUDGET_U, layer
        assert bf16_pose_excess_u(got.pose, wants[(layer + 1) % len(wants)].pose) > BF16_BUDGET_U


def test_bfloat16_is_refused_on_a_cpu_without_native_bf16(monkeypatch):
    """Emulated bf16 would be slower than float32: the Localizer says so and what to use."""
    model = JSLA(JSLAConfig()).eval()
    monkeypatch.setattr(onednn, "cpu_flags", lambda: {"avx512f", "fma"})
    with pytest.raises(ValueError, match=r"dtype='bfloat16' on this CPU: .*neither AVX512_BF16 nor AMX-BF16"
                                         r".*use dtype='float32'"):
        Localizer(copy.deepcopy(model), dtype="bfloat16")
    monkeypatch.setattr(onednn, "cpu_flags", lambda: None)
    with pytest.raises(ValueError, match="cannot read /proc/cpuinfo to check for AVX512_BF16 or AMX-BF16"):
        Localizer(copy.deepcopy(model), dtype="bfloat16")
    for flags in ({"avx512_bf16"}, {"amx_bf16"}):
        monkeypatch.setattr(onednn, "cpu_flags", lambda flags=flags: flags)
        assert onednn.native_bfloat16() is None
    Localizer(copy.deepcopy(model), dtype="float32", check=False)  # float32 needs neither


def test_localizer_dtype_errors():
    model = JSLA(JSLAConfig()).eval()
    with pytest.raises(BackendUnavailable, match="does not support torch.float16"):
        Localizer(copy.deepcopy(model), backend="cpp", dtype=torch.float16)
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        Localizer(copy.deepcopy(model), cuda_graph=True)
    with pytest.raises(ValueError, match="dtype must be"):
        Localizer(copy.deepcopy(model), dtype="int8")
    with pytest.raises(TypeError, match="Localizer takes a checkpoint path or a jsla_fast model.*not a Conv2d"):
        Localizer(torch.nn.Conv2d(3, 3, 1))


# Every executor of the table. The test extra (pip install -e ".[test]") installs openvino, and
# the C++ compiler that builds the extension is the one inductor needs; onednn needs an x86 torch
# (oneDNN), torchscript and eager nothing: so on CI every one can run, and one that can't is a
# failure naming why, not a skip. Inductor compiles for ~30 s on 2 cores, once per test.
@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_every_backbone_executor_equals_the_reference_model(executor, images, seed):
    """fp32: the pose within 1e-4 of the reference eager model and the same layer choice, at the
    batch the executor was built for (1) and at another (4)."""
    reason = EXECUTORS[executor].unavailable()
    if reason is not None:
        pytest.fail(f"backbone executor {executor!r} cannot run here ({reason}); the test extra and the "
                    "extension's C++ toolchain provide every executor")
    model = trained_like_model(seed, images)
    loc = Localizer(copy.deepcopy(model), backbone=executor)
    assert loc.executor == executor and loc.backend == "cpp"
    for batch in (images[:1], images):  # per batch: the maps come on the finest grid chosen in it
        with torch.inference_mode():
            want = model(batch)
        got = loc(batch)
        assert got.layers.tolist() == want.layers.tolist()
        torch.testing.assert_close(got.pose, want.pose, rtol=0, atol=1e-4)
        for a, b in zip(got.attention, want.attention, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_onednn_executor_packs_every_conv_and_merges_the_1x1s(images, seed):
    model = trained_like_model(seed, images)
    loc = Localizer(copy.deepcopy(model), backbone="onednn")
    packed = [m for m in loc.model.backbone.modules() if isinstance(m, PackedConvReLU)]
    blocks = [m for m in loc.model.backbone.modules() if isinstance(m, PackedInception)]
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    # three 1x1 convs per block become one
    assert len(blocks) == len(model.backbone.blocks) and len(packed) == len(convs) - 2 * len(blocks)
    assert not [m for m in loc.model.backbone.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d))]
    pools = [m for m in model.backbone.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len([m for m in loc.model.backbone.modules() if isinstance(m, executors.MaxPool)]) == len(pools) == 13
    copy.deepcopy(loc.model).to(torch.float32)  # the packed weights are no parameters: .to/deepcopy work
    with pytest.raises(RuntimeError, match=r"fold the BatchNorm layers first \(model.fuse\(\)\)"):
        onednn_backbone(copy.deepcopy(model).backbone, images[:1])


def test_backbone_executor_errors(monkeypatch, images, seed):
    model = trained_like_model(seed, images)
    with pytest.raises(ValueError, match="backbone executor 'fastest' unknown; choose one of auto, onednn"):
        Localizer(copy.deepcopy(model), backbone="fastest")
    with pytest.raises(ValueError, match="'openvino' runs float32 or bfloat16 Localizers, not torch.float64"):
        Localizer(copy.deepcopy(model), backbone="openvino", dtype="float64")
    monkeypatch.setattr(executors.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"'openvino' cannot run here: OpenVINO is not installed \(pip install"):
        Localizer(copy.deepcopy(model), backbone="openvino")


def test_fuse_folds_batchnorm_exactly_in_the_backbone(seed):
    torch.manual_seed(seed)
    model = JSLA(JSLAConfig()).eval()
    randomise_batchnorm(model, torch.Generator().manual_seed(seed))
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        want = model.backbone(x)
        assert model.fuse() == 57 + 1  # every BasicConv2d, and the layer selector
        got = model.backbone(x)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5)


# -- export and bench -------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_cli_writes_onnx_that_matches_pytorch(images, seed, tmp_path):
    from jsla_fast.export import compare_with_onnxruntime, main

    model = trained_like_model(seed, images)
    model.normalization = Normalization(mean=torch.zeros(3, 1, 1), size=(256, 256), crop=224)
    ckpt = save_checkpoint(model, tmp_path / "model.pt")
    out = tmp_path / "model.onnx"
    assert main(["--checkpoint", str(ckpt), "--onnx", str(out)]) == 0
    assert out.stat().st_size > 1e6
    # and on a batch whose samples choose different layers, at another batch size than exported
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pose, layers = session.run(None, {"images": images.numpy()})
    with torch.inference_mode():
        want = model(images)
    assert layers.tolist() == want.layers.tolist() and len(set(layers[:, 0].tolist())) > 1
    torch.testing.assert_close(torch.from_numpy(pose), want.pose, rtol=0, atol=1e-4)
    assert compare_with_onnxruntime(model, out, batch=1) < 1e-4
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--onnx", str(out)]) == 2


@pytest.mark.slow
def test_bench_writes_spec_json(tmp_path):
    from jsla_fast.bench import main

    out = tmp_path / "bench.json"
    assert main(["--quick", "--backends", "reference,cpp,onnxruntime,openvino", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"device", "torch", "threads", "results", "peak_gflops", "peak_gbps"} <= report.keys()
    rows = report["results"]
    att = [r for r in rows if r["name"] == "attention"]
    assert {tuple(r["shape"][1:]) for r in att} == set(layer_shapes(224).values())
    assert {r["backend"] for r in att} == {"reference", "cpp"}
    for r in rows:
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and r["speedup"] > 0
        assert r["batch"] == 1 and r["dtype"] == "float32"
    for r in att + [r for r in rows if r["name"] == "convlstm"]:
        assert r["gflops"] > 0 and r["gbps"] > 0 and 0 < r["roofline_pct"]
    e2e = {(r["backend"], r["runtime"]): r for r in rows if r["name"] == "e2e"}
    openvino = {("openvino", "f32"), ("openvino", "default")}  # OpenVINO is in the test extra
    assert set(e2e) == {("reference", "eager"), ("reference", "localizer"), ("cpp", "localizer"),
                        ("onnxruntime", "onnxruntime")} | openvino
    assert all(r["fps"] > 0 and r["peak_mem_mb"] > 0 for r in e2e.values())
    auto = resolve_executor("auto", torch.float32).name
    assert {r.get("backbone") for r in e2e.values() if r["runtime"] == "localizer"} == {auto}
    backbone = {(r["backend"], r.get("runtime")): r for r in rows if r["name"] == "backbone"}
    assert set(backbone) == {("reference", "eager"), (auto, None)} | openvino
    # what OpenVINO said it ran: f32 when asked, and a precision it names by default
    assert e2e["openvino", "f32"]["precision"] == backbone["openvino", "f32"]["precision"] == "f32"
    assert e2e["openvino", "default"]["precision"] in {"f32", "bf16", "f16"}
    assert main(["--backends", "nonsense"]) == 2
