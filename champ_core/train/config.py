"""Training configuration: the reference's stage-1 / stage-2 yaml keys, as dataclasses.

`load_config(stage, path, overrides)` reads a yaml file written for the reference implementation
(`configs/train/stage1.yaml`, `stage2.yaml`) unchanged, applies `--set a.b=value` overrides (values
parsed as yaml scalars/lists and checked against the field's type) and returns a `Stage1Config` or
`Stage2Config`. An unknown key is an error naming the key and the file.

Keys this project adds to the reference's (all optional, documented in docs/training.md):
`checkpoints_total_limit`, `max_bad_sample_fraction`, `reference_bank_fp32`, `tiny_model` (architecture of the built-in tiny
networks), `data.num_workers`, `validation.num_inference_steps`, `validation.guidance_scale`,
`solver.lr_num_cycles`, `solver.log_steps`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("stage1", "stage2")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
WEIGHT_DTYPES = ("fp32", "fp16", "bf16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
# A model path with this prefix names one of the project's deterministic tiny networks (tiny.py).
BUILTIN_PREFIX = "builtin:"


class ConfigError(ValueError):
    """A training config that cannot be used (the message names the key and the file)."""


def _default_guids() -> list[str]:
    return ["depth", "normal", "semantic_map", "dwpose"]


@dataclass
class DataConfig:
    train_bs: int = 4
    video_folder: str = ""
    guids: list[str] = field(default_factory=_default_guids)
    image_size: int = 768
    bbox_crop: bool = False
    bbox_resize_ratio: list[float] = field(default_factory=lambda: [0.9, 1.5])
    aug_type: str = "Resize"
    data_parts: list[str] = field(default_factory=lambda: ["all"])
    # project key: DataLoader worker processes (0: load in the training process)
    num_workers: int = 0


@dataclass
class Stage1DataConfig(DataConfig):
    sample_margin: int = 30


@dataclass
class Stage2DataConfig(DataConfig):
    train_bs: int = 1
    image_size: int = 512
    sample_frames: int = 24
    sample_rate: int = 4


@dataclass
class ValidationConfig:
    validation_steps: int = 1000
    ref_images: list[str] = field(default_factory=list)
    guidance_folders: list[str] = field(default_factory=list)
    guidance_indexes: list[int] = field(default_factory=lambda: [0, 30, 60, 90, 120])
    # project keys
    num_inference_steps: int = 20
    guidance_scale: float = 3.5


@dataclass
class Stage2ValidationConfig(ValidationConfig):
    clip_length: int = 24


@dataclass
class SolverConfig:
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "fp16"
    enable_xformers_memory_efficient_attention: bool = True
    gradient_checkpointing: bool = False
    max_train_steps: int = 100000
    max_grad_norm: float = 1.0
    learning_rate: float = 1e-5
    scale_lr: bool = False
    lr_warmup_steps: int = 1
    lr_scheduler: str = "constant"
    use_8bit_adam: bool = False
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    # project keys
    lr_num_cycles: int = 1
    log_steps: int = 1


@dataclass
class NoiseSchedulerConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    steps_offset: int = 1
    clip_sample: bool = False


@dataclass
class GuidanceEncoderKwargs:
    guidance_embedding_channels: int = 320
    guidance_input_channels: int = 3
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 96, 256])


@dataclass
class MotionModuleKwargs:
    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_block_types: list[str] = field(default_factory=lambda: ["Temporal_Self", "Temporal_Self"])
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 32
    temporal_attention_dim_div: int = 1


@dataclass
class UNetAdditionalKwargs:
    use_inflated_groupnorm: bool = True
    unet_use_cross_frame_attention: bool = False
    unet_use_temporal_attention: bool = False
    use_motion_module: bool = True
    motion_module_resolutions: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    motion_module_mid_block: bool = True
    motion_module_decoder_only: bool = False
    motion_module_type: str = "Vanilla"
    motion_module_kwargs: MotionModuleKwargs = field(default_factory=MotionModuleKwargs)


@dataclass
class TinyModelConfig:
    """Project key: the architecture of the built-in tiny networks (`builtin:tiny` model paths)."""

    unet_block_out_channels: list[int] = field(default_factory=lambda: [32, 64])
    # Per level, from the full latent resolution down: whether it has (reference and cross) attention.
    # Empty: every level but the lowest, as SD1.5. Attention at the top level dominates a CPU step
    # once the latents are 32x32 (a 4x VAE at 128 px): [false, true, true] keeps it off there.
    unet_attention_levels: list[bool] = field(default_factory=list)
    unet_layers_per_block: int = 1
    cross_attention_dim: int = 32
    vae_block_out_channels: list[int] = field(default_factory=lambda: [8, 16, 16, 16])
    clip_hidden_size: int = 32
    clip_layers: int = 2
    seed: int = 0


@dataclass
class TrainConfig:
    exp_name: str = "stage1"
    output_dir: str = "./exp_output"
    seed: int = 42
    resume_from_checkpoint: str = ""
    checkpointing_steps: int = 2000
    save_model_epoch_interval: int = 20
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    noise_scheduler_kwargs: NoiseSchedulerConfig = field(default_factory=NoiseSchedulerConfig)
    guidance_encoder_kwargs: GuidanceEncoderKwargs = field(default_factory=GuidanceEncoderKwargs)
    base_model_path: str = "pretrained_models/stable-diffusion-v1-5"
    vae_model_path: str = "pretrained_models/sd-vae-ft-mse"
    image_encoder_path: str = "pretrained_models/image_encoder"
    weight_dtype: str = "fp16"
    uncond_ratio: float = 0.1
    noise_offset: float = 0.05
    snr_gamma: float = 5.0
    enable_zero_snr: bool = True
    # project keys
    checkpoints_total_limit: int = 6
    max_bad_sample_fraction: float = 0.01
    # false (the reference): the ReferenceNet's tokens reach the denoiser rounded to float16 even in
    # float32 training; true hands them over unrounded (batch-size invariant, for exact comparisons)
    reference_bank_fp32: bool = False
    # stage 2: weight of the frame-to-frame error term (champ_core/train/objective.py); 0 = the reference
    temporal_loss_weight: float = 0.0
    tiny_model: TinyModelConfig = field(default_factory=TinyModelConfig)

    stage = "stage1"
    # where the config was read from (not a yaml key)
    source: str = field(default="<defaults>", repr=False, compare=False, metadata={"internal": True})

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)


@dataclass
class Stage1Config(TrainConfig):
    data: Stage1DataConfig = field(default_factory=Stage1DataConfig)

    stage = "stage1"


@dataclass
class Stage2Config(TrainConfig):
    exp_name: str = "stage2"
    stage1_ckpt_step: str = "latest"
    stage1_ckpt_dir: str = ""
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    validation: Stage2ValidationConfig = field(default_factory=Stage2ValidationConfig)
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(
        gradient_checkpointing=True, max_train_steps=50000, use_8bit_adam=True))
    noise_scheduler_kwargs: NoiseSchedulerConfig = field(
        default_factory=lambda: NoiseSchedulerConfig(beta_schedule="linear"))
    unet_additional_kwargs: UNetAdditionalKwargs = field(default_factory=UNetAdditionalKwargs)
    mm_path: str = "./pretrained_models/mm_sd_v15_v2.ckpt"

    stage = "stage2"


CONFIG_CLASSES: dict[str, type[TrainConfig]] = {"stage1": Stage1Config, "stage2": Stage2Config}


# ----------------------------------------------------------------------------------------------
# Building dataclasses from plain mappings, with typed checking


def _yaml_fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str, source: str):
    """`value` as type `tp` (int -> float widening, numbers not from strings); else ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: key {key!r} must be a mapping of {', '.join(_yaml_fields(tp))}")
        return _build(tp, value, source, prefix=key + ".")
    if origin in (list, Sequence, tuple):
        (item_type,) = typing.get_args(tp)[:1] or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key {key!r} must be a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # yaml 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # yaml 1.1 reads an unquoted no/yes as a bool (mixed_precision: no)
            return "yes" if value else "no"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. stage1_ckpt_step: 2000
    raise ConfigError(f"{source}: key {key!r} must be {_type_name(tp)}, got {value!r}")


