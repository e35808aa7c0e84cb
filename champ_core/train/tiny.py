"""Tiny networks built deterministically on first use, for the tiny training configs and tests.

A model path `builtin:tiny` in a training config (`base_model_path`, `vae_model_path`,
`image_encoder_path`) names one of these instead of a downloaded folder:

- `base_model_path: builtin:tiny` -> an SD1.5-format folder (`unet/config.json` +
  `unet/diffusion_pytorch_model.safetensors`) holding a seeded diffusers `UNet2DConditionModel` of
  the config's `tiny_model` architecture; it goes through the same strict SD1.5 loading as a real one.
- `vae_model_path: builtin:tiny` -> a seeded diffusers `AutoencoderKL` folder. Its posterior
  log-variance is fixed at the lowest value diffusers allows (-30), so its latents are practically
  deterministic (a random-init VAE's posterior noise would otherwise swamp the tiny data).
- `image_encoder_path: builtin:tiny` -> a seeded transformers `CLIPVisionModelWithProjection` folder
  (224 px input, projection width = the UNet's cross-attention width).

Folders are cached under `cache_dir/<name>-<hash of the architecture>/` (written to a temporary
sibling and renamed, so a half-written cache never exists); the same architecture and seed give
the same bytes on every machine, so stage 1 and stage 2 see the same VAE and image encoder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch

from ..atomic import atomic_dir
from .config import BUILTIN_PREFIX, ConfigError, TinyModelConfig

TINY = BUILTIN_PREFIX + "tiny"
TINY_CACHE_ENV = "CHAMP_TINY_CACHE"


def is_builtin(path: str) -> bool:
    return str(path).startswith(BUILTIN_PREFIX)


def _digest(kind: str, tiny: TinyModelConfig) -> str:
    text = json.dumps({"kind": kind, **asdict(tiny), "version": 1}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a module constructor on torch's CPU RNG seeded with `seed`, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build(folder: Path, write) -> Path:
    if (folder / ".complete").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, overwrite=True) as tmp:
        write(tmp)
        (tmp / ".complete").write_text("ok\n")
    return folder


def tiny_unet_config(tiny: TinyModelConfig) -> dict:
    """diffusers UNet2DConditionModel kwargs of the tiny SD1.5-style UNet (first block with cross-attention)."""
    n = len(tiny.unet_block_out_channels)
    attention = list(tiny.unet_attention_levels) or [True] * (n - 1) + [False]
    if len(attention) != n:
        raise ConfigError(f"tiny_model.unet_attention_levels has {len(attention)} entries for {n} UNet levels "
                          "(unet_block_out_channels); give one true/false per level, or none")
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        block_out_channels=list(tiny.unet_block_out_channels),
        layers_per_block=tiny.unet_layers_per_block,
        cross_attention_dim=tiny.cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=32,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def build_tiny_sd_unet(folder: Path, tiny: TinyModelConfig) -> Path:
    def write(tmp: Path) -> None:
        from diffusers import UNet2DConditionModel

        with _seeded(tiny.seed):
            unet = UNet2DConditionModel(**tiny_unet_config(tiny))
        unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)

    return _build(folder, write)


def build_tiny_vae(folder: Path, tiny: TinyModelConfig) -> Path:
    def write(tmp: Path) -> None:
        from diffusers import AutoencoderKL

        n = len(tiny.vae_block_out_channels)
        with _seeded(tiny.seed + 1):
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=4,
                down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                block_out_channels=list(tiny.vae_block_out_channels), layers_per_block=1,
                norm_num_groups=min(4, tiny.vae_block_out_channels[0]), sample_size=64, scaling_factor=0.18215,
            )
        with torch.no_grad():  # posterior log-variance -> -30 (diffusers' clamp): near-deterministic latents
            latent = vae.config.latent_channels
            vae.quant_conv.weight[latent:].zero_()
            vae.quant_conv.bias[latent:].fill_(-30.0)
        vae.save_pretrained(str(tmp), safe_serialization=True)

    return _build(folder, write)


def build_tiny_image_encoder(folder: Path, tiny: TinyModelConfig) -> Path:
    def write(tmp: Path) -> None:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        config = CLIPVisionConfig(
            hidden_size=tiny.clip_hidden_size, intermediate_size=2 * tiny.clip_hidden_size,
            num_hidden_layers=tiny.clip_layers, num_attention_heads=2, image_size=224, patch_size=32,
            projection_dim=tiny.cross_attention_dim, hidden_act="quick_gelu",
        )
        with _seeded(tiny.seed + 2):
            model = CLIPVisionModelWithProjection(config)
        model.save_pretrained(str(tmp), safe_serialization=True)

    return _build(folder, write)


BUILDERS = {
    "base_model_path": ("tiny-sd15", build_tiny_sd_unet),
    "vae_model_path": ("tiny-vae", build_tiny_vae),
    "image_encoder_path": ("tiny-image-encoder", build_tiny_image_encoder),
}


def resolve_model_path(key: str, value: str, tiny: TinyModelConfig, cache_dir: str | Path) -> Path:
    """The folder a config's model path names: `builtin:tiny` is built (once) under `cache_dir`."""
    if not is_builtin(value):
        return Path(value)
    if value != TINY:
        raise ConfigError(f"{key}: unknown built-in model {value!r}; the only one is {TINY!r}")
    name, build = BUILDERS[key]
    return build(Path(cache_dir) / f"{name}-{_digest(name, tiny)}", tiny)


def default_cache_dir(output_dir: str | Path) -> Path:
    import os

    return Path(os.environ.get(TINY_CACHE_ENV) or Path(output_dir) / "tiny_models")
