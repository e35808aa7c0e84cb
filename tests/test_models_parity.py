"""Parity of the networks with the reference implementation's fixture outputs (fp32, CPU).

The fixture folder comes from $CHAMP_PARITY_DIR (default tests/fixtures/champ_parity), so the
same tests run unchanged against another fixture set of the same format. Tolerance: max abs
difference <= 1e-5 x the fixture output's max abs value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from champ_core.models import load_champ_models, load_guidance_encoder
from champ_core.models.config import guidance_encoder_config_from_reference, unet_config_from_diffusers

PARITY_DIR = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))
REL_TOL = 1e-5


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = REL_TOL) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= rel * scale, f"max abs diff {err:.3g} > {rel:g} x scale {scale:.3g}"


@pytest.fixture(scope="module")
def unet_io():
    return load_file(PARITY_DIR / "unet" / "io.safetensors")


@pytest.fixture(scope="module")
def models():
    # released naming (the fixture's safetensors carry the .pth key names); architecture inferred from shapes
    return load_champ_models(PARITY_DIR / "unet", guidance_folder=PARITY_DIR / "pipeline")


def test_guidance_encoder_matches_reference():
    folder = PARITY_DIR / "guidance_encoder"
    # the full reference state dict, including the never-run attentions.0-4 and guidance_attention
    encoder = load_guidance_encoder(folder / "weights.safetensors")
    expected_config = guidance_encoder_config_from_reference(json.loads((folder / "config.json").read_text()))
    assert encoder.config == expected_config
    io = load_file(folder / "io.safetensors")
    with torch.no_grad():
        out = encoder(io["input"])
    assert_close(out, io["output"])


def test_inferred_unet_configs_match_fixture_configs(models):
    folder = PARITY_DIR / "unet"
    denoising = unet_config_from_diffusers(
        json.loads((folder / "denoising_unet_config.json").read_text()), motion=True, output_head=True
    )
    reference = unet_config_from_diffusers(
        json.loads((folder / "reference_unet_config.json").read_text()), motion=False, output_head=False
    )
    assert models.denoising_unet.config == denoising
    assert models.reference_unet.config == reference


def test_reference_tokens_match_banks(models, unet_io):
    with torch.no_grad():
        features = models.reference_unet(unet_io["ref_latents"], 0, unet_io["clip_embeds"])
    banks = {k[len("bank."):]: v for k, v in unet_io.items() if k.startswith("bank.")}
    assert set(features.tokens) >= set(banks)
    for name, bank in banks.items():
        assert_close(features.tokens[name], bank[1:2])  # row 1: the real-CLIP pass


def test_bank_pairing_is_by_name(models):
    pairs = json.loads((PARITY_DIR / "unet" / "bank_pairing.json").read_text())
    pairs = next(iter(pairs.values()))
    readers = models.denoising_unet.transformer_blocks()
    writers = models.reference_unet.transformer_blocks()
    for reader, writer in pairs:
        assert reader == writer and reader in readers and writer in writers
    assert set(readers) == set(writers)


def test_unet_prediction_with_and_without_reference_cfg_batch(models, unet_io):
    """Batch [uncond, cond]: the uncond row reads no reference and has a zero CLIP token."""
    clip = unet_io["clip_embeds"]
    with torch.no_grad():
        features = models.reference_unet(unet_io["ref_latents"], 0, clip)
        reference = models.denoising_unet.prepare_reference(features)
        out = models.denoising_unet(
            unet_io["noisy_latents"].repeat(2, 1, 1, 1, 1),
            unet_io["timestep"],
            torch.cat([torch.zeros_like(clip), clip]),
            unet_io["guidance_fea"].repeat(2, 1, 1, 1, 1),
            reference,
            reference_batch_mask=torch.tensor([False, True]),
        )
    assert_close(out[0:1], unet_io["pred_uncond"])
    assert_close(out[1:2], unet_io["pred_cond"])


def test_unet_prediction_single_batch_and_uncond_alone(models, unet_io):
    clip = unet_io["clip_embeds"]
    unet = models.denoising_unet
    with torch.no_grad():
        reference = unet.prepare_reference(models.reference_unet(unet_io["ref_latents"], 0, clip))
        cond = unet(unet_io["noisy_latents"], unet_io["timestep"], clip, unet_io["guidance_fea"], reference)
        uncond = unet(unet_io["noisy_latents"], unet_io["timestep"], torch.zeros_like(clip), unet_io["guidance_fea"])
    assert_close(cond, unet_io["pred_cond_nocfg"])
    assert_close(uncond, unet_io["pred_uncond"])


def test_fp16_reference_rounding_is_the_compatibility_default(models, unet_io):
    clip = unet_io["clip_embeds"]
    unet = models.denoising_unet
    assert unet.round_reference_to_fp16 is True
    with torch.no_grad():
        features = models.reference_unet(unet_io["ref_latents"], 0, clip)
        unet.round_reference_to_fp16 = False
        try:
            reference = unet.prepare_reference(features)
        finally:
            unet.round_reference_to_fp16 = True
        assert reference.rounded_to_fp16 is False
        out = unet(unet_io["noisy_latents"], unet_io["timestep"], clip, unet_io["guidance_fea"], reference)
    assert_close(out, unet_io["pred_cond_bank_fp32"])
    # the rounding changes the numbers measurably (the reason it is reproduced)
    assert (out - unet_io["pred_cond"]).abs().max() > 1e-7


def test_motion_modules_matter(models, unet_io):
    """Zeroing the motion modules' proj_out must move the prediction far beyond the tolerance."""
    unet = models.denoising_unet
    clip = unet_io["clip_embeds"]
    saved = {n: p.clone() for n, p in unet.named_parameters() if ".motion_modules." in n and "proj_out" in n}
    assert saved
    try:
        with torch.no_grad():
            for name, param in unet.named_parameters():
                if name in saved:
                    param.zero_()
            reference = unet.prepare_reference(models.reference_unet(unet_io["ref_latents"], 0, clip))
            out = unet(unet_io["noisy_latents"], unet_io["timestep"], clip, unet_io["guidance_fea"], reference)
    finally:
        with torch.no_grad():
            for name, param in unet.named_parameters():
                if name in saved:
                    param.copy_(saved[name])
    assert (out - unet_io["pred_cond"]).abs().max() > 1e-2


