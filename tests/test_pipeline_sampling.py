"""Sampling behaviour on the tiny fixture networks: progress, cancellation, inputs, outputs.

Sizes, frame counts and windows come from the fixture set (CHAMP_PARITY_DIR; see parity_fixture).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity_fixture import (
    FIXTURE,
    FRAMES,
    HEIGHT,
    LATENT_H,
    LATENT_W,
    PIPE,
    WIDTH,
    guidance_strips,
    max_frames,
    num_windows,
    run_windows,
)
from PIL import Image

from champ_core.guidance import GUIDANCE_TYPES
from champ_core.pipeline.inputs import ArrayGuidance, InputError
from champ_core.pipeline.sampling import ChampPipeline, ProgressEvent, SamplingOptions
from champ_core.pipeline.windows import WindowError, WindowOptions
from champ_core.video import VideoWriter, read_video

W, H = WIDTH, HEIGHT
FAST = SamplingOptions(steps=2, guidance_scale=3.5)


class Cancel(Exception):
    pass


@pytest.fixture(scope="module")
def tiny():
    from champ_core.models import load_champ_models
    from champ_core.pipeline.codecs import load_diffusers_vae, load_transformers_clip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny networks run faster on one thread on a shared 2-core machine
    models = load_champ_models(FIXTURE / "unet", guidance_folder=PIPE)
    pipe = ChampPipeline(models, load_diffusers_vae(PIPE / "vae"), load_transformers_clip(PIPE / "image_encoder"))
    layers = {t: frames for t, frames in guidance_strips().items() if t in GUIDANCE_TYPES}
    reference = np.array(Image.open(PIPE / "reference.png").convert("RGB"))
    yield pipe, layers, reference
    torch.set_num_threads(threads)


def test_progress_reports_every_step_and_window(tiny):
    pipe, layers, reference = tiny
    events: list[ProgressEvent] = []
    result = pipe.animate(reference, ArrayGuidance(layers), W, H, FAST, progress=events.append, decode_chunk=8)
    denoise = [e for e in events if e.phase == "denoise"]
    n = num_windows(FRAMES)
    assert [(e.step, e.window) for e in denoise] == [(s, w) for s in range(FAST.steps) for w in range(n)]
    assert [e.done for e in denoise] == list(range(1, FAST.steps * n + 1)) and {e.total for e in denoise} == {FAST.steps * n}
    assert [e.done for e in events if e.phase == "decode"] == [min(FRAMES, k) for k in range(8, FRAMES + 8, 8)]
    assert result.frames.shape == (FRAMES, H, W, 3) and result.frames.dtype == torch.float32
    # (F, 4, h, w), unscaled: ComfyUI's LATENT["samples"]
    assert result.latents.shape == (FRAMES, 4, LATENT_H, LATENT_W)
    assert 0.0 <= float(result.frames.min()) and float(result.frames.max()) <= 1.0


def test_latents_are_comfy_convention_and_decode_to_the_frames(tiny):
    pipe, layers, reference = tiny
    result = pipe.animate(reference, ArrayGuidance(layers), W, H, FAST)
    decoded = pipe.vae.decode(result.latents).permute(0, 2, 3, 1)
    assert torch.allclose(decoded, result.frames, atol=1e-5)


@pytest.mark.parametrize("cancel_at", ["denoise", "decode"])
def test_cancellation_leaves_no_file_and_no_state(tiny, tmp_path, cancel_at):
    pipe, layers, reference = tiny
    out = tmp_path / "video.mp4"

    def progress(event):
        if event.phase == cancel_at and event.done == (2 if cancel_at == "denoise" else 8):  # decode counts frames
            raise Cancel

    with pytest.raises(Cancel):
        with VideoWriter(out, fps=24) as writer:
            pipe.animate(reference, ArrayGuidance(layers), W, H, FAST, progress=progress, writer=writer,
                         return_frames=False, decode_chunk=4)
    assert list(tmp_path.iterdir()) == []
    for reader in pipe.models.denoising_unet._readers.values():  # nothing left in the UNet
        assert reader.reference is None
    # a run after the cancelled one gives the same numbers as a fresh run
    first = pipe.animate(reference, ArrayGuidance(layers), W, H, FAST).latents
    second = pipe.animate(reference, ArrayGuidance(layers), W, H, FAST).latents
    assert torch.equal(first, second)


def test_streamed_video_matches_returned_frames(tiny, tmp_path):
    pipe, layers, reference = tiny
    with VideoWriter(tmp_path / "v.mp4", fps=12) as writer:
        result = pipe.animate(reference, ArrayGuidance(layers), W, H, FAST, writer=writer, decode_chunk=7)
    video, fps = read_video(tmp_path / "v.mp4")
    assert video.shape == (FRAMES, H, W, 3) and fps == pytest.approx(12)
    expected = (result.frames * 255).round().numpy()
    # H.264 (yuv420) is lossy on these noisy tiny frames: compare per-frame mean colours
    assert np.abs(video.mean(axis=(1, 2)) - expected.mean(axis=(1, 2))).max() < 4.0


def test_missing_guidance_type_uses_the_encoders_present(tiny):
    pipe, layers, reference = tiny
    partial = {t: layers[t] for t in ("depth", "normal")}
    result = pipe.animate(reference, ArrayGuidance(partial), W, H, FAST)
    full = pipe.animate(reference, ArrayGuidance(layers), W, H, FAST)
    assert torch.isfinite(result.latents).all()
    assert not torch.allclose(result.latents, full.latents)


def test_same_seed_same_video_other_seed_other_video(tiny):
    pipe, layers, reference = tiny
    a = pipe.animate(reference, ArrayGuidance(layers), W, H, FAST).latents
    b = pipe.animate(reference, ArrayGuidance(layers), W, H, SamplingOptions(steps=2, seed=7)).latents
    assert not torch.allclose(a, b)


def test_non_square_rgba_reference_and_output_size(tiny):
    pipe, layers, reference = tiny
    rgba = np.concatenate([np.array(Image.fromarray(reference).resize((50, 60))),
                           np.full((60, 50, 1), 255, np.uint8)], axis=-1)
    rgba[:10, :, 3] = 0
    options = SamplingOptions(steps=1, windows=WindowOptions(schedule="open", fusion="pyramid"))
    result = pipe.animate(rgba, ArrayGuidance(layers), W, H, options, fit="pad", output_size=(20, 30))
    assert result.frames.shape == (FRAMES, 30, 20, 3)
    gray = np.array(Image.fromarray(reference).convert("L"))
    result = pipe.animate(gray, ArrayGuidance(layers), W, H, options, fit="crop")
    assert result.frames.shape == (FRAMES, H, W, 3)


@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_other_solvers_and_shifted_windows_run(tiny, solver):
    pipe, layers, reference = tiny
    options = SamplingOptions(steps=2, solver=solver, beta_schedule="scaled_linear",
                              windows=WindowOptions(shift_per_step=True), guidance_cache_bytes=10**8)
    result = pipe.animate(reference, ArrayGuidance(layers), W, H, options, return_frames=False)
    assert result.frames is None and torch.isfinite(result.latents).all()


def test_clear_errors(tiny):
    pipe, layers, reference = tiny
    guidance = ArrayGuidance(layers)
    longest = max_frames()
    with pytest.raises(WindowError, match=f"{longest} frame positions"):
        pipe.animate(reference, guidance, W, H, SamplingOptions(steps=1, windows=WindowOptions(length=longest + 8)))
    with pytest.raises(InputError, match="multiple of"):
        pipe.animate(reference, guidance, W - 2, H, FAST)
    with pytest.raises(InputError, match="initial latents"):
        pipe.animate(reference, guidance, W, H, FAST, latents=torch.zeros(1, 4, FRAMES - 1, LATENT_H, LATENT_W))
    with pytest.raises(InputError, match="steps"):
        pipe.animate(reference, guidance, W, H, SamplingOptions(steps=0))


def test_size_that_does_not_halve_evenly_works(tiny):
    pipe, layers, reference = tiny
    short = ArrayGuidance({"depth": layers["depth"][:5]})
    result = pipe.animate(reference, short, 40, 56, SamplingOptions(steps=1))  # latents 5 x 7
    assert result.frames.shape == (5, 56, 40, 3) and result.latents.shape == (5, 4, 7, 5)


class RecordingGuidance:
    """Wraps a guidance source and records which frames each read asks for."""

    def __init__(self, inner):
        self.inner, self.types, self.num_frames, self.reads = inner, inner.types, inner.num_frames, []

    def read(self, indices, width, height, fit):
        self.reads.append(list(indices))
        return self.inner.read(indices, width, height, fit)


def test_guidance_is_read_per_window_and_reference_runs_once(tiny):
    pipe, layers, reference = tiny
    calls = {"reference_unet": 0, "prepare_reference": 0}
    hook = pipe.models.reference_unet.register_forward_hook(
        lambda *args: calls.__setitem__("reference_unet", calls["reference_unet"] + 1))
    prepare = pipe.models.denoising_unet.prepare_reference

    def counting_prepare(features):
        calls["prepare_reference"] += 1
        return prepare(features)

    pipe.models.denoising_unet.prepare_reference = counting_prepare
    try:
        source = RecordingGuidance(ArrayGuidance(layers))
        pipe.animate(reference, source, W, H, SamplingOptions(steps=3, guidance_cache_bytes=0), return_frames=False)
        cached = RecordingGuidance(ArrayGuidance(layers))
        pipe.animate(reference, cached, W, H, SamplingOptions(steps=3, guidance_cache_bytes=10**7),
                     return_frames=False)
        automatic = RecordingGuidance(ArrayGuidance(layers))  # the default: an automatic budget
        pipe.animate(reference, automatic, W, H, SamplingOptions(steps=3), return_frames=False)
    finally:
        hook.remove()
        del pipe.models.denoising_unet.prepare_reference
    assert calls == {"reference_unet": 3, "prepare_reference": 3}  # once per video
    windows = run_windows(FRAMES)
    assert source.reads == windows * 3  # cache off: never the whole clip, one window at a time, every step
    # with a cache budget, each frame is read and encoded once (a window reads only its missing frames)
    seen, first_reads = set(), []
    for window in windows:
        missing = [f for f in window if f not in seen]
        seen.update(missing)
        if missing:
            first_reads.append(missing)
    assert cached.reads == automatic.reads == first_reads
