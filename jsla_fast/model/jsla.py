"""JSLA: Joint Spatial and Layer Attention (Joseph, Derpanis, Qureshi, BMVC 2019); docs/DESIGN.md,
"The model", says every choice the paper leaves open and ours.

Reads top-down like the paper's Fig. 2:

    features  = GoogLeNet(images)                  candidate layers 3b, 4c, 4e, 5b
    h0, c0    = InitialState(GAP of every layer)
    for t in 1..N:
        l_t        = select_layer(h_{t-1})         Gumbel hard attention over layers
        O, alpha   = spatial_attention_l(F_l, h_{t-1})
        x_t        = adapter_l(h*w O)              C_l -> D, resized to the 14x14 grid (h*w: ours)
        h_t, c_t   = convlstm_step(x_t, h_{t-1}, c_{t-1})
    prediction = FC(dropout(GAP(concat(h_1..h_N))))

This module is the reference implementation: every fused kernel and runtime is checked against it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CANDIDATE_LAYERS, ModelConfig
from ..ops import resolve
from .attention import SpatialAttention, resize_to
from .convlstm import MultiKernelConvLSTM
from .base import JSLAOutput, Model, ModelOutput
from .googlenet import GoogLeNet
from .layer_selection import LayerSelector, gumbel_straight_through, temperature
from .pose_head import PoseDecoder, PoseHead, pose_head


class LayerBranch(nn.Module):
    """Everything specific to one candidate layer: spatial attention and the adapter to the grid."""

    def __init__(self, channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = SpatialAttention(channels, cfg.hidden_channels, cfg.attention_kernel_sizes,
                                          cfg.attention_width, cfg.attention_slope)
        self.adapter = nn.Conv2d(channels, cfg.input_channels, 1)
        self.grid = (cfg.grid, cfg.grid)
        self.rescale = cfg.attention_rescale

    def forward(self, feat: torch.Tensor, h: torch.Tensor, backend=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F [B,C,h,w], h_{t-1}) -> (x_t [B,D,G,G], alpha [B,1,h,w])``."""
        out, alpha = self.attention(feat, h, backend)
        scale = out.shape[-2] * out.shape[-1] if self.rescale else 1  # see ModelConfig.attention_rescale
        if out.shape[-2] >= self.grid[0] and out.shape[-1] >= self.grid[1]:
            # area pooling and the 1x1 adapter are both linear and pooling weights sum to 1, so they
            # commute; pooling first costs a quarter of the adapter's FLOPs on 3b (28x28 -> 14x14)
            out = resize_to(out, self.grid)
        if scale != 1:
            out = out * scale
        return resize_to(self.adapter(out), self.grid), alpha


class InitialState(nn.Module):
    """``h0, c0 = tanh(FC(concat of GAP of every candidate layer))`` broadcast to the grid, plus a
    learned [hidden,G,G] bias each (the supplement's "learned initial states")."""

    def __init__(self, in_features: int, hidden: int, grid: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 2 * hidden)
        self.bias_h = nn.Parameter(torch.zeros(hidden, grid, grid))
        self.bias_c = nn.Parameter(torch.zeros(hidden, grid, grid))

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1)
        h, c = torch.tanh(self.fc(pooled)).chunk(2, dim=1)
        return h[:, :, None, None] + self.bias_h, c[:, :, None, None] + self.bias_c


