"""The benchmark: per-op microbenchmarks and the whole model, every backend in one run.

    python -m jsla_fast.bench [--ops] [--e2e] [--backends reference,cpp,compile,onnxruntime,openvino]
                              [--backbones auto,torchscript,...] [--batch 1,40] [--device cpu]
                              [--dtype float32] [--repeat 50] [--threads N] [--quick]
                              [--compile-mode default] [--json OUT.json]

Prints a markdown table and writes the JSON of docs/DESIGN.md, "The bench JSON". Timing: warm-up
runs, then ``repeat`` timed runs (wall clock on CPU, CUDA events on GPU) taken in 5 rounds that alternate between the
backends of one row group, so a shared machine's drifting speed hits all of them alike; median
and p90. Ratios are against the reference eager row of the same op, shape and batch.

Rows: ``attention`` on the four candidate-layer shapes (480x28x28, 512x14x14, 832x14x14,
1024x7x7, k=5), ``convlstm`` (x [B,128,14,14], hidden 96 = 4 x 24, kernels 1,3,5,7) and ``e2e``
(JSLA at 224x224, N=3; ``runtime`` says how it ran: ``eager`` is the model as trained,
``localizer`` is :class:`jsla_fast.runtime.Localizer` with folding and channels-last,
``localizer+graph`` the same replayed from a CUDA graph; on CPU ``backbone`` names the
Localizer's backbone executor, :mod:`jsla_fast.executors`). ``compile`` rows use
``--compile-mode`` (torch's ``default`` unless told; ``max-autotune`` is the strongest rival of the
fused GPU backends and takes minutes to autotune) and record it as ``compile_mode``.
Backends: ``reference`` (PyTorch eager), the fused ones available here (``cpp``, ...),
``compile`` (torch.compile of the reference), and for e2e on CPU the exported static form (every
candidate branch) in ``onnxruntime`` and in ``openvino`` (runtime ``f32``, and ``default``: what
OpenVINO picks for this CPU, bf16 where it has AVX512_BF16 or AMX; ``precision`` is what it
reported).
Per-op rows carry GFLOP/s and GB/s against the op's minimum FLOPs and bytes
(:mod:`jsla_fast.ops.cost`), ``roofline_pct`` = floor time / measured time, and the achieved
rates as a share of each ceiling (``copy_bw_pct``, ``matmul_pct``). The ceilings: on CPU this
machine's, measured at start (a large matmul in the bench's dtype, a large copy); on CUDA the
GPU's row of :data:`jsla_fast.ops.cost.GPU_CEILINGS` (the same for every run on that GPU model),
with this run's own readings of both (a 1 GiB copy, an 8192^3 bf16 matmul) recorded beside it.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import JSLAConfig, layer_shapes
from .model import JSLA
from .ops import BACKENDS, attention_reference, available, convlstm_step_reference
from .ops.cost import GPU_CEILINGS, attention_cost, convlstm_cost, gpu_ceilings
from .executors import EXECUTORS, compile_openvino, openvino_precision, resolve_executor
from .runtime import Localizer
from .uncertainty import check_samples

log = logging.getLogger("jsla_fast.bench")
ATTENTION_SHAPES = list(layer_shapes(224).values())  #: the candidate layers at 224 x 224
EXTRA_BACKENDS = ("compile", "onnxruntime", "openvino")
ROUNDS = 5  #: alternating rounds of a full run
#: --quick: as many rounds as samples pairs, so that a drifting machine hits every row alike; warm-up
#: long enough for the weight caches, the allocator and oneDNN's primitive cache (docs/PERFORMANCE.md
#: has the quick-vs-full comparison)
QUICK = {"repeat": 20, "warmup": 5, "rounds": 10}


# -- timing ---------------------------------------------------------------------------------------
def measure(fn: Callable[[], object], repeat: int, warmup: int, device: torch.device) -> list[float]:
    """Milliseconds per call, ``repeat`` samples after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure_rounds(fns: dict[str, Callable[[], object]], repeat: int, warmup: int, device: torch.device,
                   rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Milliseconds per call for each of ``fns``, measured in ``rounds`` alternating blocks (each
    block warms up, then takes repeat/rounds samples), so drift of a shared machine's speed
    falls on every backend alike and the ratios stay fair."""
    rounds = max(1, min(rounds, repeat))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        n = repeat // rounds + (1 if r < repeat % rounds else 0)
        for name, fn in fns.items():
            times[name] += measure(fn, n, warmup if r == 0 else 1, device)
    return times


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered), "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}


def measure_ceilings(device: torch.device, dtype: torch.dtype, n: int, copy_mb: int,
                     repeat: int = 5, warmup: int = 2) -> tuple[float, float]:
    """``(GFLOP/s, GB/s)`` this device sustains now: the median of an n^3 matmul in ``dtype`` and
    of a ``copy_mb`` MB device-to-device copy (bytes read + written)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    flops_ms = statistics.median(measure(lambda: a @ b, repeat, warmup, device))
    del a, b
    src = torch.empty(copy_mb * 2 ** 20 // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    copy_ms = statistics.median(measure(lambda: dst.copy_(src), repeat, warmup, device))
    return 2 * n ** 3 / flops_ms / 1e6, 2 * src.numel() * 4 / copy_ms / 1e6


def machine_peaks(device: torch.device, dtype: torch.dtype) -> dict:
    """The ceilings the floors are taken against (``peak_gflops``, ``peak_gbps``, ``peaks_how``).
    CPU: measured now, a 2048^3 matmul in the bench's dtype and a 256 MB copy. CUDA: the GPU's
    row of :data:`GPU_CEILINGS` (dense bf16 and copy, one table for every run and doc), plus this
    run's readings of the same two (``measured_bf16_gflops``, ``measured_copy_gbps``: an 8192^3
    bf16 matmul, where smaller ones do not fill the chip, and a 1 GiB copy, far past L2); a GPU
    missing from the table falls back to those readings and says so."""
    if device.type != "cuda":
        gflops, gbps = measure_ceilings(device, dtype, 2048, 256)
        return {"peak_gflops": gflops, "peak_gbps": gbps,
                "peaks_how": f"median of a 2048^3 {str(dtype).replace('torch.', '')} matmul and of a 256 MB copy "
                             "(read + write) in this run"}
    gflops, gbps = measure_ceilings(device, torch.bfloat16, 8192, 1024, repeat=10, warmup=3)
    return gpu_peaks(torch.cuda.get_device_name(device), gflops, gbps)


def gpu_peaks(name: str, gflops: float, gbps: float) -> dict:
    """:func:`machine_peaks` on CUDA, from the GPU's name and this run's readings."""
    measured = {"measured_bf16_gflops": gflops, "measured_copy_gbps": gbps,
                "measured_how": "median of 10 8192^3 bf16 matmuls and of 10 1 GiB copies (read + write) in this run"}
    row = gpu_ceilings(name)
    if row is None:
        log.warning("%s is not in jsla_fast.ops.cost.GPU_CEILINGS (%s): the floors use this run's readings; "
                    "add a row with the GPU's measured ceilings", name, ", ".join(GPU_CEILINGS))
        return {"peak_gflops": gflops, "peak_gbps": gbps, **measured,
                "peaks_how": f"{name} is not in jsla_fast.ops.cost.GPU_CEILINGS: this run's readings"}
    return {"peak_gflops": row.bf16_tflops * 1e3, "peak_gbps": row.copy_tbps * 1e3, **measured,
            "peaks_how": f"jsla_fast.ops.cost.GPU_CEILINGS[{name!r}]: dense bf16 matmul and device-to-device copy "
                         f"({row.measured}); the compute floor uses the bf16 rate for every dtype"}


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak, or on Linux the process's peak RSS
    (VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        self.mb = None
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated() / 2 ** 20
            return
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.mb = int(line.split()[1]) / 1024
        except OSError:
            pass


# -- rows -----------------------------------------------------------------------------------------
def compile_modes() -> tuple[str, ...]:
    """torch.compile's modes, as this torch lists them (default, reduce-overhead, max-autotune, ...)."""
    import torch._inductor

    return tuple(torch._inductor.list_mode_options())


def check_compile_mode(mode: str) -> str:
    """``mode`` if this torch.compile has it, else a ValueError naming it and the choices."""
    if mode not in compile_modes():
        raise ValueError(f"--compile-mode {mode!r} is not a mode of torch {torch.__version__}'s torch.compile; "
                         f"choose one of {', '.join(compile_modes())}")
    return mode


def allow_recompiles(graphs: int) -> None:
    """Let dynamo keep ``graphs`` compiled graphs of one function: every shape of the compile rows
    is its own static graph (dynamic=False), and past dynamo's limit (8) it would silently run
    the function eagerly, so the ``compile`` rows would time the reference."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, graphs)


def op_functions(backends: list[str], compile_mode: str = "default") -> dict[str, tuple[Callable, Callable]]:
    """backend -> (attention, convlstm_step) for the per-op rows: each backend's kernels, which the
    rows compare with their floors. The shared argument checks in front of them
    (:func:`jsla_fast.ops.attention`) add about 4 and 14 us per call; the e2e rows include them."""
    fns = {}
    for name in backends:
        if name in BACKENDS:
            fns[name] = (BACKENDS[name].attention, BACKENDS[name].convlstm_step)
        elif name == "compile":
            mode = check_compile_mode(compile_mode)
            fns[name] = (torch.compile(attention_reference, dynamic=False, mode=mode),
                         torch.compile(convlstm_step_reference, dynamic=False, mode=mode))
    return fns


def bench_ops(backends, batches, device, dtype, repeat, warmup, peaks, rounds=ROUNDS,
              compile_mode: str = "default") -> list[dict]:
    rows = []
    fns = op_functions(backends, compile_mode)
    if "compile" in fns:
        allow_recompiles(len(ATTENTION_SHAPES) * len(batches))
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    cfg = JSLAConfig()
    for batch in batches:
        for c, hh, ww in ATTENTION_SHAPES:
            feat, eh = rand(batch, c, hh, ww), rand(batch, c, hh, ww)
            weight, bias = rand(1, c, 5, 5, scale=0.02), rand(1)
            flops, nbytes = attention_cost(batch, c, hh, ww, 5, feat.element_size())
            calls = {name: (lambda att=att: att(feat, eh, weight, bias, 0.01)) for name, (att, _) in fns.items()}
            rows += _op_rows("attention", [batch, c, hh, ww], batch, dtype, flops, nbytes, peaks, calls, repeat,
                             warmup, device, rounds, compile_mode)
        d, hid, g = cfg.input_channels, cfg.hidden_channels, cfg.grid
        x, h, cc = rand(batch, d, g, g), rand(batch, hid, g, g), rand(batch, hid, g, g)
        ws = [rand(4 * cfg.branch_channels, d + hid, k, k, scale=(d + hid) ** -0.5 / k) for k in cfg.kernel_sizes]
        bs = [rand(4 * cfg.branch_channels, scale=0.1) for _ in cfg.kernel_sizes]
        flops, nbytes = convlstm_cost(batch, d, hid, g, g, cfg.kernel_sizes, x.element_size())
        calls = {name: (lambda step=step: step(x, h, cc, ws, bs)) for name, (_, step) in fns.items()}
        rows += _op_rows("convlstm", [batch, d, g, g], batch, dtype, flops, nbytes, peaks, calls, repeat, warmup,
                         device, rounds, compile_mode)
    return rows


def _op_rows(name, shape, batch, dtype, flops, nbytes, peaks, calls, repeat, warmup, device, rounds=ROUNDS,
             compile_mode: str = "default") -> list[dict]:
    with torch.inference_mode():
        times = measure_rounds(calls, repeat, warmup, device, rounds)
    floor = max(flops / (peaks["peak_gflops"] * 1e9), nbytes / (peaks["peak_gbps"] * 1e9))
    rows = []
    for backend, samples in times.items():
        s = summary(samples)
        sec = s["median_ms"] / 1e3
        log.info("%s %s %s: %.3f ms", name, backend, shape, s["median_ms"])
        rows.append({"name": name, "backend": backend, "batch": batch, "dtype": str(dtype).replace("torch.", ""),
                     "shape": shape, **({"compile_mode": compile_mode} if backend == "compile" else {}),
                     **s, "gflops": flops / sec / 1e9, "gbps": nbytes / sec / 1e9,
                     "min_flops": flops, "min_bytes": nbytes, "floor_ms": floor * 1e3,
                     "roofline_pct": 100 * floor / sec,
                     # the op's minimum bytes and FLOPs over its time, against the measured ceilings
                     "copy_bw_pct": 100 * nbytes / sec / 1e9 / peaks["peak_gbps"],
                     "matmul_pct": 100 * flops / sec / 1e9 / peaks["peak_gflops"]})
    return rows


def bench_e2e(backends, batches, device, dtype, repeat, warmup, checkpoint, executors=("auto",),
              rounds=ROUNDS, compile_mode: str = "default", mc_samples: tuple[int, ...] = ()) -> list[dict]:
    """Rows ``e2e``: the reference eager model, each fused backend through the Localizer (with each
    backbone executor of ``executors``; on CUDA also with its CUDA graph; with test-time MC dropout
    for each K of ``mc_samples``, runtime ``localizer+mc``), torch.compile of the reference, and on
    CPU the exported static form in onnxruntime and in OpenVINO (f32 and its default precision)."""
    rows = []
    if checkpoint:
        from .model.registry import load_checkpoint

        trained = load_checkpoint(checkpoint, map_location=device)
    else:
        torch.manual_seed(0)
        trained = JSLA(JSLAConfig(task="pose")).eval()
    trained = trained.to(device).eval()  # the Localizer folds in this precision, then casts
    base = copy.deepcopy(trained).to(dtype)
    size = 224
    exported = {}  # one ONNX file for every batch and runtime
    for batch in batches:
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        with torch.inference_mode():
            layers = base(images).layers[0].tolist() if base.has_static_form else []
        # (backend, runtime, extra fields of the row, the call)
        runs: list[tuple[str, str, dict, Callable]] = [("reference", "eager", {}, lambda m=base: m(images))]
        for name in backends:
            if name in BACKENDS:
                graphs = [False, True] if device.type == "cuda" and base.has_static_form else [False]
                for graph in graphs:
                    for executor in (executors if device.type == "cpu" else ["eager"]):
                        loc = Localizer(copy.deepcopy(trained), device, backend=name, dtype=dtype, cuda_graph=graph,
                                        backbone=executor)
                        extra = {"backbone": loc.executor} if device.type == "cpu" else {}
                        runs.append((name, "localizer+graph" if graph else "localizer", extra,
                                     lambda loc=loc: loc(images)))
                for k in mc_samples:  # the head K times on the features of one backbone pass
                    executor = executors[0] if device.type == "cpu" else "eager"
                    loc = Localizer(copy.deepcopy(trained), device, backend=name, dtype=dtype, backbone=executor,
                                    mc_samples=k)
                    extra = {"mc_samples": k, **({"backbone": loc.executor} if device.type == "cpu" else {})}
                    runs.append((name, "localizer+mc", extra, lambda loc=loc: loc(images)))
            elif name == "compile":  # static shapes, as the op rows: one graph set per batch size
                allow_recompiles(len(batches))
                compiled = torch.compile(copy.deepcopy(base), dynamic=False, mode=check_compile_mode(compile_mode))
                runs.append(("compile", "eager", {"compile_mode": compile_mode}, lambda m=compiled: m(images)))
            elif name in ("onnxruntime", "openvino") and device.type == "cpu" and dtype in (torch.float32,
                                                                                           torch.bfloat16):
                if "path" not in exported:  # from the float32 model: what a user exports
                    exported["path"] = _onnx_file(trained)
                runs += _exported_runs(name, exported["path"], images.float())
        peak = {}
        for backend, runtime, extra, fn in runs:  # peak memory of each alone, then times in alternating rounds
            with torch.inference_mode(), PeakMemory(device) as mem:
                fn()
            peak[backend, runtime, tuple(extra.items())] = mem.mb
        with torch.inference_mode():
            times = measure_rounds({(b, r, tuple(e.items())): fn for b, r, e, fn in runs}, repeat, warmup, device,
                                   rounds)
        for (backend, runtime, extra), samples in times.items():
            s = summary(samples)
            log.info("e2e %s (%s%s) batch %d: %.2f ms", backend, runtime,
                     "".join(f", {k} {v}" for k, v in extra), batch, s["median_ms"])
            exported_row = backend in ("onnxruntime", "openvino")  # fed float32; OpenVINO says what it ran
            rows.append({"name": "e2e", "backend": backend, "runtime": runtime, **dict(extra), "batch": batch,
                         "dtype": "float32" if exported_row else str(dtype).replace("torch.", ""),
                         "shape": [batch, 3, size, size], **s,
                         "fps": 1e3 * batch / s["median_ms"], "peak_mem_mb": peak[backend, runtime, extra],
                         "layers": layers})  # the first image's chosen layer per step: the work depends on it
    return rows


def bench_backbone(batches, dtype, repeat, warmup, executors, rounds=ROUNDS) -> list[dict]:
    """Rows ``backbone`` (CPU): the JSLA backbone alone (BN folded, 224x224) in each Localizer
    executor of ``executors`` at ``dtype``, and in OpenVINO at f32 and at its default precision,
    against the eager module (``reference``, ``eager``): the comparison behind the executors'
    order (docs/PERFORMANCE.md)."""
    torch.manual_seed(0)
    model = JSLA(JSLAConfig(task="pose")).eval().requires_grad_(False)
    model.fuse()
    rows = []
    for batch in batches:
        example = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        cl = example.to(dtype).contiguous(memory_format=torch.channels_last)
        eager = copy.deepcopy(model.backbone).to(dtype).to(memory_format=torch.channels_last)
        runs: dict[tuple, Callable] = {("reference", str(dtype).replace("torch.", ""), (("runtime", "eager"),)):
                                       lambda: eager(cl)}  # the base of the rows' speedup
        for name in executors:
            executor = resolve_executor(name, dtype)
            if executor.name == "eager":
                continue
            built = executor.build(copy.deepcopy(model.backbone).to(dtype).to(memory_format=torch.channels_last), cl)
            runs[executor.name, str(dtype).replace("torch.", ""), ()] = lambda b=built: b(cl)
        if EXECUTORS["openvino"].unavailable() is None:
            from .executors import OpenVINOBackbone

            for runtime, precision in (("f32", "f32"), ("default", None)):
                ov = OpenVINOBackbone(model.backbone, example, precision)
                runs["openvino", "float32", (("runtime", runtime), ("precision", ov.reported_precision))] = (
                    lambda b=ov: b(example))
        with torch.inference_mode():
            times = measure_rounds(runs, repeat, warmup, torch.device("cpu"), rounds)
        for (backend, dt, extra), samples in times.items():
            s = summary(samples)
            log.info("backbone %s %s%s batch %d: %.2f ms", backend, dt, "".join(f", {k} {v}" for k, v in extra),
                     batch, s["median_ms"])
            rows.append({"name": "backbone", "backend": backend, **dict(extra), "batch": batch, "dtype": dt,
                         "shape": [batch, 3, 224, 224], **s, "fps": 1e3 * batch / s["median_ms"]})
    return rows


def untrained_checkpoint(path: str | Path, image_hw: tuple[int, int] = (480, 640), resize: int = 256, crop: int = 224,
                         seed: int = 0, extra: dict | None = None) -> Path:
    """A randomly initialised JSLA pose model with the paper's test-time preprocessing for images of
    ``image_hw`` (shorter side to ``resize``, centre ``crop``), saved as a checkpoint: what the ROS
    measurements (and tests) run when no trained checkpoint is given. Its speed is a trained model's."""
    from .checkpoint import save_checkpoint
    from .normalization import Normalization, shorter_side_size

    torch.manual_seed(seed)
    model = JSLA(JSLAConfig(task="pose")).eval()
    model.normalization = Normalization(mean=torch.full((3, 1, 1), 0.5), size=shorter_side_size(*image_hw, resize),
                                        crop=crop)
    return save_checkpoint(model, path, extra=extra)


def camera_frames(count: int, image_hw: tuple[int, int] = (480, 640), seed: int = 0):
    """``count`` RGB uint8 frames of a smooth moving pattern (what a camera sends, not white noise)."""
    import numpy as np

    h, w = image_hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    phase = np.random.default_rng(seed).uniform(0, 6.28, 3)
    for i in range(count):
        t = 0.05 * i
        rgb = [np.sin(9 * x + 5 * y + phase[c] + t * (c + 1)) for c in range(3)]
        yield (np.stack(rgb, axis=2) * 110 + 128).astype(np.uint8)


def bench_ros(checkpoint: str | None, frames: int, threads: int | None, backend: str) -> list[dict]:
    """The ROS node's own overhead: closed-loop replay of 640x480 rgb8 frames through a real roscore
    and ``localize_node`` (one frame in flight, so no frame waits behind another)."""
    from .ros.launch import RosError
    from .ros.replay import latency_summary, run

    logging.getLogger("rospy").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        ck = checkpoint or untrained_checkpoint(Path(tmp) / "untrained.pt")
        try:
            result = run(ck, camera_frames(frames), {"threads": threads or 0, "backend": backend})
        except RosError as e:
            raise SystemExit(f"bench --ros: {e}") from None
    s = latency_summary(result)
    log.info("ros: %d/%d answered; overhead p50 %.3f ms p99 %.3f ms; latency p50 %.1f ms",
             s["answered"], s["frames"], s["overhead_p50_ms"], s["overhead_p99_ms"], s["latency_p50_ms"] or -1)
    return [{"name": "ros_node", "backend": s["backend"], "runtime": "localize_node", "batch": 1, "dtype": "float32",
             "shape": [1, 3, 480, 640], "encoding": "rgb8", "frames": s["frames"], "answered": s["answered"],
             "median_ms": s["latency_p50_ms"], "p99_ms": s["latency_p99_ms"],
             "overhead_p50_ms": s["overhead_p50_ms"], "overhead_p99_ms": s["overhead_p99_ms"],
             "node_latency_p50_ms": s["node_latency_p50_ms"], "dropped": s["dropped"],
             "what": "median_ms: client publish -> pose received; overhead: node publish - receive - model time"}]


def _onnx_file(model) -> Path | None:
    """The model's static form exported to ONNX (what a user hands to onnxruntime or OpenVINO)."""
    try:
        from .export import export_onnx

        path = Path(tempfile.mkdtemp(prefix="jsla_bench_")) / "model.onnx"
        export_onnx(copy.deepcopy(model), path)
        return path
    except ImportError as e:
        log.warning("no onnxruntime / openvino rows: exporting to ONNX needs %s (pip install onnx onnxscript)", e.name)
        return None


def _exported_runs(name: str, path: Path | None, images: torch.Tensor) -> list[tuple[str, str, dict, Callable]]:
    """The exported model in onnxruntime, or in OpenVINO at f32 and at its default precision (bf16
    where the CPU has it), each run with torch's thread count."""
    if path is None:
        return []
    feed = images.numpy()
    if name == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime is not installed: no onnxruntime rows (pip install onnxruntime)")
            return []
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return [("onnxruntime", "onnxruntime", {}, lambda: session.run(None, {"images": feed}))]
    if EXECUTORS["openvino"].unavailable() is not None:
        log.warning("openvino is not installed: no openvino rows (pip install openvino)")
        return []
    runs = []
    for runtime, precision in (("f32", "f32"), ("default", None)):
        compiled = compile_openvino(str(path), precision)
        request = compiled.create_infer_request()
        runs.append(("openvino", runtime, {"precision": openvino_precision(compiled)},
                     lambda r=request: r.infer({0: feed})))
    return runs


def add_ratios(rows: list[dict]) -> None:
    """``speedup`` of each row over the reference eager row with the same name, shape and batch."""
    ref = {(r["name"], tuple(r["shape"]), r["batch"]): r["median_ms"] for r in rows
           if r["backend"] == "reference" and r.get("runtime", "eager") == "eager"}
    for r in rows:
        base = ref.get((r["name"], tuple(r["shape"]), r["batch"]))
        r["speedup"] = base / r["median_ms"] if base else None


def runtime_label(row: dict) -> str:
    """The runtime column: the runtime, with the Localizer's backbone executor or OpenVINO's precision."""
    detail = row.get("backbone") or row.get("precision") or row.get("compile_mode")
    mc = row.get("mc_samples") and f"K={row['mc_samples']}"
    return " ".join(part for part in (row.get("runtime"), mc, detail and f"({detail})") if part)


def markdown(rows: list[dict]) -> str:
    lines = ["| op | shape | backend | runtime | median ms | p90 ms | speedup vs ref | GFLOP/s | GB/s | roofline % "
             "| % of copy BW |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(key, fmt):
            return fmt.format(r[key]) if r.get(key) is not None else ""
        lines.append(f"| {r['name']} | {'x'.join(map(str, r['shape']))} | {r['backend']} | {runtime_label(r)} | "
                     f"{f('median_ms', '{:.3f}')} | {f('p90_ms', '{:.3f}')} | {f('speedup', '{:.2f}x')} | "
                     f"{f('gflops', '{:.1f}')} | {f('gbps', '{:.1f}')} | {f('roofline_pct', '{:.0f}')} | {f('copy_bw_pct', '{:.0f}')} |")
    for r in rows:
        if r["name"] == "ros_node":
            lines.append(f"\nROS node ({r['encoding']} {r['shape'][3]}x{r['shape'][2]}, {r['answered']}/{r['frames']} "
                         f"frames answered, backend {r['backend']}): overhead (publish - receive - model) "
                         f"p50 {r['overhead_p50_ms']:.3f} ms, p99 {r['overhead_p99_ms']:.3f} ms; "
                         f"client publish -> pose p50 {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--backends", help="comma-separated; default: every one available here "
                    f"(of {', '.join([*BACKENDS, *EXTRA_BACKENDS])})")
    ap.add_argument("--batch", default="1,40", help="comma-separated batch sizes")
    ap.add_argument("--ops", action="store_true", help="per-op microbenchmarks")
    ap.add_argument("--e2e", action="store_true", help="the whole model (default: both --ops and --e2e)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--checkpoint", help="e2e on this checkpoint instead of a randomly initialised JSLA")
    ap.add_argument("--backbones", default="auto", help="comma-separated backbone executors for the Localizer "
                    "rows on CPU (of auto, " + ", ".join(EXECUTORS) + ")")
    ap.add_argument("--quick", action="store_true", help=f"batch 1, {QUICK['repeat']} repeats in {QUICK['rounds']} "
                    "alternating rounds, no torch.compile")
    ap.add_argument("--ros", action="store_true", help="the ROS node's overhead: replay frames through a real "
                    "roscore and localize_node (needs `make ros`; only this unless --ops/--e2e are given too)")
    ap.add_argument("--ros-frames", type=int, default=200, help="frames replayed with --ros")
    ap.add_argument("--compile-mode", default="default", help="torch.compile's mode for the compile rows: "
                    "default (torch's), reduce-overhead, max-autotune (autotunes: minutes), ...")
    ap.add_argument("--mc-samples", default="", help="comma-separated K: Localizer rows with test-time MC dropout "
                    "of K head samples (runtime localizer+mc; the model needs dropout, as the default JSLA has)")
    ap.add_argument("--json", help="write the results here (docs/DESIGN.md, \"The bench JSON\")")
    args = ap.parse_args(argv)

    try:
        check_compile_mode(args.compile_mode)
    except ValueError as err:
        log.error("%s", err)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.error("--device cuda: no CUDA device is visible to torch (torch %s)", torch.__version__)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    batches = [1] if args.quick else [int(b) for b in args.batch.split(",")]
    repeat, warmup = (QUICK["repeat"], QUICK["warmup"]) if args.quick else (args.repeat, args.warmup)
    rounds = QUICK["rounds"] if args.quick else ROUNDS
    try:
        mc_samples = tuple(int(k) for k in args.mc_samples.split(",") if k.strip())
        for k in mc_samples:
            check_samples(k)
    except ValueError as err:
        log.error("--mc-samples %s: %s (give whole numbers >= 1, e.g. 1,8,32)", args.mc_samples, err)
        return 2
    executors = [e.strip() for e in args.backbones.split(",") if e.strip()]
    for e in executors:
        try:
            resolve_executor(e, dtype)
        except (ValueError, RuntimeError) as err:
            log.error("--backbones: %s", err)
            return 2
    known = [*BACKENDS, *EXTRA_BACKENDS]
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in backends if b not in known]
        if unknown:
            log.error("unknown backend(s) %s; choose from %s", ", ".join(unknown), ", ".join(known))
            return 2
        missing = [b for b in backends if b in BACKENDS and b not in available(device)]
        if missing:
            from .ops import why_unavailable
            for b in missing:
                log.error("backend %s: %s", b, why_unavailable(b, device))
            return 2
    else:
        backends = available(device) + [b for b in EXTRA_BACKENDS if not (args.quick and b == "compile")]
    both = not (args.ops or args.e2e or args.ros)
    peaks = machine_peaks(device, dtype if dtype != torch.float64 else torch.float32)
    log.info("ceilings: %.0f GFLOP/s, %.1f GB/s (%s)", peaks["peak_gflops"], peaks["peak_gbps"], peaks["peaks_how"])
    if "measured_bf16_gflops" in peaks:
        log.info("measured in this run: %.0f GFLOP/s bf16, %.1f GB/s copy", peaks["measured_bf16_gflops"],
                 peaks["measured_copy_gbps"])
    rows: list[dict] = []
    report = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              **peaks, "compile_mode": args.compile_mode,
              "peak_mem_what": ("CUDA allocator peak of the row" if device.type == "cuda" else
                                "peak RSS of the whole process during one call (every compared model "
                                "is loaded in it)"),
              "command": "python -m jsla_fast.bench " + " ".join(sys.argv[1:] if argv is None else argv),
              "complete": False, "results": rows}

    def write_report() -> None:
        # after each section too, so that a run stopped by a deadline (tools/gpu_check.sh) keeps
        # what it measured; "complete" says whether every section finished
        add_ratios(rows)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1))

    if args.ops or both:
        rows += bench_ops([b for b in backends if b not in ("onnxruntime", "openvino")], batches, device, dtype,
                          repeat, warmup, peaks, rounds, args.compile_mode)
        write_report()
    if args.e2e or both:
        rows += bench_e2e(backends, batches, device, dtype, repeat, warmup, args.checkpoint, executors, rounds,
                          args.compile_mode, mc_samples)
        if device.type == "cpu":
            rows += bench_backbone(batches, dtype, repeat, warmup, executors, rounds)
        write_report()
    if args.ros:
        rows += bench_ros(args.checkpoint, 20 if args.quick else args.ros_frames, args.threads,
                          "auto" if not args.backends else args.backends.split(",")[0])
    report["complete"] = True
    write_report()
    print(markdown(rows))
    if args.json:
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