def _strip(path: Path, frames: int, height: int) -> torch.Tensor:
    image = np.array(Image.open(path).convert("RGB"))
    x = torch.from_numpy(image).float() / 255.0  # (frames*height, W, 3)
    return x.reshape(frames, height, image.shape[1], 3).permute(3, 0, 1, 2)[None]  # (1, 3, F, H, W)


def test_summed_guidance_features_match_pipeline(models):
    config = json.loads((PARITY_DIR / "config.json").read_text())["set_definition"]["pipeline"]
    expected = load_file(PARITY_DIR / "pipeline" / "intermediates.safetensors")["guidance_fea"]
    layers = {
        t: _strip(PARITY_DIR / "pipeline" / f"guidance_{t}.png", config["video_length"], config["height"])
        for t in models.guidance_encoders
    }
    assert sorted(layers) == sorted(["depth", "normal", "semantic_map", "dwpose"])
    out = models.encode_guidance(layers)
    assert_close(out, expected)
    # chunked encoding gives the same result (the encoders never mix frames)
    assert_close(models.encode_guidance(layers, frame_chunk=7), expected)
    # strengths scale each encoder's contribution
    half = models.encode_guidance(layers, strengths={t: 0.5 for t in layers})
    assert_close(half, expected * 0.5)


def test_reference_of_batch_two_and_reversed_mask(models, unet_io):
    """The reference's own CFG layout (reference batch [zero-CLIP, CLIP]) and a [cond, uncond] order."""
    clip = unet_io["clip_embeds"]
    both = torch.cat([torch.zeros_like(clip), clip])
    unet = models.denoising_unet
    with torch.no_grad():
        reference = unet.prepare_reference(models.reference_unet(unet_io["ref_latents"].repeat(2, 1, 1, 1), 0, both))
        assert reference.batch_size == 2
        sample = unet_io["noisy_latents"].repeat(2, 1, 1, 1, 1)
        guidance = unet_io["guidance_fea"].repeat(2, 1, 1, 1, 1)
        out = unet(sample, unet_io["timestep"], both, guidance, reference, torch.tensor([False, True]))
        assert_close(out[0:1], unet_io["pred_uncond"])
        assert_close(out[1:2], unet_io["pred_cond"])
        single = unet.prepare_reference(models.reference_unet(unet_io["ref_latents"], 0, clip))
        swapped = unet(sample, unet_io["timestep"], both.flip(0), guidance, single, torch.tensor([True, False]))
    assert_close(swapped[0:1], unet_io["pred_cond"])
    assert_close(swapped[1:2], unet_io["pred_uncond"])
