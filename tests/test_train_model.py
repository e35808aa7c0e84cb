"""The one Champ forward in training and sampling; gradient checkpointing; no validation leak.

Built on the training fixture ($CHAMP_TRAINING_DIR, see test_train_parity.py); sizes from its files.
"""

from __future__ import annotations

import numpy as np
import torch
from test_train_parity import (  # noqa: I001  (tests/ is on sys.path under pytest)
    alphas_cumprod,
    build_model,
    clip_embeddings,
    externals,
    fixture_config,
    run_case,
    stage_data,
)

from champ_core.pipeline.codecs import DiffusersVAE, TransformersCLIP
from champ_core.pipeline.inputs import ArrayGuidance
from champ_core.pipeline.sampling import ChampDenoiser, ChampPipeline, ReferenceEncoding, SamplingOptions
from champ_core.train import objective
from champ_core.train.trainable import prepare_for_inference, prepare_for_training


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_training_forward_equals_the_samplers_window_step():
    """The training step's call and the sampler's window step (cached guidance features, the
    per-video reference context) are one function: on the same model and inputs, the same
    prediction within 1e-6. In inference mode the same window step runs faster kernels (the
    single-token cross-attention shortcut, the CPU short-sequence attention product, a CFG batch of
    2): the same numbers up to float32 rounding (1e-5)."""
    stage = 2
    inputs, step = stage_data(stage)
    clip = clip_embeddings(stage, False)
    guidance = inputs["tgt_guid_vid"].transpose(1, 2)
    t = inputs["timesteps"]
    noisy = objective.add_noise(alphas_cumprod(stage), step["latents"], step["noise"], t)
    frames = list(range(noisy.shape[2]))
    encoding = ReferenceEncoding(clip_embeds=clip, latents=step["ref_image_latents"])

    trained = build_model(stage, "cond")
    prepare_for_training(trained, stage)
    training = trained(noisy, t, clip, guidance=guidance, reference_latents=step["ref_image_latents"])
    denoiser = ChampDenoiser(trained)
    context = trained.reference_context(step["ref_image_latents"], clip)  # what reference_stage holds
    cond = denoiser.reference_stage(encoding, 1.0)
    cond.context = context
    window = denoiser.window_step(noisy, frames, t[0], cond, trained.encode_guidance(guidance))
    assert max_rel(window.detach(), training.detach()) <= 1e-6

    model = build_model(stage, "cond")
    prepare_for_inference(model)
    with torch.inference_mode():
        denoiser = ChampDenoiser(model)
        features = model.encode_guidance(guidance)
        plain = denoiser.window_step(noisy, frames, t[0], denoiser.reference_stage(encoding, 1.0), features)
        cfg = denoiser.window_step(noisy, frames, t[0], denoiser.reference_stage(encoding, 3.5), features)
        uncond = model(noisy, t, torch.zeros_like(clip), guidance=guidance)
    training = training.detach()
    assert max_rel(plain, training) <= 1e-5
    assert max_rel(cfg[1:], training) <= 1e-5  # CFG's conditional half
    assert max_rel(cfg[:1], uncond) <= 1e-5  # its unconditional half: zero CLIP, no reference
    assert max_rel(cfg[:1], training) > 1e-3  # and the reference does matter


def test_gradient_checkpointing_gives_the_same_gradients():
    for stage, case in [(1, "cond_bank_fp32"), (2, "cond")]:
        model_off, trainable_off, _, _, out_off = run_case(stage, case, checkpointing=False)
        model_on, trainable_on, _, _, out_on = run_case(stage, case, checkpointing=True)
        assert model_on.denoising_unet.gradient_checkpointing and not model_off.denoising_unet.gradient_checkpointing
        assert max_rel(out_on.model_pred, out_off.model_pred) <= 1e-6
        compared = 0
        for (name, p_off), (_, p_on) in zip(trainable_off, trainable_on):
            assert (p_off.grad is None) == (p_on.grad is None), name
            if p_off.grad is None or p_off.grad.abs().max() == 0:
                continue
            assert max_rel(p_on.grad, p_off.grad) <= 1e-6, name
            compared += 1
        # the ReferenceNet's gradients reach it through the checkpointed reference attention
        assert stage == 2 or any(n.startswith("reference_unet.") and p.grad is not None for n, p in trainable_on)
        assert compared > 100


def trained_model(stage: int, case: str):
    model = build_model(stage, case)
    prepare_for_training(model, stage)
    return model


def step_with(model, stage: int, case: str):
    config = fixture_config()[f"stage{stage}"]
    inputs, step = stage_data(stage)
    uncond = bool(config["cases"][case]["uncond_fwd"])
    out = objective.training_loss(
        model, alphas_cumprod(stage), step["latents"], step["noise"], inputs["timesteps"],
        clip_embeddings(stage, uncond), inputs["tgt_guid"].unsqueeze(2), step["ref_image_latents"],
        uncond=uncond, snr_gamma=config["snr_gamma"],
    )
    out.loss.backward()
    return out


def test_validation_sampling_leaves_the_next_training_step_unchanged():
    """The reference's validation pipeline leaves its CFG hooks on the training denoiser (half of
    every later stage-1 batch then trains without the reference); here a validation call with CFG
    on the training model itself changes nothing in the next step."""
    stage, case = 1, "cond"
    baseline_model = trained_model(stage, case)
    baseline = step_with(baseline_model, stage, case)
    baseline_grads = {n: p.grad for n, p in baseline_model.named_parameters()}

    model = trained_model(stage, case)
    vae, image_encoder = externals()
    pipe = ChampPipeline(model, DiffusersVAE(vae), TransformersCLIP(image_encoder))
    inputs, _ = stage_data(stage)
    height, width = inputs["tgt_img"].shape[-2:]
    rng = np.random.default_rng(0)
    layers = {t: rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8) for t in model.guidance_types}
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    result = pipe.animate(image, ArrayGuidance(layers), width, height, SamplingOptions(steps=2, guidance_scale=3.5),
                          return_frames=False)
    assert result.latents.shape[0] == 3 and torch.isfinite(result.latents).all()
    assert all(p.grad is None for p in model.parameters())  # sampling ran without autograd

    after = step_with(model, stage, case)
    assert torch.equal(after.model_pred, baseline.model_pred)
    assert torch.equal(after.loss, baseline.loss)
    for name, parameter in model.named_parameters():
        if baseline_grads[name] is None:
            assert parameter.grad is None, name
        else:
            assert torch.equal(parameter.grad, baseline_grads[name]), name
