"""Forward time and peak memory of Champ's networks.

    .venv/bin/python bench/models.py                 # tiny config on CPU; full size too when CUDA is there
    .venv/bin/python bench/models.py --frames 24 --size 512 --repeats 3

CPU: the parity fixtures' tiny architecture with random weights (wall time per call, peak process RSS).
CUDA: the full-size denoising UNet (SD1.5 + 21 motion modules) in fp16 at size x size pixels x frames,
batch 2 (CFG) and 1, with reference attention (seconds per call, peak GPU memory). Weights are
random (timing does not depend on their values); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from champ_core.models.checkpoints import build_on_meta
from champ_core.models.config import GuidanceEncoderConfig, MotionModuleConfig, UNetConfig
from champ_core.models.guidance_encoder import GuidanceEncoder
from champ_core.models.unet import DenoisingUNet3D, ReferenceUNet

TINY_UNET = dict(block_out_channels=(32, 32), down_cross_attention=(True, False), up_cross_attention=(False, True),
                 layers_per_block=1, cross_attention_dim=32)
TINY_GUIDANCE = GuidanceEncoderConfig(embedding_channels=32, block_out_channels=(8, 32, 32, 32))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, repeats: int, sync=lambda: None) -> tuple[float, float]:
    """(fastest, median) seconds per call after one warm-up call; the fastest is the least disturbed
    by other processes on a shared machine."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def random_init(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    """Materialise a meta-built module with small random weights (the values do not matter for timing)."""
    module = module.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.ndim <= 1 or name.endswith(".pe"):
                tensor.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            else:
                tensor.normal_(0.0, 0.02, generator=generator)
    return module.to(dtype).eval().requires_grad_(False)


@torch.no_grad()
def bench_cpu(frames: int, repeats: int) -> None:
    import diffusers.models.attention  # noqa: F401  (the networks import these lazily; count them as imports)
    import diffusers.models.downsampling  # noqa: F401
    import diffusers.models.embeddings  # noqa: F401
    import diffusers.models.resnet  # noqa: F401
    import diffusers.models.upsampling  # noqa: F401

    rss_before = peak_rss_mib()
    torch.manual_seed(0)
    reference = ReferenceUNet(UNetConfig(out_channels=None, **TINY_UNET)).eval()
    denoiser = DenoisingUNet3D(UNetConfig(motion=MotionModuleConfig(), **TINY_UNET)).eval()
    encoder = GuidanceEncoder(TINY_GUIDANCE).eval()
    h, w = 8, 8
    latents = torch.randn(2, 4, frames, h, w)
    clip = torch.randn(2, 1, 32)
    guidance = torch.rand(1, 3, frames, 8 * h, 8 * w)
    features = reference(latents[:1, :, 0], 0, clip[1:])
    context = denoiser.prepare_reference(features)
    mask = torch.tensor([False, True])
    guidance_features = encoder(guidance).expand(2, -1, -1, -1, -1)
    rows = [
        ("guidance encoder", f"1 x 3 x {frames} x {8 * h} x {8 * w}", lambda: encoder(guidance)),
        ("reference UNet", f"1 x 4 x {h} x {w}", lambda: reference(latents[:1, :, 0], 0, clip[1:])),
        ("prepare_reference", f"{len(features.tokens)} layers -> K/V", lambda: denoiser.prepare_reference(features)),
        ("denoising UNet3D (CFG)", f"2 x 4 x {frames} x {h} x {w}",
         lambda: denoiser(latents, 500, clip, guidance_features, context, mask)),
    ]
    print(f"CPU, tiny config (fixture architecture), fp32, {torch.get_num_threads()} threads, {repeats} repeats")
    print(f"{'module':<26} {'input':<26} {'min ms':>9} {'median ms':>10}")
    for name, shape, fn in rows:
        fastest, median = timed(fn, repeats)
        print(f"{name:<26} {shape:<26} {1000 * fastest:9.2f} {1000 * median:10.2f}")
    print(f"peak process RSS: {peak_rss_mib():.0f} MiB; {peak_rss_mib() - rss_before:.0f} MiB above the peak "
          "before building the networks (imports excluded)")


@torch.no_grad()
def bench_full(frames: int, size: int, repeats: int, device: str = "cuda", dtype: torch.dtype = torch.float16,
               unet_overrides: dict | None = None, guidance_config: GuidanceEncoderConfig | None = None) -> None:
    """Full-size networks (or, for a dry run of this code path, overridden small ones) on `device`."""
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    overrides = unet_overrides or {}
    denoiser = random_init(build_on_meta(lambda: DenoisingUNet3D(UNetConfig(motion=MotionModuleConfig(), **overrides))),
                           device, dtype)
    reference = random_init(build_on_meta(lambda: ReferenceUNet(UNetConfig(out_channels=None, **overrides))), device, dtype)
    encoder = random_init(build_on_meta(lambda: GuidanceEncoder(guidance_config)), device, dtype)
    h = w = size // 8
    clip_dim = denoiser.config.cross_attention_dim
    clip = torch.randn(2, 1, clip_dim, device=device, dtype=dtype)
    context = denoiser.prepare_reference(reference(torch.randn(1, 4, h, w, device=device, dtype=dtype), 0, clip[1:]))
    name = torch.cuda.get_device_name(device) if on_cuda else "CPU dry run"
    weights = sum(t.numel() * t.element_size() for m in (denoiser, reference, encoder)
                  for t in [*m.parameters(), *m.buffers()]) / 2**30
    size_label = "full size" if not overrides else "small config"
    print(f"{name}, {size_label}, {str(dtype).replace('torch.', '')}, {size}x{size} px, {frames} frames; "
          f"weights {weights:.2f} GiB")
    print(f"{'module':<34} {'min s':>8} {'median s':>9} {'peak GiB':>9}")
    guidance = torch.rand(1, 3, frames, size, size, device=device, dtype=dtype)
    cases = [
        ("guidance encoder (1 type)", lambda: encoder(guidance)),
        ("reference UNet + prepare_reference",
         lambda: denoiser.prepare_reference(reference(torch.randn(1, 4, h, w, device=device, dtype=dtype), 0, clip[1:]))),
    ]
    width = denoiser.config.block_out_channels[0]
    for batch in (2, 1):
        sample = torch.randn(batch, 4, frames, h, w, device=device, dtype=dtype)
        features = torch.randn(batch, width, frames, h, w, device=device, dtype=dtype)
        mask = torch.tensor([False, True][-batch:], device=device)
        label = "denoising UNet3D, batch 2 (CFG)" if batch == 2 else "denoising UNet3D, batch 1"
        cases.append((label, lambda s=sample, f=features, m=mask, b=batch: denoiser(s, 500, clip[-b:], f, context, m)))
    for label, fn in cases:
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        fastest, median = timed(fn, repeats, sync)
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:9.2f}" if on_cuda else f"{'-':>9}"
        print(f"{label:<34} {fastest:8.3f} {median:9.3f} {peak}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=512, help="pixels (full-size CUDA run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for the tiny run (1: steadiest figures on a shared machine)")
    parser.add_argument("--dry-run-full-path-on-cpu", action="store_true",
                        help="exercise the GPU section's code on CPU with the tiny config (no figures of interest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_cpu(args.frames, args.repeats)
    if args.dry_run_full_path_on_cpu:
        bench_full(args.frames, 64, 1, "cpu", torch.float32, TINY_UNET, TINY_GUIDANCE)
    if torch.cuda.is_available():
        bench_full(args.frames, args.size, args.repeats)
    else:
        print("CUDA not available: skipped the full-size denoising UNet (fp16, "
              f"{args.size}x{args.size} x {args.frames} frames). Run this script on a GPU machine for those figures.")


if __name__ == "__main__":
    main()
