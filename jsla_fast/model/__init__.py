"""The reference JSLA model (SPEC §2): backbone, layer selection, spatial attention, ConvLSTM."""
from .attention import SpatialAttention, attention_reference, resize_to
from .convlstm import MultiKernelConvLSTM, convlstm_step_reference
from .googlenet import GoogLeNet
from .jsla import JSLA, JSLAOutput
from .posenet import PoseNet
from .poselstm import PoseLSTM
from .layer_selection import LayerSelector, gumbel_straight_through, temperature

#: every model the pipeline trains, saves and loads, by its ``kind`` (``--model`` in train)
MODELS = {cls.kind: cls for cls in (JSLA, PoseNet, PoseLSTM)}

__all__ = ["MODELS", "JSLA", "JSLAOutput", "PoseNet", "PoseLSTM", "GoogLeNet", "SpatialAttention", "attention_reference", "resize_to",
           "MultiKernelConvLSTM", "convlstm_step_reference", "LayerSelector", "gumbel_straight_through",
           "temperature"]
