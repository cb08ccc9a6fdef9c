"""LSTM-PoseNet (Walch et al., "Image-based localization using LSTMs for structured feature
correlation", ICCV 2017): the paper's second pose baseline, on the same backbone, data and loss.

GoogLeNet -> GAP of 5b -> FC 2048 -> ReLU -> reshape to a 32 x 64 matrix -> four directional
LSTMs (rows top-down and bottom-up, columns left-right and right-left: one bidirectional LSTM over
the 32 rows of 64 values, one over the 64 columns of 32 values) -> concat of their last hidden
states -> dropout -> FC to the pose. The LSTMs replace PoseNet's single FC regressor, so they can
pick out structured correlations of the 2048 features instead of weighting them all at once.
Hidden size per direction: 256 (ours: the paper's figure leaves it open; public reimplementations
use 256). Cost on top of PoseNet: about 4 x 2 x 4 x 256 x (256 + 48) x 48 = 60 MFLOP per image,
under 2 % of the backbone's 3 GFLOP at 224 x 224.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .pose_head import pose_head
from .posenet import PoseNet

ROWS, COLS = 32, 64  #: the reshape of the 2048 FC features (Walch et al. Sec. 3)


class PoseLSTM(PoseNet):
    kind = "poselstm"

    def __init__(self, config: ModelConfig | None = None, lstm_hidden: int = 256) -> None:
        super().__init__(config, hidden=ROWS * COLS)
        self.rows = nn.LSTM(COLS, lstm_hidden, batch_first=True, bidirectional=True)
        self.cols = nn.LSTM(ROWS, lstm_hidden, batch_first=True, bidirectional=True)
        self.head = pose_head(4 * lstm_hidden, self.config)

    def regress(self, features: torch.Tensor) -> torch.Tensor:
        grid = features.view(-1, ROWS, COLS)
        _, (h_rows, _) = self.rows(grid)  # [2, B, H]: the last state of each direction
        _, (h_cols, _) = self.cols(grid.transpose(1, 2))
        summary = torch.cat([h_rows[0], h_rows[1], h_cols[0], h_cols[1]], dim=1)
        return self.head(self.dropout(summary))
