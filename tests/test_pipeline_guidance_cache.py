"""GuidanceFeatureCache: each frame encoded once per video, the same features as encoding per window,
bounded by its budget (per-window re-encoding past it), fp16 storage only where asked for."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from champ_core.guidance import GUIDANCE_TYPES
from champ_core.pipeline.guidance_cache import GIB, GuidanceFeatureCache, default_host_budget, resolve_budget
from champ_core.pipeline.inputs import ArrayGuidance
from champ_core.pipeline.windows import WindowOptions, plan_windows

FIXTURE = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))
PIPE = FIXTURE / "pipeline"


@pytest.fixture(scope="module")
def tiny():
    from champ_core.models import load_champ_models
    from champ_core.pipeline.codecs import load_diffusers_vae, load_transformers_clip
    from champ_core.pipeline.sampling import ChampPipeline

    models = load_champ_models(FIXTURE / "unet", guidance_folder=PIPE)
    pipe = ChampPipeline(models, load_diffusers_vae(PIPE / "vae"), load_transformers_clip(PIPE / "image_encoder"))
    strips = {t: np.array(Image.open(PIPE / f"guidance_{t}.png").convert("RGB")) for t in GUIDANCE_TYPES}
    _, _, frames, h, w = load_file(PIPE / "intermediates.safetensors")["init_noise"].shape
    height, width = 8 * h, 8 * w  # the strips stack the frames vertically
    guidance = ArrayGuidance({t: s.reshape(frames, height, width, 3) for t, s in strips.items()})
    yield pipe, guidance, width, height


class FrameCounter:
    """Wraps an encode function and counts the frames that go through the encoders."""

    def __init__(self, encode):
        self.encode = encode
        self.frames = 0
        self.calls = 0

    def __call__(self, layers):
        self.frames += len(next(iter(layers.values())))
        self.calls += 1
        return self.encode(layers)


def make_cache(tiny, **kwargs):
    pipe, guidance, width, height = tiny

    def read(indices):
        return guidance.read(indices, width, height, "squash")

    def encode(layers):
        return pipe.encode_guidance_window(guidance, None, width, height, "squash", guidance.types, None,
                                           layers=layers)

    counter = FrameCounter(encode)
    cache = GuidanceFeatureCache(read, counter, guidance.num_frames, pipe.device, pipe.dtype, **kwargs)
    return cache, counter


def whole_clip_features(tiny) -> torch.Tensor:
    pipe, guidance, width, height = tiny
    frames = range(guidance.num_frames)
    return pipe.encode_guidance_window(guidance, frames, width, height, "squash", guidance.types, None)


def run_schedule(cache, num_frames, steps, options=WindowOptions()):
    """The sampler's order: every window of every step, prefetching the next window's frames."""
    plan = plan_windows(num_frames, options)
    order = [w.frames for s in range(steps) for w in plan.windows(s)]
    outputs = []
    with cache:
        for i, frames in enumerate(order):
            outputs.append((frames, cache.window(frames)))
            if i + 1 < len(order):
                cache.prefetch(order[i + 1])
    return outputs


def test_each_frame_is_encoded_once_over_steps_and_windows(tiny):
    _, guidance, _, _ = tiny
    options = WindowOptions(length=16, overlap=4, shift_per_step=True)  # windows move every step
    cache, counter = make_cache(tiny)
    outputs = run_schedule(cache, guidance.num_frames, steps=4, options=options)
    assert len(outputs) >= 8  # several windows per step
    assert cache.encodings.tolist() == [1] * guidance.num_frames
    assert cache.encodings_per_frame == 1.0
    assert counter.frames == guidance.num_frames  # counted at the encoder itself, too
    assert cache.cached_frames == guidance.num_frames
    whole = whole_clip_features(tiny)
    for frames, features in outputs:  # every window gets its frames' features, whatever the chunking
        expected = whole[:, :, list(frames)]
        assert features.shape == expected.shape and features.dtype == torch.float32
        assert torch.allclose(features, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def close(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal up to float noise: the encoders never mix frames, but oneDNN picks convolution kernels by
    batch size (and thread count), so a frame encoded in a batch of 6 can differ from the same frame
    in a batch of 24 in the last bits (measured <= 2e-6 absolute on features of scale ~1)."""
    return x.shape == y.shape and bool(((x - y).abs().max() <= 1e-5 * y.abs().max()).item())


