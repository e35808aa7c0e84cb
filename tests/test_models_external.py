"""CLIP image encoder and VAE loaders, and CLIP preprocessing (no torchvision, no transformers processor)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from champ_core.models import CheckpointError, ModelInputError, clip_preprocess, load_image_encoder, load_vae
from champ_core.models.external import CLIP_MEAN, CLIP_STD, pil_bicubic_resize

PARITY_DIR = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))
PIPELINE = PARITY_DIR / "pipeline"


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0


def normalise(image_224: np.ndarray) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (to_tensor(image_224) - mean) / std


def test_clip_preprocess_matches_the_reference_pil_path():
    reference = np.array(Image.open(PIPELINE / "reference.png").convert("RGB"))
    expected = np.array(Image.open(PIPELINE / "clip_input_224.png").convert("RGB"))  # PIL resize((224, 224))
    out = clip_preprocess(to_tensor(reference))
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    assert torch.equal(out, normalise(expected))


@pytest.mark.parametrize("size", [(300, 410), (97, 61), (224, 224)])
def test_pil_bicubic_resize_is_exact(size):
    rng = np.random.default_rng(sum(size))
    image = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
    image[: size[0] // 2] //= 3  # some structure, not only noise
    expected = np.array(Image.fromarray(image).resize((224, 224), Image.BICUBIC))
    out = pil_bicubic_resize(torch.from_numpy(image).permute(2, 0, 1)[None], (224, 224))
    assert torch.equal(out[0].permute(1, 2, 0), torch.from_numpy(expected))


def test_clip_preprocess_rejects_bad_input():
    with pytest.raises(ModelInputError, match="RGB"):
        clip_preprocess(torch.zeros(1, 4, 32, 32))


def test_image_encoder_gives_the_reference_embedding():
    encoder = load_image_encoder(PIPELINE / "image_encoder")
    reference = np.array(Image.open(PIPELINE / "reference.png").convert("RGB"))
    with torch.no_grad():
        embeds = encoder(pixel_values=clip_preprocess(to_tensor(reference))).image_embeds
    expected = load_file(PIPELINE / "intermediates.safetensors")["clip_image_embeds"]
    assert (embeds - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_vae_gives_the_reference_latents():
    vae = load_vae(PIPELINE / "vae", dtype="fp32")
    inter = load_file(PIPELINE / "intermediates.safetensors")
    with torch.no_grad():
        latents = vae.encode(inter["ref_image_tensor"]).latent_dist.mean * 0.18215
    expected = inter["ref_image_latents"]
    assert (latents - expected).abs().max() <= 1e-5 * expected.abs().max()
    half = load_vae(PIPELINE / "vae", dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="CLIP image encoder not found in .*image_encoder"):
        load_image_encoder(tmp_path / "image_encoder")
    with pytest.raises(CheckpointError, match="VAE not found in .*sd-vae-ft-mse"):
        load_vae(tmp_path / "sd-vae-ft-mse")
