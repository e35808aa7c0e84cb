"""Parity with the reference pipeline's numbers (fixture `champ_parity`; CHAMP_PARITY_DIR picks the set).

From the fixture's initial latents, every step's guided model output and latents, and the decoded
video, must match within 1e-4 of each tensor's scale, with the set's CFG scale and without CFG
(legacy sum). Every size, frame count, step count, seed and window comes from the fixture.
"""

from __future__ import annotations

import pytest
import torch
from parity_fixture import (
    CFG,
    FIXTURE,
    FRAMES,
    HEIGHT,
    PIPE,
    SEED,
    STEPS,
    WIDTH,
    guidance_strips,
    run_file,
    run_windows,
)
from safetensors.torch import load_file

from champ_core.guidance import GUIDANCE_TYPES
from champ_core.pipeline.inputs import ArrayGuidance
from champ_core.pipeline.sampling import ChampPipeline, SamplingOptions

TOL = 1e-4


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return float((actual.float() - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def tiny():
    from champ_core.models import load_champ_models
    from champ_core.pipeline.codecs import load_diffusers_vae, load_transformers_clip

    models = load_champ_models(FIXTURE / "unet", guidance_folder=PIPE)
    pipe = ChampPipeline(models, load_diffusers_vae(PIPE / "vae"), load_transformers_clip(PIPE / "image_encoder"))
    guidance = ArrayGuidance(guidance_strips())
    yield pipe, guidance, load_file(PIPE / "intermediates.safetensors")


def test_reference_and_guidance_encoding(tiny):
    pipe, guidance, inter = tiny
    ref = pipe.encode_reference(PIPE / "reference.png", WIDTH, HEIGHT)
    assert rel_err(ref.clip_embeds[:, 0], inter["clip_image_embeds"]) < 1e-5
    assert rel_err(ref.latents, inter["ref_image_latents"]) < 1e-5
    features = pipe.encode_guidance_window(guidance, range(FRAMES), WIDTH, HEIGHT, "squash", GUIDANCE_TYPES, None)
    assert rel_err(features, inter["guidance_fea"]) < 1e-5


def test_seeded_noise_is_the_reference_noise(tiny):
    _, _, inter = tiny
    assert torch.equal(ChampPipeline.initial_noise(FRAMES, WIDTH, HEIGHT, seed=SEED), inter["init_noise"])


def _run(tiny, scale, legacy):
    pipe, guidance, inter = tiny
    ref = pipe.encode_reference(PIPE / "reference.png", WIDTH, HEIGHT)
    record = {}

    def on_step(step, t, model_output, latents):
        record[step] = (int(t), model_output.cpu(), latents.cpu())

    options = SamplingOptions(steps=STEPS, guidance_scale=scale, legacy_sum_without_cfg=legacy, seed=SEED)
    latents = pipe.denoise(ref, guidance, WIDTH, HEIGHT, options, latents=inter["init_noise"], on_step=on_step)
    video = torch.cat([frames for _, frames in pipe.decode(latents, chunk_size=7)])
    return record, latents, video


@pytest.mark.parametrize("scale, legacy", [(CFG, False), (1.0, True)], ids=[f"cfg{CFG:g}", "cfg1"])
def test_pipeline_matches_reference_run(tiny, scale, legacy):
    expected = load_file(run_file(scale))
    record, latents, video = _run(tiny, scale, legacy)
    assert [record[i][0] for i in range(STEPS)] == expected["timesteps"].tolist()
    for i in range(STEPS):
        assert rel_err(record[i][1], expected[f"model_output.step{i}"]) < TOL, f"model_output.step{i}"
        assert rel_err(record[i][2], expected[f"latents.step{i}"]) < TOL, f"latents.step{i}"
    assert rel_err(latents.cpu(), expected[f"latents.step{STEPS - 1}"]) < TOL
    assert rel_err(video, expected["video"][0].permute(1, 2, 3, 0)) < TOL


def test_without_cfg_windows_are_averaged_not_summed(tiny):
    # The reference sums overlapping windows when CFG is off; by default this pipeline averages.
    expected = load_file(run_file(1.0))
    record, _, _ = _run(tiny, 1.0, legacy=False)
    windows = run_windows(FRAMES)
    assert len(windows) > 1, f"{FIXTURE}: {FRAMES} frames make one window; nothing overlaps"
    fused = torch.zeros_like(expected["model_output.step0"])
    count = torch.zeros(FRAMES)
    for j, frames in enumerate(windows):
        fused[:, :, frames] += expected[f"unet_out.step0.window{j}"]
        count[frames] += 1
    mean = fused / count.view(1, 1, -1, 1, 1)
    assert rel_err(record[0][1], mean) < TOL
    assert rel_err(record[0][1], expected["model_output.step0"]) > 0.1  # really differs from the sum
