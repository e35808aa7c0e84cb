"""The two pretrained helpers the pipeline needs, behind small interfaces.

- `LatentCodec` (the VAE): `encode(images)` takes (B, 3, H, W) float images in **[0, 1]** and
  returns the posterior **mean**, *unscaled* (B, 4, H/8, W/8); `decode(latents)` takes unscaled
  latents and returns images in [0, 1] (clamped), float32 on the CPU. `scaling_factor` (0.18215
  for SD1.5's VAE) converts unscaled latents to the denoiser's latent space (multiply) and back.
  Unscaled latents are also what ComfyUI keeps in `LATENT["samples"]`.
- `ImageEmbedder` (the CLIP image encoder): `embed(images)` takes (B, 3, H, W) in [0, 1] and
  returns the projected image embedding as one token, (B, 1, D).

`DiffusersVAE` and `TransformersCLIP` adapt the modules of the released layout
(`sd-vae-ft-mse/` as a diffusers `AutoencoderKL`, `image_encoder/` as a transformers
`CLIPVisionModelWithProjection`). ComfyUI's `VAE` and `CLIP_VISION` objects get their own
adapters in the node pack.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

# OpenAI CLIP normalisation (the default CLIPImageProcessor's image_mean / image_std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224
SD_VAE_SCALING_FACTOR = 0.18215
SD_VAE_DOWNSAMPLING = 8


@runtime_checkable
class LatentCodec(Protocol):
    scaling_factor: float

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ImageEmbedder(Protocol):
    def embed(self, images: torch.Tensor) -> torch.Tensor: ...


def _module_placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(module.parameters())
    return parameter.device, parameter.dtype


class DiffusersVAE:
    """`LatentCodec` over a diffusers `AutoencoderKL` (latent mean, [0, 1] images)."""

    def __init__(self, vae: torch.nn.Module, scaling_factor: float | None = None) -> None:
        self.vae = vae
        # The reference multiplies by a hard-coded 0.18215; SD1.5's VAE config holds the same value.
        config = getattr(vae, "config", None)
        config_factor = getattr(config, "scaling_factor", None)
        self.scaling_factor = float(scaling_factor or config_factor or SD_VAE_SCALING_FACTOR)
        # Pixels per latent: every encoder block but the last halves the size (SD1.5's VAE: 4 blocks, 8).
        blocks = getattr(config, "block_out_channels", None)
        self.downsampling = 2 ** (len(blocks) - 1) if blocks else SD_VAE_DOWNSAMPLING

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        device, dtype = _module_placement(self.vae)
        x = images.to(device=device, dtype=torch.float32) * 2.0 - 1.0
        return self.vae.encode(x.to(dtype)).latent_dist.mean.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        device, dtype = _module_placement(self.vae)
        x = self.vae.decode(latents.to(device=device, dtype=dtype)).sample
        return (x.float() / 2 + 0.5).clamp(0, 1).cpu()


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> CLIP pixel values at 224x224 (squashed, as the reference does)."""
    if images.shape[-2:] != (CLIP_SIZE, CLIP_SIZE):
        images = F.interpolate(images, size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic", antialias=True,
                               align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


class TransformersCLIP:
    """`ImageEmbedder` over a transformers `CLIPVisionModelWithProjection` (`image_embeds`, one token)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        device, dtype = _module_placement(self.model)
        pixels = clip_normalize(images.to(device=device, dtype=torch.float32))
        return self.model(pixel_values=pixels.to(dtype)).image_embeds.unsqueeze(1)


def load_diffusers_vae(folder, dtype: torch.dtype = torch.float32, device="cpu") -> DiffusersVAE:
    """A diffusers `AutoencoderKL` folder (config.json + weights), offline."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
    return DiffusersVAE(vae.to(device).eval())


def load_transformers_clip(folder, dtype: torch.dtype = torch.float32, device="cpu") -> TransformersCLIP:
    """A transformers `CLIPVisionModelWithProjection` folder, offline."""
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    return TransformersCLIP(model.to(device).eval())
