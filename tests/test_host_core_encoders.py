"""ComfyUI's own CLIP_VISION and VAE (core loaders) against the pack's own loaders, in a real
ComfyUI 0.3.75: same CLIP image embedding (cosine >= 0.999, crop "none") and the same VAE latents.

Full-size architectures (CLIP ViT-L/14 with a 768-d projection, the SD VAE) with seeded random
weights, written once as the released folders (image_encoder/, sd-vae-ft-mse/) and linked into
models/clip_vision and models/vae for the core loaders; a small 64 x 64 reference keeps it quick.
"""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = [pytest.mark.host, pytest.mark.slow]

VITL = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
        "patch_size": 14, "image_size": 224, "projection_dim": 768, "hidden_act": "quick_gelu"}
SD_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
          "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}


@pytest.fixture(scope="module")
def full_size_encoders(comfy_host):
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    models = comfy_host.base / "models"
    clip_dir = models / "champ" / "full" / "image_encoder"
    vae_dir = models / "champ" / "full" / "sd-vae-ft-mse"
    if not clip_dir.exists():
        torch.manual_seed(0)
        CLIPVisionModelWithProjection(CLIPVisionConfig(**VITL)).save_pretrained(clip_dir, safe_serialization=True)
        torch.manual_seed(1)
        AutoencoderKL(**SD_VAE).save_pretrained(vae_dir, safe_serialization=True)
        os.symlink(clip_dir / "model.safetensors", models / "clip_vision" / "champ_random_vitl.safetensors")
        os.symlink(vae_dir / "diffusion_pytorch_model.safetensors", models / "vae" / "champ_random_sd_vae.safetensors")
    return "full/image_encoder", "full/sd-vae-ft-mse"


def test_core_clip_vision_and_vae_match_the_pack_loaders(comfy_host, full_size_encoders):
    clip_choice, vae_choice = full_size_encoders
    size = 64
    prompt = {
        "ref": {"class_type": "LoadImage", "inputs": {"image": "champ_reference.png"}},
        "pack": {"class_type": "ChampImageEncoderVAELoader",
                 "inputs": {"image_encoder": clip_choice, "vae": vae_choice, "dtype": "fp32"}},
        "clip_vision": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "champ_random_vitl.safetensors"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "champ_random_sd_vae.safetensors"}},
        "core": {"class_type": "ChampUseCoreEncoders", "inputs": {"clip_vision": ["clip_vision", 0], "vae": ["vae", 0]}},
        "ref_pack": {"class_type": "ChampEncodeReference",
                     "inputs": {"image": ["ref", 0], "image_encoder": ["pack", 0], "vae": ["pack", 1], "width": size,
                                "height": size, "fit": "squash"}},
        "ref_core": {"class_type": "ChampEncodeReference",
                     "inputs": {"image": ["ref", 0], "image_encoder": ["core", 0], "vae": ["core", 1], "width": size,
                                "height": size, "fit": "squash"}},
        # A reference node is no output: the prompt needs one output node to be valid; the two
        # encodings are executed as extra outputs.
        "dummy": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["dummy", 0]}},
    }
    result = comfy_host.run(prompt, outputs=["preview", "ref_pack", "ref_core"])
    assert result.success, result.error()
    pack = comfy_host.cached_output("ref_pack")[0][0]["encoding"]
    core = comfy_host.cached_output("ref_core")[0][0]["encoding"]
    assert pack.clip_embeds.shape == core.clip_embeds.shape == (1, 1, 768)
    cosine = torch.nn.functional.cosine_similarity(pack.clip_embeds.flatten(), core.clip_embeds.flatten(), dim=0)
    assert cosine >= 0.999, float(cosine)
    assert pack.latents.shape == core.latents.shape == (1, 4, size // 8, size // 8)
    torch.testing.assert_close(core.latents, pack.latents, rtol=1e-3, atol=2e-3)
    # Not trivially equal: the embedding is not constant and the latents carry the image.
    assert pack.clip_embeds.std() > 0 and pack.latents.std() > 1e-3


def test_sampler_latent_decodes_with_core_vae_decode(comfy_host, full_size_encoders):
    """The sampler's LATENT follows ComfyUI's convention: core VAE Decode gives the same frames as
    Champ Decode with the same VAE weights."""
    from test_host_generation import FRAMES, H, W, generation_prompt

    clip_choice, vae_choice = full_size_encoders
    prompt = generation_prompt(prefix="champ_core_decode")
    prompt.update({
        "full": {"class_type": "ChampImageEncoderVAELoader",
                 "inputs": {"image_encoder": clip_choice, "vae": vae_choice, "dtype": "fp32"}},
        "core_vae": {"class_type": "VAELoader", "inputs": {"vae_name": "champ_random_sd_vae.safetensors"}},
        "core_decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["core_vae", 0]}},
        "pack_decode": {"class_type": "ChampDecode", "inputs": {"latent": ["sampler", 0], "vae": ["full", 1],
                                                                "frames_per_chunk": 4}},
        "frame_core": {"class_type": "PreviewImage", "inputs": {"images": ["core_decode", 0]}},
        "frame_pack": {"class_type": "PreviewImage", "inputs": {"images": ["pack_decode", 0]}},
    })
    result = comfy_host.run(prompt, outputs=["frame_core", "frame_pack"])
    assert result.success, result.error()
    core = comfy_host.cached_output("core_decode")[0][0]
    pack = comfy_host.cached_output("pack_decode")[0][0]
    assert core.shape == pack.shape == (FRAMES, H, W, 3)
    torch.testing.assert_close(core.float(), pack.float(), rtol=0, atol=5e-3)
