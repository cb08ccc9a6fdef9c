"""The backward of the fused ops, written once with PyTorch ops from the reference forward's
math (the fused kernels are forward-only). Every fused backend registers these as its autograd
formula; gradcheck in float64 holds them to the fused forward.

Attention (O = F*alpha, alpha = softmax(L), L = conv(A, W) + b, A = LeakyReLU(F + Eh)):
    gS = g_alpha + sum_c(g_O * F) ;  gL = alpha * (gS - sum_p(gS * alpha))
    gA = conv_transpose(gL, W) ; gW = corr(A, gL) ; gb = sum(gL)
    gZ = gA * (Z > 0 ? 1 : slope) ;  gF = g_O * alpha + gZ ;  gEh = gZ
ConvLSTM: the gates are recomputed with the reference convolution (they are never stored),
then the LSTM derivatives go back through each branch's convolution.

Precision: the convolutions here are PyTorch's, in the inputs' dtype, so the backward computes what
the reference backend's autograd computes under the same settings: on CUDA cuDNN follows
``torch.backends.cudnn.allow_tf32`` (True by default: 10-bit products on Ampere and later, about
1e-3 relative for these reductions; set it False for full fp32), on CPU plain fp32. A fused
backend changes the forward kernel only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight


def attention_backward(feat, eh, weight, alpha, slope, g_out, g_alpha):
    z = feat + eh
    a = F.leaky_relu(z, slope)
    g_s = g_alpha + (g_out * feat).sum(dim=1, keepdim=True)
    g_logits = alpha * (g_s - (g_s * alpha).sum(dim=(2, 3), keepdim=True))
    pad = weight.shape[-1] // 2
    g_a = conv2d_input(a.shape, weight, g_logits, padding=pad)
    g_weight = conv2d_weight(a, weight.shape, g_logits, padding=pad)
    g_bias = g_logits.sum().reshape(1)
    g_z = torch.where(z > 0, g_a, g_a * slope)
    return g_out * alpha + g_z, g_z, g_weight, g_bias


def convlstm_backward(x, h, c, weights, biases, c_next, g_h, g_c):
    xh = torch.cat([x, h], dim=1)
    pre = [F.conv2d(xh, w, b, padding=w.shape[-1] // 2).chunk(4, dim=1) for w, b in zip(weights, biases)]
    i, f, g, o = (torch.cat([branch[j] for branch in pre], dim=1) for j in range(4))
    si, sf, so, tg, tc = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g), torch.tanh(c_next)
    g_o = g_h * tc * so * (1 - so)
    g_ct = g_c + g_h * so * (1 - tc * tc)
    g_f = g_ct * c * sf * (1 - sf)
    g_i = g_ct * tg * si * (1 - si)
    g_g = g_ct * si * (1 - tg * tg)
    n = h.shape[1] // len(weights)
    g_xh = torch.zeros_like(xh)
    g_weights, g_biases = [], []
    for b, w in enumerate(weights):
        rows = slice(b * n, (b + 1) * n)
        g_pre = torch.cat([g_i[:, rows], g_f[:, rows], g_g[:, rows], g_o[:, rows]], dim=1)
        pad = w.shape[-1] // 2
        g_weights.append(conv2d_weight(xh, w.shape, g_pre, padding=pad))
        g_biases.append(g_pre.sum(dim=(0, 2, 3)))
        g_xh = g_xh + conv2d_input(xh.shape, w, g_pre, padding=pad)
    d = x.shape[1]
    return g_xh[:, :d], g_xh[:, d:], g_ct * sf, g_weights, g_biases


def register_autograd(attention_op: str, convlstm_op: str) -> None:
    """Make the custom ops ``attention_op`` / ``convlstm_op`` (``"namespace::name"``, with the
    signatures of ``jsla::attention`` / ``jsla::convlstm_step``) differentiable with the formulas
    above; every fused backend calls this once for its ops."""

    def attention_setup(ctx, inputs, output):
        feat, eh, weight, _, slope = inputs
        ctx.slope = slope
        ctx.save_for_backward(feat, eh, weight, output[1])

    def attention_grad(ctx, g_out, g_alpha):
        feat, eh, weight, alpha = ctx.saved_tensors
        g_feat, g_eh, g_weight, g_bias = attention_backward(feat, eh, weight, alpha, ctx.slope, g_out, g_alpha)
        return g_feat, g_eh, g_weight, g_bias, None

    def convlstm_setup(ctx, inputs, output):
        x, h, c, weights, biases = inputs
        ctx.branches = len(weights)
        ctx.save_for_backward(x, h, c, output[1], *weights, *biases)

    def convlstm_grad(ctx, g_h, g_c):
        x, h, c, c_next, *params = ctx.saved_tensors
        weights, biases = params[:ctx.branches], params[ctx.branches:]
        return convlstm_backward(x, h, c, weights, biases, c_next, g_h, g_c)

    torch.library.register_autograd(attention_op, attention_grad, setup_context=attention_setup)
    torch.library.register_autograd(convlstm_op, convlstm_grad, setup_context=convlstm_setup)