def _build(cls, data: Mapping, source: str, prefix: str = ""):
    fields = _yaml_fields(cls)
    hints = typing.get_type_hints(cls)
    for name in data:
        if name not in fields:
            raise ConfigError(f"{source}: unknown key '{prefix}{name}' (known keys"
                              f"{' under ' + prefix[:-1] if prefix else ''}: {', '.join(fields)})")
    kwargs = {name: _coerce(value, hints[name], prefix + name, source) for name, value in data.items()}
    return cls(**kwargs)


def config_from_dict(stage: str, data: Mapping, source: str = "<dict>") -> TrainConfig:
    if stage not in CONFIG_CLASSES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    config = _build(CONFIG_CLASSES[stage], data, source)
    config.source = source
    validate(config)
    return config


def config_to_dict(config) -> dict:
    """The yaml keys and values of a config (nested plain dicts and lists)."""
    out = {}
    for name in _yaml_fields(type(config)):
        value = getattr(config, name)
        out[name] = config_to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


# ----------------------------------------------------------------------------------------------
# --set a.b=c


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set solver.learning_rate=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: the key must be dotted names, e.g. data.train_bs")
    import yaml

    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Set dotted keys in a nested dict; values are typed later by `config_from_dict`."""
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (shipped configs: configs/train/*.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid yaml: {first}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(stage: str, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    data = apply_overrides(read_yaml(path), overrides)
    source = str(path) + (" with --set" if overrides else "")
    return config_from_dict(stage, data, source)


# ----------------------------------------------------------------------------------------------
# Values checked before any expensive work


def validate(config: TrainConfig) -> None:
    src = config.source
    from ..guidance import GUIDANCE_TYPES

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{src}: {key} {message}")

    if config.solver.mixed_precision not in MIXED_PRECISIONS:
        fail("solver.mixed_precision", f"must be one of {', '.join(MIXED_PRECISIONS)}, got {config.solver.mixed_precision!r}")
    if config.weight_dtype not in WEIGHT_DTYPES:
        fail("weight_dtype", f"must be one of {', '.join(WEIGHT_DTYPES)}, got {config.weight_dtype!r}")
    if config.solver.lr_scheduler not in LR_SCHEDULERS:
        fail("solver.lr_scheduler", f"must be one of {', '.join(LR_SCHEDULERS)}, got {config.solver.lr_scheduler!r}")
    if not config.data.guids:
        fail("data.guids", "must name at least one guidance type")
    bad = [g for g in config.data.guids if g not in GUIDANCE_TYPES]
    if bad:
        fail("data.guids", f"has unknown type(s) {bad}; expected some of {list(GUIDANCE_TYPES)}")
    if len(set(config.data.guids)) != len(config.data.guids):
        fail("data.guids", f"names a type twice: {config.data.guids}")
    positive = {
        "data.train_bs": config.data.train_bs, "data.image_size": config.data.image_size,
        "solver.max_train_steps": config.solver.max_train_steps,
        "solver.gradient_accumulation_steps": config.solver.gradient_accumulation_steps,
        "checkpointing_steps": config.checkpointing_steps,
        "validation.validation_steps": config.validation.validation_steps,
        "validation.num_inference_steps": config.validation.num_inference_steps,
        "solver.log_steps": config.solver.log_steps,
    }
    for key, value in positive.items():
        if value < 1:
            fail(key, f"must be at least 1, got {value}")
    if config.data.image_size % 8:
        fail("data.image_size", f"must be a multiple of 8 (the VAE's factor), got {config.data.image_size}")
    if config.data.num_workers < 0:
        fail("data.num_workers", f"must be >= 0, got {config.data.num_workers}")
    if not 0.0 <= config.uncond_ratio <= 1.0:
        fail("uncond_ratio", f"must be within [0, 1], got {config.uncond_ratio}")
    if config.temporal_loss_weight < 0:
        fail("temporal_loss_weight", f"must be >= 0 (0: the reference's loss), got {config.temporal_loss_weight}")
    if config.temporal_loss_weight > 0 and not isinstance(config, Stage2Config):
        fail("temporal_loss_weight", "only applies to stage 2 (stage 1 trains on single frames); set it to 0")
    if config.solver.learning_rate <= 0:
        fail("solver.learning_rate", f"must be > 0, got {config.solver.learning_rate}")
    if config.checkpoints_total_limit < 0:
        fail("checkpoints_total_limit", f"must be >= 0 (0: keep every checkpoint), got {config.checkpoints_total_limit}")
    if not 0.0 <= config.max_bad_sample_fraction <= 1.0:
        fail("max_bad_sample_fraction", f"must be within [0, 1], got {config.max_bad_sample_fraction}")
    if len(config.data.bbox_resize_ratio) != 2:
        fail("data.bbox_resize_ratio", f"must be [min, max], got {config.data.bbox_resize_ratio}")
    if len(config.validation.ref_images) != len(config.validation.guidance_folders):
        fail("validation.ref_images",
             f"and validation.guidance_folders must have the same length ({len(config.validation.ref_images)} vs "
             f"{len(config.validation.guidance_folders)})")
    if isinstance(config, Stage2Config):
        step = config.stage1_ckpt_step
        if step != "latest" and not (step.isdigit()):
            fail("stage1_ckpt_step", f"must be 'latest' or a step number, got {step!r}")
        if config.data.sample_frames < 1 or config.data.sample_rate < 1:
            fail("data.sample_frames", "and data.sample_rate must be at least 1")