class JSLA(Model):
    """The JSLA model. ``JSLA(ModelConfig(task="pose"))(images [B,3,H,W]) -> ModelOutput``.

    Images are normalised as recorded in ``self.normalization`` (set from checkpoints).
    """

    kind = "jsla"
    #: eval without data-dependent control flow (``static_graph = True``): every branch runs, each
    #: sample takes its chosen branch by a gather, maps in ``branch_attention``; what ONNX,
    #: torch.export and CUDA graphs capture. Equal to the eager model as ``_attend_every`` says
    has_static_form = True

    def __init__(self, config: ModelConfig | None = None, backend: str = "reference") -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = GoogLeNet(outputs=cfg.layers, style=cfg.backbone_style)
        self.branches = nn.ModuleList(LayerBranch(c, cfg) for c in cfg.layer_channels)
        self.initial_state = InitialState(sum(cfg.layer_channels), cfg.hidden_channels, cfg.grid)
        self.select_layer = LayerSelector(cfg.hidden_channels, cfg.gate_embedding, len(cfg.layers))
        self.convlstm = MultiKernelConvLSTM(cfg.input_channels, cfg.kernel_sizes, cfg.branch_channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = pose_head(cfg.steps * cfg.hidden_channels, cfg)
        self.aux_heads = (nn.ModuleList(PoseHead(cfg.hidden_channels, cfg.output_dim) for _ in range(cfg.steps))
                          if cfg.aux_heads else None)
        self.pose_decoder = PoseDecoder(cfg.uncertainty == "aleatoric") if cfg.task == "pose" else None
        self.tau = cfg.tau_start
        self.set_backend(backend)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self.config.layers)

    def pose_heads(self) -> list[PoseHead]:
        return [self.head, *(self.aux_heads or [])]

    # -- training-time controls -----------------------------------------------------------
    def set_progress(self, progress: float) -> float:
        """Anneal the Gumbel temperature for training progress in [0, 1]; returns the new tau."""
        c = self.config
        self.tau = temperature(progress, c.tau_start, c.tau_end, c.tau_schedule)
        return self.tau

    # -- forward --------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> ModelOutput:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"JSLA expects images [B,3,H,W], got {tuple(images.shape)}")
        cfg = self.config
        backend = resolve(self.backend, images.device)
        by_name = self.backbone(images)
        feats = [by_name[name] for name in cfg.layers]
        h, c = self.initial_state(feats)
        hs, layers, attention, selection, every_map = [], [], [], [], []
        for _ in range(cfg.steps):
            scores = self.select_layer(h)
            if self.training:
                z, index = gumbel_straight_through(scores, self.tau, generator)
                x, alpha = self._attend_all(feats, h, z, index, backend)
            elif self.static_graph:
                index = scores.argmax(dim=1)
                x, maps = self._attend_every(feats, h, index, backend)
                every_map.append(maps)
                alpha = None
            else:
                x, index, alpha = self._attend_chosen(feats, h, scores, backend)
            h, c = self.convlstm(x, h, c, backend)
            hs.append(h)
            layers.append(index)
            if alpha is not None:
                attention.append(alpha)
            selection.append(scores)
        out = self._predict(hs, torch.stack(layers, dim=1), attention, selection)
        out.branch_attention = every_map
        return out

    def _attend_all(self, feats, h, z, index, backend):
        """Training: every branch runs and ``x = sum_i z_i x_i``, so the straight-through
        gradient reaches the selection scores."""
        outs = [branch(f, h, backend) for branch, f in zip(self.branches, feats)]
        x = sum(z[:, i, None, None, None] * x_i for i, (x_i, _) in enumerate(outs))
        return x, gather_attention([a for _, a in outs], index)

    def _attend_every(self, feats, h, index, backend):
        """Static graph: every branch runs on the whole batch and each sample's ``x`` is gathered
        from its chosen branch (a copy: no arithmetic touches the other branches' outputs, so not
        even an inf there leaks in). Returns every branch's map.

        At a step where all samples chose the same layer (always at batch 1), the eager model runs
        that branch on the same whole batch, so the two forms are equal bit for bit. Where samples
        chose differently, the eager model runs each branch on its sub-batch, and convolution
        kernels round differently for another batch size (oneDNN picks its algorithm by shape;
        the cpp attention kernel splits its channel sum when a batch has few positions): the forms
        then agree to float32 rounding. tests/test_backends.py holds both."""
        outs = [branch(f, h, backend) for branch, f in zip(self.branches, feats)]
        xs = torch.stack([x_i for x_i, _ in outs])  # [K,B,D,G,G]
        x = xs.gather(0, index.view(1, -1, 1, 1, 1).expand(1, *xs.shape[1:])).squeeze(0)
        return x, [a for _, a in outs]

    def _attend_chosen(self, feats, h, scores, backend):
        """Inference: deterministic argmax; only the chosen branch runs, per sample."""
        index = scores.argmax(dim=1)
        chosen = index.unique().tolist()
        if len(chosen) == 1:  # the usual case (and always at B=1): no gather/scatter
            x, alpha = self.branches[chosen[0]](feats[chosen[0]], h, backend)
            return x, index, alpha
        x = h.new_empty(h.shape[0], self.config.input_channels, *h.shape[-2:])
        alphas: list[torch.Tensor | None] = [None] * len(self.branches)
        for i in chosen:
            rows = (index == i).nonzero().squeeze(1)
            x_i, a_i = self.branches[i](feats[i][rows], h[rows], backend)
            x[rows] = x_i
            alphas[i] = a_i.new_zeros(h.shape[0], *a_i.shape[1:]).index_copy(0, rows, a_i)
        return x, index, gather_attention(alphas, index)

    def _predict(self, hs, layers, attention, selection) -> ModelOutput:
        pooled = torch.cat(hs, dim=1).mean(dim=(2, 3))
        raw = self.head(self.dropout(pooled))
        aux = [head(h.mean(dim=(2, 3))) for head, h in zip(self.aux_heads, hs)] if self.aux_heads else []
        if self.pose_decoder is not None:
            pose, raw, log_var = self.pose_decoder(raw)
            aux = [self.pose_decoder(a)[1] for a in aux]
            return ModelOutput(pose=pose, logits=None, layers=layers, attention=attention,
                              selection_logits=selection, pose_raw=raw, aux=aux, log_var=log_var)
        return ModelOutput(pose=None, logits=raw, layers=layers, attention=attention,
                          selection_logits=selection, aux=aux)


def gather_attention(alphas: list[torch.Tensor | None], index: torch.Tensor,
                     chosen: list[int] | None = None) -> torch.Tensor:
    """Per sample, the attention map of the layer it chose, as one new [B,1,h,w] tensor.

    When samples chose layers on different grids, maps are brought to the finest chosen grid
    by area resampling and renormalised, so each still sums to 1 (for integer ratios such as
    7 -> 28 this spreads each cell's mass evenly over the cells it covers). ``chosen``: the
    distinct values of ``index`` when the caller already has them on the host (saves a sync).
    """
    chosen = index.unique().tolist() if chosen is None else chosen
    size = max((tuple(alphas[i].shape[-2:]) for i in chosen), key=lambda s: s[0] * s[1])
    ref = alphas[chosen[0]]
    out = ref.new_zeros(ref.shape[0], 1, *size)
    for i in chosen:
        a = alphas[i]
        if tuple(a.shape[-2:]) != size:
            a = F.adaptive_avg_pool2d(a, size) if a.shape[-2] >= size[0] else F.interpolate(a, size=size, mode="nearest")
            a = a / a.sum(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        out = torch.where((index == i).view(-1, 1, 1, 1), a, out)
    return out

__all__ = ["JSLA", "ModelOutput", "JSLAOutput", "CANDIDATE_LAYERS"]
