"""Network configurations as plain dataclasses, with the released Champ (SD1.5) values as defaults.

The released `.pth` files carry no config, so `infer_unet_config` / `infer_guidance_encoder_config`
read the architecture back from tensor names and shapes. What shapes cannot tell is fixed to the
values of the reference implementation (head counts, norm groups and epsilons, the timestep
embedding's flip/shift); docs/models.md lists both groups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from .errors import CheckpointError

Shapes = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class MotionModuleConfig:
    """AnimateDiff v2 ("Vanilla") motion modules: one temporal transformer after every UNet unit."""

    num_attention_heads: int = 8
    num_attention_blocks: int = 2  # ("Temporal_Self", "Temporal_Self")
    num_transformer_blocks: int = 1
    max_frames: int = 32  # length of the sinusoidal temporal position encoding
    norm_num_groups: int = 32


@dataclass(frozen=True)
class UNetConfig:
    """An SD1.5-style conditional UNet. `motion` is None for the ReferenceNet (a plain 2D UNet)."""

    in_channels: int = 4
    out_channels: int | None = 4  # None: no output head (the ReferenceNet)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_cross_attention: tuple[bool, ...] = (True, True, True, False)
    up_cross_attention: tuple[bool, ...] = (False, True, True, True)
    layers_per_block: int = 2
    cross_attention_dim: int = 768
    num_attention_heads: int = 8  # SD1.5's config calls this "attention_head_dim": 8
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    motion: MotionModuleConfig | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> UNetConfig:
        data = dict(data)
        motion = data.pop("motion", None)
        for key in ("block_out_channels", "down_cross_attention", "up_cross_attention"):
            data[key] = tuple(data[key])
        return cls(**data, motion=MotionModuleConfig(**motion) if motion else None)


@dataclass(frozen=True)
class GuidanceEncoderConfig:
    """One guidance encoder (depth, normal, semantic_map or dwpose); released values by default."""

    in_channels: int = 3
    embedding_channels: int = 320
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    num_attention_heads: int = 8
    norm_num_groups: int = 32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> GuidanceEncoderConfig:
        data = dict(data)
        data["block_out_channels"] = tuple(data["block_out_channels"])
        return cls(**data)


@dataclass(frozen=True)
class ChampConfig:
    """Everything needed to build the three networks."""

    denoising_unet: UNetConfig = field(default_factory=lambda: UNetConfig(motion=MotionModuleConfig()))
    reference_unet: UNetConfig = field(default_factory=lambda: UNetConfig(out_channels=None))
    guidance_encoder: GuidanceEncoderConfig = field(default_factory=GuidanceEncoderConfig)


# ----------------------------------------------------------------------------------------------
# Configs written by the reference code (diffusers-style json), e.g. the parity fixtures' configs.


def unet_config_from_diffusers(config: Mapping, *, motion: bool, output_head: bool) -> UNetConfig:
    """Translate a diffusers/reference UNet config dict (2D or 3D block names) into a UNetConfig."""
    if "unet_2d_config_json" in config:  # the fixtures' denoising_unet_config.json wrapper
        extra = config.get("unet_additional_kwargs", {})
        config = {**config["unet_2d_config_json"], **extra}
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    if not isinstance(heads, int):
        raise CheckpointError(f"per-block head counts are not supported: {heads!r}")
    motion_config = None
    if motion:
        kwargs = config.get("motion_module_kwargs", {})
        motion_config = MotionModuleConfig(
            num_attention_heads=kwargs.get("num_attention_heads", 8),
            num_attention_blocks=len(kwargs.get("attention_block_types", ("Temporal_Self", "Temporal_Self"))),
            num_transformer_blocks=kwargs.get("num_transformer_block", 1),
            max_frames=kwargs.get("temporal_position_encoding_max_len", 32),
        )
    return UNetConfig(
        in_channels=config.get("in_channels", 4),
        out_channels=config.get("out_channels", 4) if output_head else None,
        block_out_channels=tuple(config["block_out_channels"]),
        down_cross_attention=tuple(name.startswith("CrossAttn") for name in config["down_block_types"]),
        up_cross_attention=tuple(name.startswith("CrossAttn") for name in config["up_block_types"]),
        layers_per_block=config.get("layers_per_block", 2),
        cross_attention_dim=config.get("cross_attention_dim", 768),
        num_attention_heads=heads,
        norm_num_groups=config.get("norm_num_groups", 32),
        norm_eps=config.get("norm_eps", 1e-5),
        flip_sin_to_cos=config.get("flip_sin_to_cos", True),
        freq_shift=config.get("freq_shift", 0),
        motion=motion_config,
    )


def guidance_encoder_config_from_reference(config: Mapping) -> GuidanceEncoderConfig:
    """Translate the reference's GuidanceEncoder constructor arguments."""
    return GuidanceEncoderConfig(
        in_channels=config.get("guidance_input_channels", 3),
        embedding_channels=config.get("guidance_embedding_channels", 320),
        block_out_channels=tuple(config.get("block_out_channels", (16, 32, 96, 256))),
        num_attention_heads=config.get("attention_num_heads", 8),
    )


