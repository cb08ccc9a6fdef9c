"""Spatial attention: the module, its folded 5x5 form (the fused op's reference), and resizing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jsla_fast.config import layer_shapes
from jsla_fast.model import SpatialAttention, resize_to
from jsla_fast.ops import attention_reference

# the four candidate layers' shapes plus odd ones (grids that are not square, C not a multiple of 8)
SHAPES = [*layer_shapes(224).values(), (37, 5, 7), (13, 9, 3)]


def randomise_bn(bn: torch.nn.BatchNorm2d, g: torch.Generator) -> None:
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("slope", [0.01, 0.0])
def test_folded_form_equals_module_in_eval(shape, slope, seed):
    g = torch.Generator().manual_seed(seed)
    c, hh, ww = shape
    att = SpatialAttention(c, hidden_channels=96, slope=slope).eval()
    randomise_bn(att.bn, g)
    feat = torch.randn(3, c, hh, ww, generator=g, dtype=torch.float64)
    h = torch.randn(3, 96, 14, 14, generator=g, dtype=torch.float64)
    att = att.double()
    out, alpha = att(feat, h)
    weight, bias = att.folded()
    assert weight.shape == (1, c, 5, 5) and bias.shape == (1,)
    out_ref, alpha_ref = attention_reference(feat, att.embed_hidden(h, (hh, ww)), weight, bias, slope)
    torch.testing.assert_close(alpha_ref, alpha, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(out_ref, out, atol=1e-12, rtol=1e-9)


def test_attention_reference_matches_its_definition(seed):
    g = torch.Generator().manual_seed(seed)
    feat, eh = torch.randn(2, 6, 5, 4, generator=g), torch.randn(2, 6, 5, 4, generator=g)
    w, b = torch.randn(1, 6, 5, 5, generator=g), torch.randn(1, generator=g)
    out, alpha = attention_reference(feat, eh, w, b, 0.2)
    # naive loops over positions: logit(p) = b + sum_c,dy,dx w * LeakyReLU(F + Eh) (zero padded)
    a = torch.where(feat + eh > 0, feat + eh, 0.2 * (feat + eh))
    ap = F.pad(a, (2, 2, 2, 2))
    logits = torch.empty(2, 5, 4)
    for n in range(2):
        for y in range(5):
            for x in range(4):
                logits[n, y, x] = b + (w[0] * ap[n, :, y:y + 5, x:x + 5]).sum()
    expect = torch.exp(logits) / torch.exp(logits).sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(alpha[:, 0], expect, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, feat * expect[:, None], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alpha.sum(dim=(2, 3)), torch.ones(2, 1))


def test_resize_to_follows_spec_for_the_candidate_grids(seed):
    x28, x7 = torch.randn(2, 4, 28, 28), torch.randn(2, 4, 7, 7)
    assert resize_to(x28, (28, 28)) is x28
    torch.testing.assert_close(resize_to(x28, (14, 14)), F.avg_pool2d(x28, 2))
    torch.testing.assert_close(resize_to(x7, (14, 14)),
                               F.interpolate(x7, scale_factor=2, mode="bilinear", align_corners=False))
    assert resize_to(torch.randn(1, 2, 5, 7), (14, 14)).shape == (1, 2, 14, 14)
