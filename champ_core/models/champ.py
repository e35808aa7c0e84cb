"""`ChampModel`: the three networks together, and THE one Champ forward.

The reference wraps its networks in a module whose attribute names become the parameter prefixes
of every training checkpoint: `reference_unet.*`, `denoising_unet.*`, `guidance_encoder_<type>.*`.
`ChampModel` keeps those names. Its forward is the one computation that training, the sampler's
window step, the nodes and the CLI all run:

1. reference keys/values: the ReferenceNet at timestep 0 on the reference latents (scaled VAE
   latents) with the CLIP embedding, then every denoiser self-attention layer's key/value
   projection of its tokens (`reference_context`); or a context computed earlier (the sampler
   computes it once per video);
2. guidance features: each guidance type through its own encoder, summed (`encode_guidance`);
   or features computed earlier (the sampler's guidance cache);
3. the denoising UNet on the noisy latents, with the features added after `conv_in` and the
   reference tokens read by every self-attention layer.

Without a reference (training's classifier-free dropout step) the ReferenceNet does not run and
self-attention sees the frame's own tokens only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..guidance import GUIDANCE_TYPES
from .errors import ModelInputError
from .guidance_encoder import GuidanceEncoder
from .unet import DenoisingUNet3D, ReferenceContext, ReferenceUNet

ENCODER_PREFIX = "guidance_encoder_"


class ChampModel(nn.Module):
    """ReferenceNet + denoising UNet (with or without motion modules) + one encoder per guidance type."""

    def __init__(
        self,
        reference_unet: ReferenceUNet,
        denoising_unet: DenoisingUNet3D,
        guidance_encoders: Mapping[str, GuidanceEncoder],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        unknown = [t for t in guidance_encoders if t not in GUIDANCE_TYPES]
        if unknown:
            raise ModelInputError(f"unknown guidance type(s) {unknown}; expected some of {list(GUIDANCE_TYPES)}")
        if not guidance_encoders:
            raise ModelInputError("a Champ model needs at least one guidance encoder")
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        # GUIDANCE_TYPES order: the order the reference sums (and channel-stacks) the encoders in
        self.guidance_types = tuple(t for t in GUIDANCE_TYPES if t in guidance_encoders)
        for guidance_type in self.guidance_types:
            self.add_module(ENCODER_PREFIX + guidance_type, guidance_encoders[guidance_type])
        scales = {t: guidance_encoders[t].downsampling for t in self.guidance_types}
        if len(set(scales.values())) > 1:
            raise ModelInputError(f"the guidance encoders downsample by different factors {scales}; "
                                  "they must all match the latent grid")
        if dtype is not None and dtype != self.dtype:
            raise ModelInputError(f"the networks are {self.dtype}, not {dtype}")
        if device is not None:
            self.to(device)

    # -- placement -------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.denoising_unet.dtype

    @property
    def device(self) -> torch.device:
        return self.denoising_unet.device

    @device.setter
    def device(self, device: torch.device | str) -> None:
        """Setting the device moves every network there (a no-op where they already are)."""
        self.to(device)

    @property
    def latent_channels(self) -> int:
        """Channels of the latents the denoiser works on (4 for the SD1.5 VAE)."""
        return self.denoising_unet.config.in_channels

    @property
    def latent_scale(self) -> int:
        """Pixels per latent along each side (8 for the SD1.5 VAE): the guidance encoders bring
        guidance frames to the latent grid, so their downsampling is the latents' scale."""
        return getattr(self, ENCODER_PREFIX + self.guidance_types[0]).downsampling

    @property
    def guidance_encoders(self) -> dict[str, GuidanceEncoder]:
        return {t: getattr(self, ENCODER_PREFIX + t) for t in self.guidance_types}

    # -- training switches -----------------------------------------------------------------
    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Checkpoint the units of both UNets (works with reference attention; see blocks.py)."""
        self.denoising_unet.set_gradient_checkpointing(enabled)
        self.reference_unet.set_gradient_checkpointing(enabled)

    def set_cross_attention_shortcut(self, enabled: bool) -> None:
        self.denoising_unet.set_cross_attention_shortcut(enabled)
        self.reference_unet.set_cross_attention_shortcut(enabled)

    # -- stage helpers ---------------------------------------------------------------------
    def split_guidance(self, guidance: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3*G, F, H, W) channel-stacked in `guidance_types` order -> {type: (B, 3, F, H, W)}."""
        per_type = [getattr(self, ENCODER_PREFIX + t).config.in_channels for t in self.guidance_types]
        if guidance.ndim != 5 or guidance.shape[1] != sum(per_type):
            raise ModelInputError(
                f"stacked guidance must be (B, {sum(per_type)}, F, H, W) for {', '.join(self.guidance_types)}, "
                f"got {tuple(guidance.shape)}"
            )
        return dict(zip(self.guidance_types, torch.split(guidance, per_type, dim=1)))

    def encode_guidance(
        self,
        layers: Mapping[str, torch.Tensor] | torch.Tensor,
        strengths: Mapping[str, float] | None = None,
        frame_chunk: int | None = None,
    ) -> torch.Tensor:
        """Sum over the encoders (GUIDANCE_TYPES order) of strength * encoder(layer) -> (B, C, F, h, w).

        layers: {type: (B, 3, F, H, W) in [0, 1]} (types without a layer are skipped; a layer without
        an encoder is an error) or one channel-stacked tensor (B, 3*G, F, H, W) holding every type.
        `frame_chunk` encodes that many frames at a time (the encoders never mix frames: same result).
        """
        if isinstance(layers, torch.Tensor):
            layers = self.split_guidance(layers)
        strengths = dict(strengths or {})
        unknown = sorted((set(layers) | set(strengths)) - set(GUIDANCE_TYPES))
        if unknown:
            raise ModelInputError(f"unknown guidance type(s) {unknown}; expected some of {list(GUIDANCE_TYPES)}")
        without_encoder = sorted(set(layers) - set(self.guidance_types))
        if without_encoder:
            raise ModelInputError(
                f"no guidance encoder loaded for {without_encoder}; loaded: {sorted(self.guidance_types)}. "
                "Put guidance_encoder_<type>.pth into the weights folder or leave that layer out."
            )
        used = [t for t in self.guidance_types if t in layers]
        if not used:
            raise ModelInputError("no guidance layers given")
        shapes = {tuple(layers[t].shape) for t in used}
        if len(shapes) != 1:
            raise ModelInputError(f"guidance layers differ in shape: { {t: tuple(layers[t].shape) for t in used} }")
        outputs = []
        for guidance_type in used:
            x = layers[guidance_type].to(device=self.device, dtype=self.dtype)
            encoder = getattr(self, ENCODER_PREFIX + guidance_type)
            if frame_chunk:
                out = torch.cat([encoder(x[:, :, i:i + frame_chunk]) for i in range(0, x.shape[2], frame_chunk)], dim=2)
            else:
                out = encoder(x)
            strength = float(strengths.get(guidance_type, 1.0))
            outputs.append(out if strength == 1.0 else out * strength)
        return torch.stack(outputs).sum(0)  # the reference's summation (same bits)

    def reference_context(self, reference_latents: torch.Tensor, clip_embeds: torch.Tensor) -> ReferenceContext:
        """ReferenceNet at timestep 0 on (B, 4, h, w) scaled latents, then the denoiser's K/V per layer."""
        batch = reference_latents.shape[0]
        timestep = torch.zeros(batch, dtype=torch.long, device=self.device)
        features = self.reference_unet(
            reference_latents.to(self.device, self.dtype), timestep, clip_embeds.to(self.device, self.dtype)
        )
        return self.denoising_unet.prepare_reference(features)

    # -- THE forward -----------------------------------------------------------------------
    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps,
        clip_embeds: torch.Tensor,
        *,
        guidance: Mapping[str, torch.Tensor] | torch.Tensor | None = None,
        guidance_features: torch.Tensor | None = None,
        reference_latents: torch.Tensor | None = None,
        reference: ReferenceContext | None = None,
        reference_mask: torch.Tensor | None = None,
        strengths: Mapping[str, float] | None = None,
    ) -> torch.Tensor:
        """Denoiser prediction (B, 4, F, h, w) for noisy latents (B, 4, F, h, w).

        Guidance: `guidance` (pixels, see `encode_guidance`) or precomputed `guidance_features`.
        Reference: `reference_latents` (B or 1, 4, h, w) or a precomputed `reference`; neither means
        no reference tokens (the reference's unconditional training step). `reference_mask` (B,)
        bool: rows with False attend without the reference (classifier-free guidance's uncond half).
        """
        if (guidance is None) == (guidance_features is None):
            raise ModelInputError("pass exactly one of guidance (pixels) and guidance_features")
        if reference_latents is not None and reference is not None:
            raise ModelInputError("pass at most one of reference_latents and reference")
        if guidance_features is None:
            guidance_features = self.encode_guidance(guidance, strengths)
        if reference_latents is not None:
            reference = self.reference_context(reference_latents, clip_embeds)
        return self.denoising_unet(noisy_latents, timesteps, clip_embeds, guidance_features, reference, reference_mask)
