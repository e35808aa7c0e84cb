"""The optional frame-to-frame loss term of stage 2 (`temporal_loss_weight`): off it is the
reference's loss bit for bit; on it adds exactly weight x MSE of the error's frame difference,
under the same min-SNR weight; the config accepts it for stage 2 only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from champ_core.train import objective
from champ_core.train.config import ConfigError, apply_overrides, config_from_dict, validate


class ScaledInput(nn.Module):
    """A denoiser stand-in with the ChampModel call signature: 0.5 x the noisy latents. The loss
    arithmetic is what is tested; the real networks' path is covered by the training-run tests."""

    def forward(self, noisy, timesteps, clip_embeds, *, guidance, reference_latents):
        return 0.5 * noisy


def _inputs(frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(3, 4, frames, 4, 4, generator=g)
    noise = torch.randn(3, 4, frames, 4, 4, generator=g)
    timesteps = torch.tensor([10, 500, 990])
    scheduler = objective.make_training_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"})
    return scheduler.alphas_cumprod, latents, noise, timesteps


def _loss(weight: float, frames: int = 5):
    acp, latents, noise, timesteps = _inputs(frames)
    return objective.training_loss(ScaledInput(), acp, latents, noise, timesteps, torch.zeros(3, 1, 8),
                                   torch.zeros(3, 12, frames, 32, 32), None, uncond=True, snr_gamma=5.0,
                                   temporal_weight=weight)


def test_difference_mse_of_constant_one_frame_and_single_frame_errors():
    target = torch.randn(2, 4, 6, 3, 3)
    offset = torch.randn(2, 4, 1, 3, 3)
    assert torch.allclose(objective.temporal_difference_mse(target + offset, target), torch.zeros(2), atol=1e-6)
    error = torch.zeros(2, 4, 6, 3, 3)
    error[:, :, 3] = 1.0  # one frame off by 1: two unit steps out of 5 frame pairs
    assert torch.allclose(objective.temporal_difference_mse(target + error, target), torch.full((2,), 2 / 5))
    single = torch.randn(2, 4, 1, 3, 3)
    assert torch.equal(objective.temporal_difference_mse(single, torch.zeros_like(single)), torch.zeros(2))


def test_weight_zero_is_the_reference_loss_and_a_weight_adds_the_term_under_min_snr():
    plain = _loss(0.0)
    expected, _, _ = objective.weighted_mse(plain.model_pred, plain.target, plain.weights)
    assert plain.temporal_mse_per_sample is None
    assert torch.equal(plain.loss, expected)
    on = _loss(1.5)
    difference = objective.temporal_difference_mse(on.model_pred, on.target)
    assert torch.equal(on.temporal_mse_per_sample, difference)
    assert (difference > 0).all()
    per_sample = (plain.mse_per_sample + 1.5 * difference) * plain.weights
    assert torch.allclose(on.loss, per_sample.mean(), rtol=1e-6)
    assert on.loss > plain.loss
    assert torch.equal(on.mse_per_sample, plain.mse_per_sample)  # the plain part is unchanged


def test_config_takes_the_weight_for_stage_2_only():
    config = config_from_dict("stage2", apply_overrides({}, ["temporal_loss_weight=2"]))
    assert config.temporal_loss_weight == 2.0
    assert config_from_dict("stage2", {}).temporal_loss_weight == 0.0  # default: the reference's loss
    with pytest.raises(ConfigError, match="temporal_loss_weight.*only applies to stage 2"):
        validate(config_from_dict("stage1", apply_overrides({}, ["temporal_loss_weight=1"])))
    with pytest.raises(ConfigError, match="temporal_loss_weight.*must be >= 0"):
        validate(config_from_dict("stage2", apply_overrides({}, ["temporal_loss_weight=-1"])))
