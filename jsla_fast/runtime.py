"""The deployment runtime: :class:`Localizer` runs a trained checkpoint as fast as this machine
allows and returns results users can publish (pose, class, chosen layers, attention, latency).

    loc = Localizer("run/best.pt", threads=2)     # backend "auto": the fastest available
    result = loc.localize(image)                  # RGB [3,H,W] in [0,1], any size
    out = loc(batch)                              # normalised [B,3,224,224] -> ModelOutput

What it does to the loaded model (each exact in eval, each an option):
- ``model.fuse()``: folds every BatchNorm into the layer before it (backbone convs, the layer
  selector's FC), and the attention's E_att -> BN -> C_A into one 5x5 conv once
  (docs/DESIGN.md, "The model"), so the fused attention op gets its weights without per-frame work;
- channels-last memory format for the backbone's convolutions;
- on CPU, the backbone run by an executor of :mod:`jsla_fast.executors` (``backbone``; ``auto``:
  packed oneDNN convolutions with fused ReLU and the C++ max pool, others by name), the recurrent
  part on the fused ops; ``dtype="bfloat16"`` on CPUs with native bfloat16 (AVX512_BF16 or AMX);
- on CUDA, an optional fp16/bf16 ``dtype`` (folding is done in fp32 first), and the whole
  per-frame forward captured in a CUDA graph per input shape and replayed: one launch of the
  graph instead of hundreds of kernel launches. The layer choice is data dependent, so the graph
  runs the model's static form (every candidate branch, each sample's chosen one gathered by
  index; what it equals: ``GraphedForward``);
- inference mode, and a configurable thread count.
``predict`` and the ROS node use it; ``evaluate`` uses the unmodified model.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .executors import resolve_executor
from .ops.onednn import native_bfloat16
from .ops import resolve
from .model.registry import load_checkpoint
from .model.base import Model
from .model.jsla import gather_attention
from .normalization import default_normalization, preprocessing
from .uncertainty import check_samples, mc_dropout, mc_spreads, sigmas_calibrated

log = logging.getLogger("jsla_fast.runtime")


@dataclass
class Localization:
    """One image's result."""

    pose: list[float] | None  #: x,y,z,qw,qx,qy,qz
    logits: list[float] | None
    layers: list[int]
    attention: list[np.ndarray]  #: per step [h,w]
    ms: float  #: preprocessing + forward, wall clock
    #: ``uncertainty="aleatoric"`` models or MC dropout: per-axis standard deviations, position
    #: x,y,z (m) and rotation about x,y,z (rad), and whether they were calibrated; None otherwise
    position_sigma_m: list[float] | None = None
    orientation_sigma_rad: list[float] | None = None
    sigma_calibrated: bool | None = None


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), None)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"dtype must be float32, float16, bfloat16 or float64, got {dtype!r}")
    return dtype


