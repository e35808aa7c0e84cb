"""The sampler takes its latent grid (channels and pixels per latent) from the networks, not from
SD1.5's 4 x 1/8: a model trained over a 4x VAE with 8 latent channels samples end to end, and a VAE
of another grid than the networks' is named in one line instead of failing inside the UNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from champ_core.models import ChampConfig, GuidanceEncoderConfig, UNetConfig
from champ_core.pipeline.codecs import DiffusersVAE, TransformersCLIP
from champ_core.pipeline.inputs import ArrayGuidance, InputError
from champ_core.pipeline.sampling import ChampPipeline, SamplingOptions
from champ_core.pipeline.windows import WindowOptions
from champ_core.train.starting import build_champ_model_for_stage

TYPES = ["depth", "dwpose"]
CLIP_DIM = 16


def champ_networks(latent_channels: int, encoder_widths: tuple[int, ...]):
    unet = UNetConfig(in_channels=latent_channels, out_channels=latent_channels, block_out_channels=(32, 64),
                      down_cross_attention=(True, False), up_cross_attention=(False, True), layers_per_block=1,
                      cross_attention_dim=CLIP_DIM, norm_num_groups=16)
    config = ChampConfig(denoising_unet=unet,
                         reference_unet=UNetConfig.from_dict({**unet.to_dict(), "out_channels": None}),
                         guidance_encoder=GuidanceEncoderConfig(embedding_channels=32, block_out_channels=encoder_widths,
                                                                norm_num_groups=8))
    return build_champ_model_for_stage(1, config, guidance_types=TYPES, seed=0).eval()


def vae(latent_channels: int, blocks: int) -> DiffusersVAE:
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    model = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                          down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks,
                          block_out_channels=[8] * blocks, layers_per_block=1, norm_num_groups=4, sample_size=32)
    return DiffusersVAE(model.eval(), scaling_factor=0.5)


def image_encoder() -> TransformersCLIP:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(2)
    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=224, patch_size=32, projection_dim=CLIP_DIM)
    return TransformersCLIP(CLIPVisionModelWithProjection(config).eval())


def inputs(frames: int, size: int):
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    layers = {t: rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for t in TYPES}
    return reference, ArrayGuidance(layers)


OPTIONS = SamplingOptions(steps=2, guidance_scale=2.0, windows=WindowOptions(length=3, overlap=0))


def test_a_4x_grid_with_8_latent_channels_samples_end_to_end():
    models = champ_networks(8, (8, 16, 32))  # two stride-2 convs: 4 pixels per latent
    assert (models.latent_channels, models.latent_scale) == (8, 4)
    pipe = ChampPipeline(models, vae(8, 3), image_encoder())
    size = 36  # a multiple of the grid's 4 but not of SD1.5's 8
    reference, guidance = inputs(3, size)
    result = pipe.animate(reference, guidance, size, size, OPTIONS)
    assert tuple(result.latents.shape) == (3, 8, 9, 9)  # (frames, channels, h, w) unscaled
    assert tuple(result.frames.shape) == (3, size, size, 3)
    assert torch.isfinite(result.frames).all()
    noise = pipe.model_noise(3, size, size, seed=OPTIONS.seed)
    assert tuple(noise.shape) == (1, 8, 3, 9, 9)
    with pytest.raises(InputError, match="multiple of 4"):
        pipe.check_size(34, 36)


def test_sd15_grid_is_unchanged():
    models = champ_networks(4, (8, 16, 16, 32))
    assert (models.latent_channels, models.latent_scale) == (4, 8)
    pipe = ChampPipeline(models, vae(4, 4), image_encoder())
    assert torch.equal(pipe.model_noise(2, 32, 16, seed=5), ChampPipeline.initial_noise(2, 32, 16, seed=5))


def test_a_vae_of_another_grid_is_named_in_one_line():
    pipe = ChampPipeline(champ_networks(8, (8, 16, 32)), vae(4, 4), image_encoder())  # SD1.5-like VAE
    reference, guidance = inputs(3, 32)
    with pytest.raises(InputError, match=r"reference latents of shape \(4, 4, 4\).*\(8, 8, 8\)") as error:
        pipe.animate(reference, guidance, 32, 32, OPTIONS)
    assert "\n" not in str(error.value)


def test_guidance_encoders_of_different_scales_are_refused():
    from champ_core.models import ChampModel, GuidanceEncoder
    from champ_core.models.errors import ModelInputError

    models = champ_networks(4, (8, 16, 16, 32))
    encoders = {"depth": GuidanceEncoder(GuidanceEncoderConfig(embedding_channels=32, block_out_channels=(8, 16, 32),
                                                               norm_num_groups=8)),
                "dwpose": models.guidance_encoders["dwpose"]}
    with pytest.raises(ModelInputError, match="different factors"):
        ChampModel(models.reference_unet, models.denoising_unet, encoders)
