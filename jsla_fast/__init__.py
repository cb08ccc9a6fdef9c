"""jsla_fast: Joint Spatial and Layer Attention (BMVC 2019) for camera relocalization and scenes."""
from .checkpoint import CheckpointError, save_checkpoint
from .config import ConfigError, JSLAConfig, LossConfig, ModelConfig
from .losses import JSLALoss
from .model import JSLA, JSLAOutput, ModelOutput, PoseNet
from .model.registry import load_checkpoint
from .normalization import Normalization

__version__ = "0.1.0"
__all__ = ["JSLA", "PoseNet", "ModelConfig", "ModelOutput", "JSLAConfig", "JSLAOutput", "LossConfig", "JSLALoss", "Normalization",
           "save_checkpoint", "load_checkpoint", "CheckpointError", "ConfigError"]