class GraphedForward:
    """The model's forward on one input shape captured in a CUDA graph and replayed.

    Captured in the model's static form (``static_graph``): every candidate branch runs and each
    sample takes its chosen branch's output by a gather, so no host decision sits inside the graph.
    For a frame (a batch of one), and any batch whose samples all choose the same layers, that is
    the eager (chosen-branch-only) model's result bit for bit; a batch whose samples choose
    differently agrees with it to float32 rounding (:meth:`jsla_fast.model.jsla.JSLA._attend_every`
    says why). Every branch's attention map is an output; the chosen ones are picked after the replay.
    """

    def __init__(self, model: Model, example: torch.Tensor, warmup: int = 3) -> None:
        self.input = example.clone()
        static = model.static_graph
        model.static_graph = True
        try:
            # warm up on a side stream (cuDNN algorithm search, Triton compilation, the allocator),
            # as torch.cuda.graphs recommends, then capture
            side = torch.cuda.Stream(example.device)
            side.wait_stream(torch.cuda.current_stream(example.device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    model(self.input)
            torch.cuda.current_stream(example.device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.output = model(self.input)
        finally:
            model.static_graph = static

    def __call__(self, images: torch.Tensor):
        """Replays on ``images`` (same shape, dtype, device as the example); returns a fresh
        ModelOutput whose ``attention`` holds each sample's chosen maps."""
        self.input.copy_(images)
        self.graph.replay()
        out = self.output
        layers = out.layers.clone()
        on_host = layers.cpu()  # the one sync: which maps to pick (gather_attention copies them)
        attention = [gather_attention(maps, layers[:, t], sorted(set(on_host[:, t].tolist())))
                     for t, maps in enumerate(out.branch_attention)]
        return replace(out, pose=None if out.pose is None else out.pose.clone(),
                       logits=None if out.logits is None else out.logits.clone(), layers=layers,
                       attention=attention, selection_logits=[s.clone() for s in out.selection_logits],
                       pose_raw=None if out.pose_raw is None else out.pose_raw.clone(), aux=[a.clone() for a in out.aux],
                       log_var=None if out.log_var is None else out.log_var.clone(),
                       branch_attention=[])


class Localizer:
    """A loaded model prepared for fast inference (see the module docstring).

    ``source``: a checkpoint path or a model (which is then modified in place when ``optimize``).
    ``backend``: a name from :mod:`jsla_fast.ops.dispatch` ('auto' = fastest available for the
    device and dtype).
    ``threads``: torch's intra-op threads (process-wide), None leaves it as is.
    ``dtype``: the model's floating-point type (``torch.float16``/``"bfloat16"``... ; None keeps
    the model's); inputs are cast to it.
    ``cuda_graph``: capture the forward in a CUDA graph per input shape (None: on CUDA when
    ``optimize``).
    ``backbone``: on CPU with ``optimize``, who runs the backbone (:data:`jsla_fast.executors.NAMES`);
    ``self.executor`` says which one did.
    ``check``: run one frame at construction, so a model that cannot run (its preprocessing, its
    shapes, the backend) raises here with the cause, before any camera frame arrives.
    ``mc_samples``: test-time MC dropout with this many head samples per frame
    (:func:`jsla_fast.uncertainty.mc_dropout`: the backbone and recurrence run once), drawn from a
    generator seeded with ``mc_seed``; None: the deterministic model.
    """

    def __init__(self, source: str | Path | Model, device: str | torch.device = "cpu", backend: str = "auto",
                 threads: int | None = None, optimize: bool = True, channels_last: bool = True,
                 dtype: torch.dtype | str | None = None, cuda_graph: bool | None = None,
                 backbone: str = "auto", check: bool = True, mc_samples: int | None = None,
                 mc_seed: int = 0) -> None:
        if isinstance(source, nn.Module) and not isinstance(source, Model):
            raise TypeError(f"Localizer takes a checkpoint path or a jsla_fast model (a jsla_fast.model.Model, "
                            f"e.g. JSLA or PoseNet), not a {type(source).__name__}")
        self.device = torch.device(device)
        if mc_samples is not None:
            check_samples(mc_samples)
        self.mc_samples = mc_samples
        self.generator = torch.Generator(self.device).manual_seed(mc_seed) if mc_samples else None
        if threads:
            torch.set_num_threads(threads)
        model = source if isinstance(source, Model) else load_checkpoint(source, map_location=self.device)
        if model.normalization is None:  # built in Python: what save_checkpoint would store
            model.normalization = default_normalization()
            log.info("the model records no preprocessing; using the default: %s", model.normalization.describe())
        # frozen parameters: no autograd bookkeeping, and the fused ops may cache packed weights
        model = model.to(self.device).eval().requires_grad_(False)
        self.dtype = next(model.parameters()).dtype if dtype is None else _dtype(dtype)
        if self.device.type == "cpu" and self.dtype == torch.bfloat16 and (reason := native_bfloat16()):
            raise ValueError(f"dtype='bfloat16' on this CPU: {reason}")
        self.executor = "eager"
        executor = resolve_executor(backbone, self.dtype) if optimize and self.device.type == "cpu" else None
        self.backend = resolve(backend, self.device, self.dtype).name
        model.set_backend(self.backend)
        if optimize:  # in float32, before any cast to a 16-bit type
            model.fuse()
        model = model.to(self.dtype)
        self.channels_last = channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if executor is not None:
            try:
                model.backbone = executor.build(model.backbone, self._example(model))
                self.executor = executor.name
            except RuntimeError as e:  # an exotic backbone the executor can't take: stay eager
                log.warning("backbone stays eager (%s failed: %s)", executor.name, e)
        if mc_samples and model.pose_decoder is None:
            raise ValueError("mc_samples: MC dropout gives pose uncertainty; this checkpoint is a scene model")
        if mc_samples:
            mc_spreads(model, warn=True)
        if cuda_graph is None:  # MC dropout runs eager: a graph has no place for the sampled head
            cuda_graph = optimize and self.device.type == "cuda" and model.has_static_form and not mc_samples
        if cuda_graph and (self.device.type != "cuda" or not model.has_static_form):
            raise ValueError("cuda_graph=True needs a CUDA device and a JSLA model "
                             f"(got device {self.device}, model {type(model).__name__})")
        self.cuda_graph = cuda_graph
        self.graphs: dict[tuple[int, ...], GraphedForward] = {}
        self.model = model
        if check:
            self._check_runs(source)

    #: the frame of the start-up check for a preprocessing that keeps the camera's aspect (VGA)
    CHECK_FRAME = (480, 640)

    def _check_runs(self, source) -> None:
        """One frame through the real runtime, preprocessing included (on CUDA this also captures
        the graph), so a model that cannot run fails here, once, instead of at every camera frame."""
        what = f"the {type(source).__name__} model" if isinstance(source, nn.Module) else f"checkpoint {source}"
        try:
            norm = preprocessing(self.model)
            if norm.size is not None:
                hw = norm.size
            elif norm.shorter is not None:
                hw = self.CHECK_FRAME
            else:
                hw = (norm.crop or 224, norm.crop or 224)
            self.localize(torch.full((3, *hw), 0.5, device=self.device))
        except Exception as e:
            raise RuntimeError(f"{what} cannot run ({type(e).__name__}: {e}); nothing was started") from e

    def _example(self, model) -> torch.Tensor:
        size = preprocessing(model).crop or 224
        example = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
        return example.contiguous(memory_format=torch.channels_last) if self.channels_last else example

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor):
        """Normalised images ``[B,3,H,W]`` -> the model's output (ModelOutput)."""
        images = images.to(self.device, self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mc_samples:
            return mc_dropout(self.model, images, self.mc_samples, self.generator)
        if not self.cuda_graph:
            return self.model(images)
        graphed = self.graphs.get(tuple(images.shape))
        if graphed is None:  # first frame of this shape: capture (a few eager runs, then the graph)
            graphed = self.graphs[tuple(images.shape)] = GraphedForward(self.model, images)
        return graphed(images)

    @torch.inference_mode()
    def localize(self, image: torch.Tensor) -> Localization:
        """``image``: RGB ``[3,H,W]`` float in [0, 1], any size; preprocessed as in training."""
        norm = preprocessing(self.model)
        start = time.perf_counter()
        out = self(norm.prepare(image.to(self.device))[None])
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) * 1e3
        return Localization(
            pose=None if out.pose is None else out.pose[0].double().cpu().tolist(),
            logits=None if out.logits is None else out.logits[0].double().cpu().tolist(),
            layers=out.layers[0].cpu().tolist(),
            attention=[a[0, 0].float().cpu().numpy() for a in out.attention],
            ms=ms,
            **_sigmas(self.model, out, self.mc_samples),
        )


def _sigmas(model: Model, out, mc_samples: int | None = None) -> dict:
    """The Localization's sigma fields from an output with log-variances (else nothing)."""
    if out.log_var is None:
        return {}
    sigma = torch.exp(out.log_var[0].double() / 2).cpu().tolist()
    return {"position_sigma_m": sigma[:3], "orientation_sigma_rad": sigma[3:],
            "sigma_calibrated": sigmas_calibrated(model, mc_samples)}


def localize(model: Model, image: torch.Tensor, device: torch.device | str = "cpu") -> Localization:
    """One image through ``model`` as it is (no folding, its own backend): ``evaluate``'s overlays
    and the demo. ``image``: RGB ``[3,H,W]`` float in [0, 1], any size."""
    return Localizer(model, device, backend=model.backend, optimize=False, channels_last=False,
                     check=False).localize(image)
