"""Generation through the pack's nodes in a real ComfyUI 0.3.75 (in-process), tiny weights.

The sampler's LATENT must equal champ_core's own pipeline for the same seed and weights; an
interrupt during sampling stops within one window and the next prompt succeeds.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from comfy_host import TINY_SIZE, tiny_guidance_frames
from PIL import Image
from safetensors.torch import load_file

pytestmark = pytest.mark.host

W, H = TINY_SIZE
FRAMES = 8


def generation_prompt(seed=7, steps=2, cfg=3.5, length=4, overlap=1, prefix="champ_tiny"):
    return {
        "ref": {"class_type": "LoadImage", "inputs": {"image": "champ_reference.png"}},
        "enc": {"class_type": "ChampImageEncoderVAELoader",
                "inputs": {"image_encoder": "image_encoder", "vae": "sd-vae-ft-mse", "dtype": "fp32"}},
        "model": {"class_type": "ChampModelLoader", "inputs": {"weights": "tiny", "dtype": "fp32"}},
        "reference": {"class_type": "ChampEncodeReference",
                      "inputs": {"image": ["ref", 0], "image_encoder": ["enc", 0], "vae": ["enc", 1], "width": W,
                                 "height": H, "fit": "squash"}},
        "folder": {"class_type": "ChampLoadGuidanceFolder",
                   "inputs": {"folder": "champ_tiny_motion", "start_frame": 0, "frame_count": FRAMES}},
        "layers": {"class_type": "ChampGuidanceLayers",
                   "inputs": {"depth": ["folder", 0], "normal": ["folder", 1], "semantic_map": ["folder", 2],
                              "dwpose": ["folder", 3], "depth_strength": 1.0, "normal_strength": 1.0,
                              "semantic_map_strength": 1.0, "dwpose_strength": 1.0}},
        "context": {"class_type": "ChampContextOptions",
                    "inputs": {"length": length, "overlap": overlap, "stride": 1, "schedule": "loop",
                               "fusion": "flat", "shift_per_step": False}},
        "sampler": {"class_type": "ChampSampler",
                    "inputs": {"champ_model": ["model", 0], "reference": ["reference", 0], "guidance": ["layers", 0],
                               "seed": seed, "steps": steps, "cfg": cfg, "solver": "ddim",
                               "beta_schedule": "linear", "context_options": ["context", 0]}},
        "save_latent": {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0],
                                                               "filename_prefix": f"latents/{prefix}"}},
        "decode": {"class_type": "ChampDecode", "inputs": {"latent": ["sampler", 0], "vae": ["enc", 1],
                                                           "frames_per_chunk": 3}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


def champ_core_latents(base, seed, steps, cfg, length, overlap, strengths=None):
    """The same video computed by champ_core directly from the same files."""
    from champ_core.models import load_champ_models
    from champ_core.pipeline.codecs import load_diffusers_vae, load_transformers_clip
    from champ_core.pipeline.inputs import ArrayGuidance
    from champ_core.pipeline.sampling import ChampPipeline, SamplingOptions
    from champ_core.pipeline.windows import WindowOptions

    root = base / "models" / "champ"
    pipe = ChampPipeline(load_champ_models(root / "tiny"), load_diffusers_vae(root / "sd-vae-ft-mse"),
                         load_transformers_clip(root / "image_encoder"))
    reference = np.array(Image.open(base / "input" / "champ_reference.png").convert("RGB"))
    options = SamplingOptions(steps=steps, guidance_scale=cfg, seed=seed,
                              windows=WindowOptions(length=length, overlap=overlap),
                              guidance_strengths=strengths or dict.fromkeys(tiny_guidance_frames(1), 1.0))
    layers = {t: v for t, v in tiny_guidance_frames(FRAMES).items() if t in options.guidance_strengths}
    # ComfyUI's default threading, as the host ran the nodes
    return pipe.animate(reference, ArrayGuidance(layers), W, H, options, return_frames=False).latents


def saved_latent(result, node="save_latent"):
    import folder_paths

    record = result.outputs[node]["latents"][0] if "latents" in result.outputs.get(node, {}) else None
    if record is None:  # SaveLatent in 0.3.75 reports nothing to the UI: find the newest file
        folder = os.path.join(folder_paths.get_output_directory(), "latents")
        path = max((os.path.join(folder, f) for f in os.listdir(folder)), key=os.path.getmtime)
    else:
        path = os.path.join(folder_paths.get_output_directory(), record["subfolder"], record["filename"])
    return load_file(path)["latent_tensor"]


def test_sampler_matches_champ_core_and_decodes(comfy_host):
    import folder_paths

    result = comfy_host.run(generation_prompt())
    assert result.success, result.error()
    latents = saved_latent(result)
    assert latents.shape == (FRAMES, 4, H // 8, W // 8)
    expected = champ_core_latents(comfy_host.base, seed=7, steps=2, cfg=3.5, length=4, overlap=1)
    torch.testing.assert_close(latents.float(), expected.float(), rtol=1e-4, atol=1e-5)
    images = result.outputs["save"]["images"]
    assert len(images) == FRAMES
    first = Image.open(os.path.join(folder_paths.get_output_directory(), images[0]["subfolder"], images[0]["filename"]))
    assert first.size == (W, H)
    # Another seed gives another video (the seed widget is used).
    other = comfy_host.run(generation_prompt(seed=8, prefix="champ_seed8"))
    assert other.success and not torch.allclose(saved_latent(other), latents)


def test_layer_strengths_scale_that_layers_features(comfy_host):
    prompt = generation_prompt(prefix="champ_strengths")
    prompt["layers"]["inputs"].update({"depth_strength": 0.5, "normal_strength": 0.0, "dwpose_strength": 2.0})
    result = comfy_host.run(prompt)
    assert result.success, result.error()
    expected = champ_core_latents(comfy_host.base, seed=7, steps=2, cfg=3.5, length=4, overlap=1,
                                  strengths={"depth": 0.5, "semantic_map": 1.0, "dwpose": 2.0})
    torch.testing.assert_close(saved_latent(result).float(), expected.float(), rtol=1e-4, atol=1e-5)
    default = champ_core_latents(comfy_host.base, seed=7, steps=2, cfg=3.5, length=4, overlap=1)
    assert not torch.allclose(expected, default, atol=1e-3)


def test_interrupt_stops_within_one_window_and_next_prompt_succeeds(comfy_host):
    prompt = generation_prompt(steps=3, length=4, overlap=1, seed=11, prefix="champ_interrupt")
    windows_seen = []
    sampler_progress = []

    def listener(event, data):
        if event == "progress" and data.get("node") == "sampler":
            sampler_progress.append(data["value"])
            if len(sampler_progress) == 2:  # interrupt after the second window
                comfy_host.interrupt()

    comfy_host.server.listeners.append(listener)
    try:
        result = comfy_host.run(prompt)
    finally:
        comfy_host.server.listeners.remove(listener)
    windows_seen[:] = sampler_progress
    assert not result.success
    assert result.error()["event"] == "execution_interrupted" and result.error()["node_type"] == "ChampSampler"
    # Interrupted at the check after window 2, before window 3 ran (3 steps x 3 windows planned).
    assert windows_seen == [1, 2]
    assert comfy_host.run(generation_prompt(prefix="champ_after_interrupt")).success


def test_bad_generation_size_names_the_problem(comfy_host):
    prompt = generation_prompt(prefix="champ_bad")
    prompt["reference"]["inputs"]["width"] = 36  # not a multiple of the VAE's 8
    result = comfy_host.run(prompt)
    assert not result.success
    error = result.error()
    # The library checks the size where it is first used: encoding the reference at that size.
    assert error["node_type"] == "ChampEncodeReference" and "multiple of 8" in error["exception_message"]
    assert "36x48" in error["exception_message"]


def test_missing_weights_folder_is_named(comfy_host):
    prompt = generation_prompt(prefix="champ_missing")
    prompt["model"]["inputs"]["weights"] = "does-not-exist"
    result = comfy_host.run(prompt)
    # Rejected at validation (as POST /prompt does) with the pack's message: nothing ran.
    assert result.validation_error is not None and "model" in result.node_errors
    details = result.node_errors["model"]["errors"][0]["details"]
    assert "denoising_unet.pth" in details and str(comfy_host.base / "models" / "champ" / "does-not-exist") in details
    assert "not in list" not in str(result.node_errors) and "save" not in result.outputs
