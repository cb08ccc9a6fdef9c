"""Configuration dataclasses, loadable from and savable to YAML. The model they describe is
docs/DESIGN.md, "The model"; choices the paper leaves open are marked (ours) there and here, and
each is a field, not a constant.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Candidate layers of GoogLeNet in network order: name -> (channels, how many of the backbone's
#: stride-2 max-pools come before it). Outputs are taken before the following max-pool. The one
#: table of the layers' shapes (:func:`layer_shapes`).
CANDIDATE_LAYERS: dict[str, tuple[int, int]] = {
    "3b": (480, 2),
    "4c": (512, 3),
    "4e": (832, 3),
    "5b": (1024, 4),
}


def _pooled(size: int, kernel: int) -> int:
    """A stride-2 max-pool with ``ceil_mode=True`` and no padding (the backbone's), as PyTorch
    sizes it: the last window must start inside the input."""
    out = -(-(size - kernel) // 2) + 1
    return out - 1 if (out - 1) * 2 >= size else out


def layer_shapes(size: int = 224, layers: tuple[str, ...] | None = None,
                 style: str = "torchvision") -> dict[str, tuple[int, int, int]]:
    """``name -> (C, h, w)`` of the candidate layers for a ``size`` x ``size`` input: 3b 480x28x28,
    4c 512x14x14, 4e 832x14x14, 5b 1024x7x7 at 224. The 7x7 stride-2 conv1 halves (rounding up),
    then 3x3 max-pools (the last one 2x2 in the torchvision style) round up."""
    grids, g = [], -(-size // 2)
    for i in range(4):
        g = _pooled(g, 2 if i == 3 and style == "torchvision" else 3)
        grids.append(g)
    names = CANDIDATE_LAYERS if layers is None else layers
    return {n: (CANDIDATE_LAYERS[n][0], grids[CANDIDATE_LAYERS[n][1] - 1], grids[CANDIDATE_LAYERS[n][1] - 1])
            for n in names}


TASKS = ("pose", "scene")
BACKBONE_STYLES = ("torchvision", "caffe")
TAU_SCHEDULES = ("exponential", "linear")
#: per-image uncertainty of the pose head: none (the paper) or aleatoric (Kendall & Gal 2017)
UNCERTAINTY = ("none", "aleatoric")
#: how an aleatoric head is trained (docs/TRAINING.md, "Per-image uncertainty"): "decoupled" (the
#: default) trains the network with the pose loss alone and the head's variance outputs, on the
#: network's features with their gradient stopped, by Kendall & Gal's likelihood of the pose's
#: errors; "attenuation" is their likelihood for pose and variances together, which lets the
#: network discount its hard images (measured: it nearly doubled the demo's JSLA's position error)
ALEATORIC_LOSSES = ("decoupled", "attenuation")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


class YamlConfig:
    """to_dict / from_dict / YAML for the config dataclasses; unknown fields are errors."""

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return _from_dict(cls, data, "")

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path):
        try:
            return cls.from_dict(_read_yaml(path))
        except ConfigError as e:
            if str(path) in str(e):
                raise
            raise ConfigError(f"config file {path}: {e}") from None


@dataclass
class LossConfig(YamlConfig):
    """Training losses. Pose: Kendall & Cipolla's learned weighting by default, started at the
    training set's own balance; ``learned_weighting: false`` is the paper's fixed-beta loss."""

    beta: float = 500.0  #: fixed-beta rotation weight (metres per unit quaternion distance); per scene (Cambridge 250-2000, 7-Scenes 120-750)
    learned_weighting: bool = True  #: learned (s_x, s_q) instead of a fixed beta (ours: the paper uses a fixed beta)
    #: start of s_x, s_q; None: the log of each term's value for the mean training pose, i.e. each
    #: term starts weighted by 1 / its own scale in the data (Kendall & Cipolla used 0 and -3)
    s_x_init: float | None = None
    s_q_init: float | None = None
    aux_weight: float = 0.3  #: weight of the mean per-step auxiliary loss, when aux heads exist (ours)
    aleatoric: str = "decoupled"  #: with model.uncertainty: aleatoric, one of ALEATORIC_LOSSES

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ConfigError(f"loss.beta = {self.beta} must be >= 0")
        if self.aleatoric not in ALEATORIC_LOSSES:
            raise ConfigError(f"loss.aleatoric = {self.aleatoric!r} is not a way to train an aleatoric head; "
                              f"use one of {ALEATORIC_LOSSES}")


@dataclass
class ModelConfig(YamlConfig):
    """A model of the registry (docs/DESIGN.md, "The model", "Models"). Every kind reads ``task``,
    ``num_classes``, ``backbone_style``, ``dropout``, ``uncertainty`` and ``loss``; the rest
    describes JSLA's layer attention and ConvLSTM. ``steps`` defaults to 3 for pose and 2 for scene."""

    task: str = "pose"
    num_classes: int = 67
    steps: int | None = None
    layers: tuple[str, ...] = ("3b", "4c", "4e", "5b")
    backbone_style: str = "torchvision"  #: "caffe" = Places/BVLC GoogLeNet (LRN, 5x5, conv bias)
    # ConvLSTM (ours): hidden = len(kernel_sizes) * branch_channels = 96
    kernel_sizes: tuple[int, ...] = (1, 3, 5, 7)
    branch_channels: int = 24
    input_channels: int = 128  #: D, the adapter's output channels (ours)
    grid: int = 14  #: the ConvLSTM grid, grid x grid (ours)
    # layer selection
    gate_embedding: int = 32  #: E (ours)
    tau_start: float = 1.0  #: Gumbel-softmax temperature at the start of training (ours)
    tau_end: float = 0.1
    tau_schedule: str = "exponential"
    # spatial attention
    attention_slope: float = 0.01  #: LeakyReLU slope; 0.0 gives the main paper's ReLU
    attention_kernel_sizes: tuple[int, ...] = (1, 3, 5)
    attention_width: int = 16  #: channels per attention branch (ours)
    #: the branch's adapter reads O * h*w instead of the paper's O = F * alpha (ours): a uniform alpha
    #: then passes F at its own scale. alpha sums to 1, so O alone is F / (h*w), 64x-784x too small
    #: (3b at 64-224 px input), which the adapter would have to undo by growing its weights
    attention_rescale: bool = True
    # head
    dropout: float = 0.5
    aux_heads: bool = False  #: per-step auxiliary heads on each h_t
    #: "aleatoric": the pose head also predicts a log-variance per position axis (m^2) and per
    #: rotation axis (rad^2), trained by the Gaussian likelihood (losses.aleatoric_nll) as
    #: ``loss.aleatoric`` says (ours)
    uncertainty: str = "none"
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = _from_dict(LossConfig, self.loss, "loss")
        self.layers = tuple(str(x).lower() for x in self.layers)
        self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        self.attention_kernel_sizes = tuple(int(k) for k in self.attention_kernel_sizes)
        if self.steps is None:
            self.steps = 3 if self.task == "pose" else 2
        self.validate()

    # -- derived --------------------------------------------------------------------------
    @property
    def hidden_channels(self) -> int:
        return len(self.kernel_sizes) * self.branch_channels

    @property
    def layer_channels(self) -> tuple[int, ...]:
        return tuple(CANDIDATE_LAYERS[name][0] for name in self.layers)

    @property
    def output_dim(self) -> int:
        if self.task == "scene":
            return self.num_classes
        return 13 if self.uncertainty == "aleatoric" else 7  # + 6 log-variances

    # -- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        def bad(name: str, value: Any, allowed: str) -> ConfigError:
            return ConfigError(f"config field {name!r} = {value!r} is invalid: {allowed}")

        if self.task not in TASKS:
            raise bad("task", self.task, f"use one of {TASKS}")
        if self.task == "scene" and self.num_classes < 2:
            raise bad("num_classes", self.num_classes, "a scene task needs at least 2 classes")
        if not (isinstance(self.steps, int) and 1 <= self.steps <= 5):
            raise bad("steps", self.steps, "use an integer from 1 to 5")
        unknown = [n for n in self.layers if n not in CANDIDATE_LAYERS]
        if unknown or not self.layers:
            raise bad("layers", list(self.layers), f"use a non-empty subset of {list(CANDIDATE_LAYERS)}")
        if len(set(self.layers)) != len(self.layers):
            raise bad("layers", list(self.layers), "each layer may appear once")
        order = list(CANDIDATE_LAYERS)
        self.layers = tuple(sorted(self.layers, key=order.index))
        if self.backbone_style not in BACKBONE_STYLES:
            raise bad("backbone_style", self.backbone_style, f"use one of {BACKBONE_STYLES}")
        for name in ("kernel_sizes", "attention_kernel_sizes"):
            ks = getattr(self, name)
            if not ks or any(k < 1 or k % 2 == 0 for k in ks):
                raise bad(name, list(ks), "use odd kernel sizes >= 1 ('same' padding)")
        for name in ("branch_channels", "input_channels", "grid", "gate_embedding", "attention_width"):
            if getattr(self, name) < 1:
                raise bad(name, getattr(self, name), "use a positive integer")
        if not (0 < self.tau_end <= self.tau_start):
            raise bad("tau_end", self.tau_end, f"need 0 < tau_end <= tau_start ({self.tau_start})")
        if self.tau_schedule not in TAU_SCHEDULES:
            raise bad("tau_schedule", self.tau_schedule, f"use one of {TAU_SCHEDULES}")
        if not (0.0 <= self.attention_slope < 1.0):
            raise bad("attention_slope", self.attention_slope, "use a slope in [0, 1)")
        if not (0.0 <= self.dropout < 1.0):
            raise bad("dropout", self.dropout, "use a probability in [0, 1)")
        if self.uncertainty not in UNCERTAINTY:
            raise bad("uncertainty", self.uncertainty, f"use one of {UNCERTAINTY}")
        if self.uncertainty != "none" and self.task != "pose":
            raise bad("uncertainty", self.uncertainty, "per-image uncertainty is for the pose task; use 'none'")


#: the name ModelConfig had when JSLA was the only model; kept for user code
JSLAConfig = ModelConfig


@dataclass
class DataConfig(YamlConfig):
    """Data pipeline (docs/DESIGN.md, "Conventions"). Pose images: shorter side ``resize``, mean image, random (train) or
    centre (test) ``crop``. Scenes: ``scene_size`` x ``scene_size``, mean, crop, flips."""

    resize: int = 256
    scene_size: int = 256
    crop: int = 224
    val_fraction: float = 0.1  #: held out of train for model selection (ours); test is never used
    flip: bool | None = None  #: random horizontal flips in training; None = scenes only
    #: random crop positions in training (PoseNet's augmentation); false: the centre crop, as at test.
    #: A shifted crop is another view under the same pose label (10 px of an 85 px wide 65 deg view: ~8 deg of yaw)
    random_crop: bool = True
    workers: int = 2  #: DataLoader worker processes
    seed: int = 0  #: for the validation split of scene classes

    def __post_init__(self) -> None:
        if self.crop > min(self.resize, self.scene_size):
            raise ConfigError(f"data.crop = {self.crop} is larger than data.resize/scene_size "
                              f"({self.resize}/{self.scene_size}); crop must fit in the resized image")
        if not (0.0 <= self.val_fraction < 1.0):
            raise ConfigError(f"data.val_fraction = {self.val_fraction} must be in [0, 1)")


@dataclass
class TrainConfig(YamlConfig):
    """Optimisation (paper §3.4: Adam, batch 40; the rest is ours)."""

    epochs: int = 30
    batch_size: int = 40
    lr: float = 1e-4
    lr_schedule: str = "cosine"  #: "cosine" decays to 0 over the run, "constant" keeps lr (ours)
    weight_decay: float = 0.0
    seed: int = 0
    deterministic: bool = False  #: bitwise-reproducible runs (slower); --resume then equals an uninterrupted run
    amp: bool = True  #: mixed precision, CUDA only
    #: the global gradient norm each step is scaled down to; None: no clipping (ours). JSLA's
    #: straight-through layer-choice gradient grows as 1/tau and spikes to 30x its median norm as tau
    #: falls; unclipped, the training seed alone moved it by 0.15 m (docs/TRAINING.md)
    grad_clip: float | None = 1.0
    pretrained: str | None = None  #: torchvision state dict or Caffe Places-GoogLeNet pickle for the backbone
    head_init_mean: bool = True  #: standardise positions by the training set and start pose heads at its mean pose (ours)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} = {getattr(self, name)} must be a positive integer")
        if self.lr <= 0:
            raise ConfigError(f"train.lr = {self.lr} must be positive")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"train.lr_schedule = {self.lr_schedule!r}; use 'cosine' or 'constant'")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"train.grad_clip = {self.grad_clip} must be a positive gradient norm, "
                              "or null for no clipping")


