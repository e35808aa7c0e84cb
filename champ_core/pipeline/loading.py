"""Build a `ChampPipeline` from a weights folder.

Layout (the released one; `--weights` in the CLI):

    WEIGHTS/
      champ/            denoising_unet, reference_unet, motion_module, guidance_encoder_<type>
                        (.pth as released, or converted .safetensors)
      image_encoder/    transformers CLIPVisionModelWithProjection (config.json + weights)
      sd-vae-ft-mse/    diffusers AutoencoderKL (config.json + weights); `vae/` is accepted too

The Champ files may also sit directly in WEIGHTS (e.g. the output of `convert-weights`), with
image_encoder/ and sd-vae-ft-mse/ next to them or one level up. Nothing is downloaded: a missing
folder is an error that names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .codecs import load_diffusers_vae, load_transformers_clip
from .sampling import ChampPipeline


class WeightsError(ValueError):
    """A weights folder that does not have the expected layout."""


def _first_dir(root: Path, names: Sequence[str], what: str) -> Path:
    # next to the Champ files, or one level up (a converted folder inside the released layout)
    for base in (root, root.parent):
        for name in names:
            if (base / name).is_dir():
                return base / name
    raise WeightsError(f"{root} has no {what} folder: expected one of {', '.join(n + '/' for n in names)} "
                       f"(see docs/pipeline.md for the weights layout)")


def resolve_weights(root) -> tuple[Path, Path, Path]:
    """(champ folder, image-encoder folder, VAE folder) of a weights folder."""
    root = Path(root)
    if not root.is_dir():
        raise WeightsError(f"weights folder {root} does not exist")
    champ = root / "champ" if (root / "champ").is_dir() else root
    if not any(champ.glob("denoising_unet*")):
        raise WeightsError(f"no denoising_unet.pth / .safetensors in {champ}; put the Champ weights in {root / 'champ'}")
    return champ, _first_dir(root, ["image_encoder"], "image encoder"), _first_dir(root, ["sd-vae-ft-mse", "vae"], "VAE")


def load_pipeline(
    root, dtype: torch.dtype = torch.float32, device="cpu", guidance_types: Sequence[str] | None = None
) -> ChampPipeline:
    """Load every part of the released layout and wrap the VAE and CLIP behind the pipeline's interfaces."""
    from ..models.loading import find_weight_file, load_champ_models

    champ_dir, clip_dir, vae_dir = resolve_weights(root)
    if guidance_types is not None:
        # load only the encoders the guidance needs and the folder has (a missing type is not an error)
        available = [t for t in guidance_types if find_weight_file(champ_dir, f"guidance_encoder_{t}")]
        if not available:
            raise WeightsError(f"{champ_dir} has no guidance encoder for any of {', '.join(guidance_types)}: "
                               "expected guidance_encoder_<type>.pth")
        guidance_types = available
    champ = load_champ_models(champ_dir, dtype=dtype, device=device, guidance_types=guidance_types)
    return ChampPipeline(champ, load_diffusers_vae(vae_dir, dtype, device), load_transformers_clip(clip_dir, dtype, device))