# ----------------------------------------------------------------------------------------------
# Inference from tensor names and shapes.


def _count(shapes: Shapes, pattern: str) -> int:
    regex = re.compile(pattern)
    found = {m.group(1) for key in shapes if (m := regex.match(key))}
    return len(found)


def _shape(shapes: Shapes, key: str, what: str) -> Sequence[int]:
    if key not in shapes:
        raise CheckpointError(f"cannot infer the {what}: tensor {key!r} is missing")
    return shapes[key]


def infer_unet_config(shapes: Shapes) -> UNetConfig:
    """Read a UNetConfig back from a state dict's names and shapes.

    Inferred: input/output channels, block widths, layers per block, which blocks have
    cross-attention, the cross-attention width, whether there is an output head, whether there
    are motion modules and their attention-block count and positional length. Fixed (not visible
    in shapes): 8 heads in the spatial and temporal attention, 32 norm groups, epsilons
    (1e-5 resnets/LayerNorms, 1e-6 transformer/motion GroupNorms), flip_sin_to_cos=True, shift 0.
    """
    num_down = _count(shapes, r"down_blocks\.(\d+)\.")
    if num_down == 0:
        raise CheckpointError("cannot infer the UNet layout: no 'down_blocks.*' tensors")
    widths = tuple(
        _shape(shapes, f"down_blocks.{i}.resnets.0.conv1.weight", "block width")[0] for i in range(num_down)
    )
    layers = _count(shapes, r"down_blocks\.0\.resnets\.(\d+)\.")
    down_cross = tuple(f"down_blocks.{i}.attentions.0.norm.weight" in shapes for i in range(num_down))
    up_cross = tuple(f"up_blocks.{i}.attentions.0.norm.weight" in shapes for i in range(num_down))
    cross_key = next((k for k in shapes if k.endswith("attn2.to_k.weight")), None)
    if cross_key is None:
        raise CheckpointError("cannot infer the cross-attention width: no '*.attn2.to_k.weight' tensor")
    motion = None
    if any(".motion_modules." in key for key in shapes):
        pe_key = next((k for k in shapes if k.endswith("pos_encoder.pe")), None)
        if pe_key is None:
            raise CheckpointError("motion modules without temporal position encoding ('pos_encoder.pe') are not supported")
        prefix = "down_blocks.0.motion_modules.0.temporal_transformer."
        motion = MotionModuleConfig(
            num_attention_blocks=_count(shapes, re.escape(prefix) + r"transformer_blocks\.0\.attention_blocks\.(\d+)\."),
            num_transformer_blocks=_count(shapes, re.escape(prefix) + r"transformer_blocks\.(\d+)\."),
            max_frames=shapes[pe_key][1],
        )
    return UNetConfig(
        in_channels=_shape(shapes, "conv_in.weight", "input channels")[1],
        out_channels=shapes["conv_out.weight"][0] if "conv_out.weight" in shapes else None,
        block_out_channels=widths,
        down_cross_attention=down_cross,
        up_cross_attention=up_cross,
        layers_per_block=layers,
        cross_attention_dim=shapes[cross_key][1],
        motion=motion,
    )


def infer_guidance_encoder_config(shapes: Shapes) -> GuidanceEncoderConfig:
    """Read a GuidanceEncoderConfig back from names and shapes (either naming).

    Inferred: input channels, block widths, output channels. Fixed: 8 heads, 32 norm groups.
    """
    conv_in = _shape(shapes, "conv_in.weight", "guidance input channels")
    num_convs = _count(shapes, r"blocks\.(\d+)\.weight")
    if num_convs == 0 or num_convs % 2:
        raise CheckpointError(f"cannot infer the guidance encoder: expected an even number of 'blocks.N' convs, found {num_convs}")
    widths = [conv_in[0]] + [_shape(shapes, f"blocks.{i}.weight", "block width")[0] for i in range(1, num_convs, 2)]
    return GuidanceEncoderConfig(
        in_channels=conv_in[1],
        embedding_channels=_shape(shapes, "conv_out.weight", "guidance embedding width")[0],
        block_out_channels=tuple(widths),
    )