def test_cached_features_equal_per_window_encoding(tiny):
    # Default windows (24, overlap 4) on the fixture's 30 frames: the second window encodes only its
    # 6 new frames, the cache serves the other 18.
    _, guidance, _, _ = tiny
    cached, _ = make_cache(tiny)
    uncached, counter = make_cache(tiny, budget_bytes=0)
    a = run_schedule(cached, guidance.num_frames, steps=3)
    b = run_schedule(uncached, guidance.num_frames, steps=3)
    assert torch.equal(a[0][1], b[0][1])  # the same batch of frames: the same bits
    for (frames, x), (_, y) in zip(a, b):
        assert close(x, y), frames
    for (frames, x), (_, y) in zip(a[2:], a[:2]):  # later steps: the very same features as step 0
        assert torch.equal(x, y), frames
    windows = len(plan_windows(guidance.num_frames, WindowOptions()).windows(0))
    assert windows == 2
    assert counter.frames == 3 * sum(len(w.frames) for w in plan_windows(guidance.num_frames,
                                                                          WindowOptions()).windows(0))
    assert uncached.cached_frames == 0 and cached.encodings_per_frame == 1.0


def test_budget_exceeded_recomputes_per_window_with_the_same_result(tiny, caplog):
    _, guidance, _, _ = tiny
    reference, _ = make_cache(tiny)
    run_schedule(reference, guidance.num_frames, steps=1)
    frame_bytes = reference.stored_bytes // reference.cached_frames
    keep = 10
    with caplog.at_level(logging.INFO, logger="champ_core.pipeline.guidance_cache"):
        limited, counter = make_cache(tiny, budget_bytes=keep * frame_bytes + frame_bytes // 2)
        out = run_schedule(limited, guidance.num_frames, steps=3)
    assert limited.cached_frames == keep and limited.stored_bytes <= keep * frame_bytes + frame_bytes // 2
    counts = limited.encodings
    assert (counts == 1).sum() == keep  # the first frames seen stay stored ...
    assert (counts[counts != 1] >= 3).all()  # ... the others are re-encoded at every step
    assert any(f"{keep} of {guidance.num_frames} frames cached" in r.getMessage() for r in caplog.records)
    full = run_schedule(make_cache(tiny, budget_bytes=0)[0], guidance.num_frames, steps=3)
    for (frames, x), (_, y) in zip(out, full):
        assert close(x, y), frames


def test_storage_dtype_is_the_model_dtype_unless_fp16_is_asked_for(tiny, caplog):
    _, guidance, _, _ = tiny
    with caplog.at_level(logging.INFO, logger="champ_core.pipeline.guidance_cache"):
        auto, _ = make_cache(tiny)
        run_schedule(auto, guidance.num_frames, steps=1)
    assert auto.storage_dtype == torch.float32
    assert any("in float32" in r.getMessage() and "each encoded once" in r.getMessage() for r in caplog.records)
    half, _ = make_cache(tiny, storage_dtype=torch.float16)
    out = run_schedule(half, guidance.num_frames, steps=2)
    assert half.stored_bytes * 2 == auto.stored_bytes
    whole = whole_clip_features(tiny)
    for (frames, features), (_, first) in zip(out[2:], out[:2]):  # served from the fp16 store, as fp32
        expected = whole[:, :, list(frames)]
        assert features.dtype == torch.float32 and torch.equal(features, first)
        assert torch.equal(features, features.half().float())  # really rounded to fp16
        assert not torch.equal(features, expected)
        assert (features - expected).abs().max() <= 2 ** -10 * expected.abs().max()
    # an fp16 model stores fp16 (what CUDA runs use); checked with the real encoders cast to fp16
    pipe, guidance, width, height = tiny

    def encode_half(layers):
        return pipe.encode_guidance_window(guidance, None, width, height, "squash", guidance.types, None,
                                           layers=layers).half()

    cache = GuidanceFeatureCache(lambda idx: guidance.read(idx, width, height, "squash"), encode_half,
                                 guidance.num_frames, "cpu", torch.float16)
    with cache:
        features = cache.window(range(4))
        again = cache.window(range(4))
    assert cache.storage_dtype == torch.float16 and again.dtype == torch.float16
    assert torch.equal(features, again) and cache.encodings[:4].tolist() == [1] * 4


def test_budget_resolution():
    cpu = resolve_budget(torch.device("cpu"))
    assert cpu.automatic and cpu.device_bytes == 0 and 0 < cpu.host_bytes <= 4 * GIB
    assert cpu.host_bytes == default_host_budget()
    assert resolve_budget(torch.device("cpu"), 0).total == 0
    assert resolve_budget(torch.device("cpu"), 12345).host_bytes == 12345
    cuda = resolve_budget(torch.device("cuda"), 3 * GIB)  # pure arithmetic: no GPU needed
    assert (cuda.device_bytes, cuda.host_bytes) == (GIB, 2 * GIB)
    small = resolve_budget(torch.device("cuda"), GIB // 2)
    assert (small.device_bytes, small.host_bytes) == (GIB // 2, 0)
    auto = resolve_budget(torch.device("cuda"))
    assert auto.device_bytes == GIB and auto.host_bytes == default_host_budget()
    with pytest.raises(ValueError, match="budget must be >= 0"):
        resolve_budget(torch.device("cpu"), -1)


def test_read_errors_surface_in_the_callers_thread(tiny):
    pipe, guidance, width, height = tiny

    def read(indices):
        if 25 in indices:
            raise OSError("frame 25 is unreadable")
        return guidance.read(indices, width, height, "squash")

    cache = GuidanceFeatureCache(read, lambda layers: pipe.encode_guidance_window(
        guidance, None, width, height, "squash", guidance.types, None, layers=layers),
        guidance.num_frames, "cpu", torch.float32)
    with cache:
        cache.window(range(20))
        cache.prefetch(range(20, 30))
        with pytest.raises(OSError, match="frame 25"):
            cache.window(range(20, 30))
    assert cache.encodings[20:].tolist() == [0] * 10


def test_pipeline_encodes_each_frame_once_and_matches_the_uncached_run(tiny):
    """Through ChampPipeline.denoise: 3 steps x 2 windows; encoder frames counted with forward hooks."""
    from champ_core.pipeline.sampling import SamplingOptions

    pipe, guidance, width, height = tiny
    counted = {"frames": 0}

    def hook(module, inputs, output):
        counted["frames"] += output.shape[2]

    encoders = list(pipe.models.guidance_encoders.values())
    handles = [e.register_forward_hook(hook) for e in encoders]
    try:
        reference = pipe.encode_reference(PIPE / "reference.png", width, height)
        noise = pipe.initial_noise(guidance.num_frames, width, height, seed=42)
        runs = {}
        for budget in (None, 0):
            counted["frames"] = 0
            options = SamplingOptions(steps=3, guidance_cache_bytes=budget)
            runs[budget] = (pipe.denoise(reference, guidance, width, height, options, latents=noise),
                            counted["frames"] / len(encoders))
    finally:
        for handle in handles:
            handle.remove()
    windows = plan_windows(guidance.num_frames, WindowOptions()).windows(0)
    assert len(windows) == 2
    assert runs[None][1] == guidance.num_frames  # each frame once over 3 steps and 2 windows
    assert runs[0][1] == 3 * sum(len(w.frames) for w in windows)  # cache off: every window, every step
    cached, uncached = runs[None][0], runs[0][0]
    assert (cached - uncached).abs().max() <= 1e-5 * uncached.abs().max()
