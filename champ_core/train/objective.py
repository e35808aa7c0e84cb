"""The reference's training objective (both stages), as small pure functions and `training_loss`.

What the reference's training scripts do per step, in their order of random draws (the trainer
draws them; these functions compute with them):
1. target latents: VAE posterior *sample* (mean + std * eps) x 0.18215 (stage 1 adds a frame axis;
   stage 2 encodes all B*F frames b-major and rearranges to (B, 4, F, h, w));
2. noise = randn_like(latents) + noise_offset * randn(B, 4, 1, 1, 1) (one offset per sample and channel);
3. timesteps uniform integers in [0, num_train_timesteps), one per sample;
4. ONE classifier-free dropout coin for the whole batch (probability `uncond_ratio`);
5. reference latents: VAE posterior sample x 0.18215 (drawn even when the coin says uncond);
6. CLIP embedding of the CLIP pixels, which are ZEROED (and still encoded) on an uncond step;
   the ReferenceNet is then skipped (no reference tokens); guidance is never dropped;
7. noisy latents (`add_noise`) and the v-prediction target (`get_velocity`) from the training
   scheduler: DDIM with the yaml kwargs, `beta_schedule` forced to "scaled_linear" and zero-SNR
   rescaling, trailing spacing and v-prediction forced on;
8. per-sample MSE over (C, F, h, w), times the min-SNR weight min(snr + 1, gamma) / (snr + 1)
   (the +1 is the v-prediction convention, applied before the min), mean over the batch.

One project option, off by default (so the reference's numbers stay exact): `temporal_weight`
adds, per sample, that many times the MSE of the prediction error's frame-to-frame difference
(`temporal_difference_mse`) before the min-SNR weight. The optimum is unchanged (both terms are
smallest at the exact prediction); what changes is where a short stage 2 spends its steps: on the
part of the error that differs from frame to frame, which is what the sampler turns into flicker.

Inference's unconditional branch uses a literal zero CLIP embedding instead of CLIP(zero pixels):
a train/inference mismatch of the reference that is kept here (docs/training.md).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

VAE_SCALE = 0.18215  # the reference hard-codes it for SD1.5's VAE

# What the reference forces on top of the yaml's `noise_scheduler_kwargs`
ZERO_SNR_OVERRIDES: dict[str, Any] = {
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
}
TRAIN_BETA_SCHEDULE = "scaled_linear"


def training_scheduler_kwargs(yaml_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The training scheduler's kwargs: the yaml's, zero-SNR on, and beta_schedule "scaled_linear"."""
    return {**dict(yaml_kwargs), **ZERO_SNR_OVERRIDES, "beta_schedule": TRAIN_BETA_SCHEDULE}


def validation_scheduler_kwargs(yaml_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The validation scheduler's kwargs: the yaml's beta schedule as written (linear in stage2.yaml)."""
    return {**dict(yaml_kwargs), **ZERO_SNR_OVERRIDES}


def make_training_scheduler(yaml_kwargs: Mapping[str, Any]):
    """diffusers `DDIMScheduler` built as the reference's training scripts build it."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**training_scheduler_kwargs(yaml_kwargs))


# ----------------------------------------------------------------------------------------------
# Pure pieces


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def _coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor):
    acp = alphas_cumprod.to(device=like.device)[timesteps.to(like.device)].to(like.dtype)
    return _per_sample(acp ** 0.5, like), _per_sample((1 - acp) ** 0.5, like)


def add_noise(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor):
    """sqrt(acp[t]) x0 + sqrt(1 - acp[t]) noise (the scheduler's float32 table, cast to x0's dtype)."""
    a, s = _coefficients(alphas_cumprod, timesteps, x0)
    return a * x0 + s * noise


def velocity(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor):
    """The v-prediction target: sqrt(acp[t]) noise - sqrt(1 - acp[t]) x0."""
    a, s = _coefficients(alphas_cumprod, timesteps, x0)
    return a * noise - s * x0


def compute_snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """(sqrt(acp) / sqrt(1 - acp))^2 per sample, float32."""
    acp = alphas_cumprod.to(timesteps.device)
    alpha = (acp ** 0.5)[timesteps].float()
    sigma = ((1.0 - acp) ** 0.5)[timesteps].float()
    return (alpha / sigma) ** 2


