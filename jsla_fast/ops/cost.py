"""Minimum work of each fused op: the FLOPs its math needs and the bytes it must move at least
once (inputs read, outputs written), for the bench's GFLOP/s, GB/s and roofline columns."""
from __future__ import annotations

from collections.abc import Sequence


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
