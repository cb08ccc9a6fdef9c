"""The models (docs/DESIGN.md, "The model", "Models"): JSLA's parts (backbone, layer selection,
spatial attention, ConvLSTM) over the op layer :mod:`jsla_fast.ops`, the baselines, the one model
interface (:mod:`.base`) and the registry of every kind (:mod:`.registry`)."""
from .attention import SpatialAttention, resize_to
from .convlstm import MultiKernelConvLSTM
from .base import JSLAOutput, Model, ModelOutput
from .googlenet import GoogLeNet
from .jsla import JSLA
from .posenet import PoseNet
from .poselstm import PoseLSTM
from .layer_selection import LayerSelector, gumbel_straight_through, temperature
from .registry import MODELS, load_checkpoint, model_class

__all__ = ["MODELS", "Model", "ModelOutput", "model_class", "load_checkpoint", "JSLA", "JSLAOutput", "PoseNet",
           "PoseLSTM", "GoogLeNet", "SpatialAttention", "resize_to", "MultiKernelConvLSTM", "LayerSelector",
           "gumbel_straight_through", "temperature"]