def min_snr_weights(snr: torch.Tensor, gamma: float, v_prediction: bool = True) -> torch.Tensor:
    """min(snr', gamma) / snr' with snr' = snr + 1 for v-prediction (the reference's convention)."""
    snr = snr + 1 if v_prediction else snr
    return torch.stack([snr, gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0] / snr


def noise_with_offset(base: torch.Tensor, offset_draw: torch.Tensor | None, noise_offset: float) -> torch.Tensor:
    """base + noise_offset * offset_draw, the draw being (B, C, 1, 1, 1) (one value per sample and channel)."""
    if offset_draw is None or noise_offset <= 0:
        return base
    return base + noise_offset * offset_draw.to(base)


def draw_uncond(uncond_ratio: float, rng: random.Random | None = None) -> bool:
    """The reference's one classifier-free-dropout coin per batch: random() < uncond_ratio."""
    return (rng or random).random() < uncond_ratio


def clip_input_for_step(clip_pixels: torch.Tensor, uncond: bool) -> torch.Tensor:
    """The CLIP pixels of a step: zeros on an uncond step (still encoded: CLIP(0), not a zero embedding)."""
    return torch.zeros_like(clip_pixels) if uncond else clip_pixels


def sample_latents(mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor, scale: float = VAE_SCALE) -> torch.Tensor:
    """(mean + std * eps) * scale: a VAE posterior sample in the denoiser's latent space."""
    return (mean + std * eps.to(mean)) * scale


def vae_posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of a diffusers AutoencoderKL posterior; pixels (N, 3, H, W) in [-1, 1]."""
    dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return dist.mean, dist.std


def clip_embeddings(image_encoder, clip_pixels: torch.Tensor) -> torch.Tensor:
    """transformers CLIPVisionModelWithProjection on processed pixels -> image_embeds as (B, 1, D)."""
    parameter = next(image_encoder.parameters())
    return image_encoder(clip_pixels.to(device=parameter.device, dtype=parameter.dtype)).image_embeds.unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# The loss


def temporal_difference_mse(model_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE of the error's difference between consecutive frames, (B,); zeros when F == 1.

    model_pred/target: (B, C, F, h, w). A frame-constant error costs nothing here; an error that
    is independent from frame to frame costs twice its plain MSE.
    """
    error = model_pred.float() - target.float()
    if error.shape[2] < 2:
        return error.new_zeros(error.shape[0])
    step = error[:, :, 1:] - error[:, :, :-1]
    return step.pow(2).mean(dim=(1, 2, 3, 4))


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar
    model_pred: torch.Tensor
    target: torch.Tensor
    noisy_latents: torch.Tensor
    snr: torch.Tensor  # compute_snr, (B,)
    weights: torch.Tensor  # min-SNR weights (B,) (ones without snr_gamma)
    mse_per_sample: torch.Tensor  # (B,)
    weighted_mse_per_sample: torch.Tensor  # (B,)
    temporal_mse_per_sample: torch.Tensor | None = None  # (B,), when the temporal term is on


def weighted_mse(model_pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor):
    """(loss, per-sample MSE, weighted per-sample MSE): per-sample mean, times weight, batch mean."""
    mse = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    per_sample = mse.mean(dim=list(range(1, mse.ndim)))
    weighted = per_sample * weights
    return weighted.mean(), per_sample, weighted


def training_loss(
    model,
    alphas_cumprod: torch.Tensor,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    clip_embeds: torch.Tensor,
    guidance: torch.Tensor,
    reference_latents: torch.Tensor | None,
    *,
    uncond: bool,
    snr_gamma: float | None = 5.0,
    temporal_weight: float = 0.0,
) -> LossOutput:
    """The reference's loss for one batch, from latents, noise and timesteps.

    model: a `ChampModel`. latents/noise (B, 4, F, h, w); guidance (B, 3*G, F, H, W) in [0, 1],
    channel-stacked in the model's guidance order; reference_latents (B, 4, h, w) (ignored when
    `uncond`: the ReferenceNet is skipped); clip_embeds (B, 1, D) (of zeroed pixels when uncond).
    temporal_weight > 0 adds the frame-difference term (module docstring); 0 is the reference's loss.
    """
    noisy = add_noise(alphas_cumprod, latents, noise, timesteps)
    target = velocity(alphas_cumprod, latents, noise, timesteps)
    model_pred = model(
        noisy, timesteps, clip_embeds,
        guidance=guidance,
        reference_latents=None if uncond else reference_latents,
    )
    snr = compute_snr(alphas_cumprod, timesteps)
    if snr_gamma:
        weights = min_snr_weights(snr, snr_gamma, v_prediction=True)
    else:
        weights = torch.ones_like(snr)
    weights = weights.to(model_pred.device)
    _, per_sample, weighted = weighted_mse(model_pred, target, weights)
    temporal = None
    if temporal_weight > 0:
        temporal = temporal_difference_mse(model_pred, target)
        weighted = weighted + temporal_weight * temporal * weights
    return LossOutput(weighted.mean(), model_pred, target, noisy, snr, weights, per_sample, weighted, temporal)
