"""Minimum work of each fused op: the FLOPs its math needs and the bytes it must move at least
once (inputs read, outputs written), for the bench's GFLOP/s, GB/s and roofline columns; and the
measured ceilings of the GPUs this project runs on (:data:`GPU_CEILINGS`), which turn those counts
into GPU floor times."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def attention_cost(batch: int, channels: int, height: int, width: int, kernel: int = 5,
                   itemsize: int = 4) -> tuple[float, float]:
    """``(flops, bytes)``: the k x k logit conv (2 k^2 C hw) plus add, LeakyReLU, the multiply and the
    softmax (~4 C hw + 5 hw); bytes: read F and Eh, write O and alpha (weights are negligible)."""
    hw = height * width
    flops = batch * (2 * kernel * kernel * channels * hw + 4 * channels * hw + 5 * hw)
    nbytes = itemsize * (batch * (3 * channels * hw + hw) + channels * kernel * kernel + 1)
    return float(flops), float(nbytes)


def convlstm_cost(batch: int, input_channels: int, hidden_channels: int, height: int, width: int,
                  kernel_sizes: Sequence[int] = (1, 3, 5, 7), itemsize: int = 4) -> tuple[float, float]:
    """``(flops, bytes)`` of the direct convolution (2 * 4n * (D+hid) * k^2 per position per branch)
    plus the LSTM update (~30 per hidden value); bytes: read x, h, c and every weight once, write h', c'."""
    n = hidden_channels // len(kernel_sizes)
    cin = input_channels + hidden_channels
    hw = height * width
    flops = batch * hw * (sum(2 * 4 * n * cin * k * k for k in kernel_sizes) + 30 * hidden_channels)
    weights = sum(4 * n * cin * k * k + 4 * n for k in kernel_sizes)
    nbytes = itemsize * (batch * hw * (input_channels + 4 * hidden_channels) + weights)
    return float(flops), float(nbytes)


@dataclass(frozen=True)
class GpuCeilings:
    """What one GPU model was measured to sustain: the ceilings the GPU floors are taken against."""
    copy_tbps: float        #: device-to-device copy, bytes read + written, TB/s
    bf16_tflops: float      #: dense bf16 matmul, 8192^3 on random data, TFLOP/s
    sms: int                #: multiprocessors (torch's multi_processor_count)
    l2_mb: int              #: L2 cache, MB
    measured: str           #: when, on what, and how


#: The GPUs this project is lent, keyed by ``torch.cuda.get_device_name()``: the one table of GPU
#: ceilings. A floor is max(FLOPs / bf16 rate, bytes / copy rate): the dense bf16 rate bounds every
#: dtype from below (TF32 runs at about half of it, plain fp32 far lower). The kernels' header
#: comments and docs/PERFORMANCE.md derive their floors from it; the bench takes its CUDA floors
#: from it and records its own readings of both ceilings beside it.
GPU_CEILINGS: dict[str, GpuCeilings] = {
    "NVIDIA H100 80GB HBM3": GpuCeilings(
        copy_tbps=3.0, bf16_tflops=798, sms=132, l2_mb=50,
        measured="2026-11-13 on a lent H100 80GB HBM3 (torch 2.11.0+cu130): a device-to-device copy and "
                 "an 8192^3 bf16 matmul through PyTorch"),
    "NVIDIA H200": GpuCeilings(
        copy_tbps=4.3, bf16_tflops=788, sms=132, l2_mb=60,
        measured="2026-10-28 and 2026-11-04 on lent H200s (torch 2.11.0+cu130): a device-to-device copy "
                 "(8.6 GB moved in 2.0 ms) and an 8192^3 bf16 matmul through PyTorch, 788 TFLOP/s on "
                 "2026-10-28, 769-798 on 2026-11-04"),
}


def gpu_ceilings(device_name: str) -> GpuCeilings | None:
    """The table's row for ``device_name`` (``torch.cuda.get_device_name()``), None for a GPU not in it."""
    return GPU_CEILINGS.get(device_name)