@dataclass
class RunConfig(YamlConfig):
    """Everything a training run needs; YAML sections ``model:``, ``data:``, ``train:``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, _from_dict(cls, getattr(self, name), name))


#: PoseNet's fixed beta per scene, as LSTM-PoseNet and JSLA train (JSLA: "the same values as
#: [PoseNet, LSTM-PoseNet]"; the papers give only ranges, the values are those of the public
#: LSTM-PoseNet reimplementation). Keys: the dataset folder's name, lower case, letters and digits.
PAPER_BETA: dict[str, float] = {"kingscollege": 500.0, "oldhospital": 1500.0, "shopfacade": 100.0,
                                "stmaryschurch": 250.0}
PAPER_BETA_RANGES = "Cambridge Landmarks 250-2000, 7-Scenes 120-750, TUM-LSI 1000 (PoseNet / JSLA papers)"
PRESETS = ("paper",)


def scene_key(data: str | Path) -> str:
    """``.../KingsCollege/`` -> ``kingscollege``: how :data:`PAPER_BETA` names a scene."""
    return "".join(ch for ch in Path(data).resolve().name.lower() if ch.isalnum())


def apply_preset(cfg: RunConfig, name: str, data: str | Path | None = None) -> list[str]:
    """Set ``cfg`` to preset ``name`` in place; returns what it did, a line each, for the log.

    ``paper``: the JSLA paper's training (Sec. 3.4 and supplement): input resized to 256 (shorter
    side) and cropped to 224, batch 40, Adam; the learning rate, which the paper does not give, is
    1e-4 (ours; PoseNet-style fine-tuning). Loss: the fixed-beta PoseNet loss with the scene's beta
    from :data:`PAPER_BETA` when the scene is listed there; otherwise the learned weighting stays
    (the paper gives no beta for it) and the log says how to pass one.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; use one of {PRESETS}")
    cfg.data.resize, cfg.data.crop = 256, 224
    cfg.train.batch_size, cfg.train.lr = 40, 1e-4
    done = ["preset paper: input 256 -> crop 224, batch 40, Adam lr 1e-4"]
    beta = PAPER_BETA.get(scene_key(data)) if data is not None else None
    if cfg.model.task != "pose":
        return done
    if beta is None:
        done.append(f"preset paper: no published beta for scene {scene_key(data or '.')!r} (listed: "
                    f"{sorted(PAPER_BETA)}); keeping the learned weighting; for the paper's fixed-beta loss "
                    f"pass --beta B ({PAPER_BETA_RANGES})")
    else:
        cfg.model.loss.beta, cfg.model.loss.learned_weighting = beta, False
        done.append(f"preset paper: fixed beta = {beta:g} for scene {scene_key(data)!r}")
    return done


def _read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def _to_plain(value: Any) -> Any:
    """Tuples become lists so YAML and ``torch.load(weights_only=True)`` both accept the result."""
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config field(s) {[prefix + u for u in unknown]}; known fields: {sorted(names)}"
        )
    try:
        return cls(**data)
    except TypeError as e:
        raise ConfigError(f"config {where or cls.__name__}: {e}") from None
