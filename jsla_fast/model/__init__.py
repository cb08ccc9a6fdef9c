"""The reference JSLA model (SPEC §2): backbone, layer selection, spatial attention, ConvLSTM."""
from .attention import SpatialAttention, attention_reference, resize_to
from .convlstm import MultiKernelConvLSTM, convlstm_step_reference
from .googlenet import GoogLeNet
from .jsla import JSLA, JSLAOutput
from .posenet import PoseNet
from .layer_selection import LayerSelector, gumbel_straight_through, temperature

__all__ = ["JSLA", "JSLAOutput", "PoseNet", "GoogLeNet", "SpatialAttention", "attention_reference", "resize_to",
           "MultiKernelConvLSTM", "convlstm_step_reference", "LayerSelector", "gumbel_straight_through",
           "temperature"]
