"""Recorded outputs of the shipped built-in model (tests/fixtures/builtin_model/), and their recorder.

- `step.npz`: one denoiser call (the Champ forward) on the example mannequin: its reference image,
  guidance maps of 4 frames, seeded noise and a timestep, with the prediction it gave.
- `clip.npz`: an 8-frame clip sampled with the shipped settings (BuiltinSampling) from the same
  reference and the guidance of its first 8 frames, as decoded uint8 frames.
- `losses.json`: the first 10 losses of configs/train/small_stage1.yaml on two generated videos.

Every input is stored, so the tests need nothing but the shipped weights. Re-record (only when the
shipped weights change) with

    .venv/bin/python tests/builtin_fixtures.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "builtin_model"
LAYERS = ("depth", "normal", "semantic_map", "dwpose")
STEP_FRAMES, CLIP_FRAMES, STEP_TIMESTEP, STEP_SEED = 4, 8, 500, 3
LOSS_STEPS, LOSS_VIDEOS, LOSS_SEED = 10, 2, 77


def mannequin_inputs(frames: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(reference uint8 (S, S, 3), guidance uint8 {type: (F, S, S, 3)}, mask (F, S, S)) of the example person."""
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_examples import mannequin_video

    video = mannequin_video(frames)
    return video.images[0], {t: video.layers[t] for t in LAYERS}, video.layers["mask"]


def denoiser_step(pipeline, reference: np.ndarray, guidance: dict, noise, timestep: int):
    """The Champ forward of the built-in model on one window (no CFG), as the sampler calls it."""
    import torch

    size = reference.shape[0]
    encoding = pipeline.encode_reference(reference, size, size)
    pixels = {t: torch.from_numpy(g).permute(3, 0, 1, 2)[None].float() / 255.0 for t, g in guidance.items()}
    with torch.inference_mode():
        return pipeline.models(noise, torch.tensor([timestep]), encoding.clip_embeds, guidance=pixels,
                               reference_latents=encoding.latents)


def sample_clip(pipeline, reference: np.ndarray, guidance: dict, mask: np.ndarray) -> np.ndarray:
    from champ_core.models.builtin import BuiltinSampling
    from champ_core.pipeline.inputs import ArrayGuidance
    from champ_core.pipeline.sampling import SamplingOptions, to_uint8
    from champ_core.pipeline.windows import WindowOptions

    frames = len(mask)
    options = SamplingOptions(steps=BuiltinSampling.steps, guidance_scale=BuiltinSampling.guidance_scale,
                              seed=BuiltinSampling.seed, solver=BuiltinSampling.solver,
                              beta_schedule=BuiltinSampling.beta_schedule,
                              windows=WindowOptions(length=frames, overlap=0))
    size = reference.shape[0]
    result = pipeline.animate(reference, ArrayGuidance(guidance, mask=mask), size, size, options)
    return to_uint8(result.frames)


def first_losses(work: Path, stage1_steps: int = LOSS_STEPS, stage2_steps: int = LOSS_STEPS) -> dict[str, list]:
    """The first losses of the committed small configs (stage 1, then stage 2 on its output) on two
    generated videos, with the shipped VAE."""
    from champ_core.models.builtin import BUILTIN_DIR, IMAGE_SIZE
    from champ_core.train.config import load_config
    from champ_core.train.synth import SynthOptions, generate_dataset
    from champ_core.train.trainer import train

    data = work / "data"
    generate_dataset(data, SynthOptions(videos=LOSS_VIDEOS, frames=48, size=IMAGE_SIZE, seed=LOSS_SEED))
    losses = {}
    for stage, steps in (("stage1", stage1_steps), ("stage2", stage2_steps)):
        overrides = [f"data.video_folder={data}", f"output_dir={work / stage}", f"vae_model_path={BUILTIN_DIR / 'vae'}",
                     f"solver.max_train_steps={steps}"]
        if stage == "stage2":
            overrides.append(f"stage1_ckpt_dir={work / 'stage1'}")
        config = load_config(stage, REPO / "configs" / "train" / f"small_{stage}.yaml", overrides)
        train(config, None, show_progress=False)
        rows = [json.loads(line) for line in (work / stage / "log.jsonl").read_text().splitlines()]
        losses[stage] = [row["loss"] for row in rows if "loss" in row][:steps]
    return losses


def placement_ious(frames, masks, background) -> tuple[float, float]:
    """(mean IoU of the drawn person with the guidance mask, the same with the mask moved a quarter
    of the frame sideways): the first above the second means the person is drawn where the guidance
    puts them, not just anywhere."""
    from champ_core.evaluation.foreground import mask_iou, person_mask

    drawn = [person_mask(frame, background) for frame in frames]
    shift = masks[0].shape[1] // 4
    placed = [mask_iou(d, m > 0) for d, m in zip(drawn, masks)]
    moved = [mask_iou(d, np.roll(m > 0, shift, axis=1)) for d, m in zip(drawn, masks)]
    return float(np.mean(placed)), float(np.mean(moved))


def record() -> None:
    import torch

    from champ_core.models.builtin import BUILTIN_DIR
    from champ_core.pipeline.loading import load_pipeline

    FIXTURES.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline(BUILTIN_DIR)
    reference, guidance, mask = mannequin_inputs(CLIP_FRAMES)
    size = reference.shape[0]
    step_guidance = {t: g[:STEP_FRAMES] for t, g in guidance.items()}
    noise = torch.randn((1, 4, STEP_FRAMES, size // 8, size // 8), generator=torch.Generator().manual_seed(STEP_SEED))
    prediction = denoiser_step(pipeline, reference, step_guidance, noise, STEP_TIMESTEP)
    np.savez_compressed(FIXTURES / "step.npz", reference=reference, noise=noise.numpy(),
                        timestep=np.array(STEP_TIMESTEP), prediction=prediction.float().numpy(),
                        **{f"guidance_{t}": g for t, g in step_guidance.items()})
    clip = sample_clip(pipeline, reference, guidance, mask)
    np.savez_compressed(FIXTURES / "clip.npz", reference=reference, mask=mask, frames=clip,
                        **{f"guidance_{t}": g for t, g in guidance.items()})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        losses = first_losses(Path(tmp))
    (FIXTURES / "losses.json").write_text(json.dumps(losses, indent=1) + "\n")
    print("wrote", FIXTURES / "step.npz", FIXTURES / "clip.npz", FIXTURES / "losses.json")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    record()
