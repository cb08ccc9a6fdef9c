"""Multi-kernel ConvLSTM step against an independent formulation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jsla_fast.model import MultiKernelConvLSTM


def one_big_conv_step(x, h, c, weights, biases, n):
    """The same step written differently: every branch's kernel zero-padded to the largest size,
    all gates from ONE convolution, then channels regrouped (branch b owns hidden [n*b, n*b+n))."""
    kmax = max(w.shape[-1] for w in weights)
    padded = [F.pad(w, [(kmax - w.shape[-1]) // 2] * 4) for w in weights]
    gates = F.conv2d(torch.cat([x, h], 1), torch.cat(padded), torch.cat(biases), padding=kmax // 2)
    nb = len(weights)
    gates = gates.view(x.shape[0], nb, 4, n, *x.shape[-2:])  # [B, branch, gate i/f/g/o, n, H, W]
    i, f, g, o = (gates[:, :, j].reshape(x.shape[0], nb * n, *x.shape[-2:]) for j in range(4))
    c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c2), c2


@pytest.mark.parametrize("batch,d,grid,kernels,n", [
    (1, 128, (14, 14), (1, 3, 5, 7), 24),
    (3, 128, (14, 14), (1, 3, 5, 7), 24),
    (2, 17, (5, 7), (1, 3, 5, 7), 5),
    (5, 8, (9, 4), (3, 1), 3),
])
def test_step_matches_independent_formulation(batch, d, grid, kernels, n, seed):
    cell = MultiKernelConvLSTM(d, kernels, n).double()
    hid = len(kernels) * n
    x = torch.randn(batch, d, *grid, dtype=torch.float64)
    h, c = torch.randn(2, batch, hid, *grid, dtype=torch.float64)
    h2, c2 = cell(x, h, c)
    eh, ec = one_big_conv_step(x, h, c, [m.weight for m in cell.convs], [m.bias for m in cell.convs], n)
    torch.testing.assert_close(h2, eh, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(c2, ec, atol=1e-12, rtol=1e-10)
    assert bool((h2.abs() < 1).all())


def test_reference_on_noncontiguous_and_channels_last_inputs(seed):
    cell = MultiKernelConvLSTM(16, (1, 3), 4)
    x = torch.randn(2, 16, 6, 6)
    h, c = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    expect = cell(x, h, c)
    got = cell(x.to(memory_format=torch.channels_last), h.transpose(2, 3).contiguous().transpose(2, 3), c)
    torch.testing.assert_close(got[0], expect[0])
    torch.testing.assert_close(got[1], expect[1])


def test_forget_gate_bias_starts_at_one():
    cell = MultiKernelConvLSTM(8, (1, 3, 5, 7), 24)
    for conv in cell.convs:
        b = conv.bias.detach().view(4, 24)
        assert torch.equal(b[1], torch.ones(24)) and not b[[0, 2, 3]].any()

