"""Pipeline benchmark: time per denoising step and memory against video length.

CPU part (always): tiny random networks (with the fixture's tiny VAE and CLIP from
tests/fixtures/champ_parity, or CHAMP_PARITY_DIR) at --size (default 256x256), CFG 3.5, one fresh subprocess per length so peak RSS belongs to that
length alone. Prints per length: seconds per denoising step (all windows of one step), peak RSS,
then the least-squares slope of peak RSS over frames (bytes per frame) next to the bytes per frame
the latents and the returned output frames need (float32). The pipeline is meant to keep the
slope within 1.5x of that figure (constant memory apart from latents and returned frames).

GPU part (when CUDA is available, or with --full-on DEVICE): full-size networks with random
weights (SD1.5 UNets + motion modules, four guidance encoders, SD VAE, CLIP ViT-L/14), fp16,
512x512, 20 steps, CFG 3.5: seconds per frame and peak GPU memory at 24, 120 and 250 frames.

    .venv/bin/python bench/pipeline.py                      # CPU table (+ GPU table if CUDA)
    .venv/bin/python bench/pipeline.py --lengths 24 96 --steps 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIXTURE = Path(os.environ.get("CHAMP_PARITY_DIR", REPO / "tests" / "fixtures" / "champ_parity"))


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def synthetic_guidance(num_frames: int, size: int, types=None):
    """Guidance layers that cost no memory per frame (one frame broadcast along time)."""
    from champ_core.guidance import GUIDANCE_TYPES
    from champ_core.pipeline.inputs import ArrayGuidance

    rng = np.random.default_rng(0)
    layers = {}
    for kind in types or GUIDANCE_TYPES:
        frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        layers[kind] = np.broadcast_to(frame, (num_frames, size, size, 3))
    return ArrayGuidance(layers)


def tiny_pipeline():
    """Small random networks (the fixture's VAE and CLIP); few, wide heads so CPU attention is cheap.

    Attention only at the coarser of two UNet levels (16x16 tokens at 256x256), 32 channels.
    """
    from champ_core.guidance import GUIDANCE_TYPES
    from champ_core.models import (
        ChampModels,
        DenoisingUNet3D,
        GuidanceEncoder,
        GuidanceEncoderConfig,
        MotionModuleConfig,
        ReferenceUNet,
        UNetConfig,
    )
    from champ_core.pipeline.codecs import load_diffusers_vae, load_transformers_clip
    from champ_core.pipeline.sampling import ChampPipeline

    torch.manual_seed(0)
    unet = dict(block_out_channels=(32, 32), down_cross_attention=(False, True), up_cross_attention=(True, False),
                layers_per_block=1, cross_attention_dim=32, num_attention_heads=2)
    reference = ReferenceUNet(UNetConfig(out_channels=None, **unet)).eval()
    denoising = DenoisingUNet3D(UNetConfig(motion=MotionModuleConfig(num_attention_heads=2), **unet)).eval()
    encoder_config = GuidanceEncoderConfig(embedding_channels=32, block_out_channels=(8, 16, 32, 32),
                                           num_attention_heads=1)
    encoders = {t: GuidanceEncoder(encoder_config).eval() for t in GUIDANCE_TYPES}
    models = ChampModels(reference, denoising, encoders, torch.float32, torch.device("cpu"))
    pipe_dir = FIXTURE / "pipeline"
    return ChampPipeline(models, load_diffusers_vae(pipe_dir / "vae"), load_transformers_clip(pipe_dir / "image_encoder"))


def full_size_pipeline(device: str, dtype: torch.dtype):
    """Released-size networks with random weights (for speed and memory only)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from champ_core.guidance import GUIDANCE_TYPES
    from champ_core.models import (
        ChampModels,
        DenoisingUNet3D,
        GuidanceEncoder,
        GuidanceEncoderConfig,
        MotionModuleConfig,
        ReferenceUNet,
        UNetConfig,
    )
    from champ_core.pipeline.codecs import DiffusersVAE, TransformersCLIP
    from champ_core.pipeline.sampling import ChampPipeline

    torch.manual_seed(0)
    with torch.device(device):
        reference = ReferenceUNet(UNetConfig(out_channels=None)).to(dtype)
        denoising = DenoisingUNet3D(UNetConfig(motion=MotionModuleConfig())).to(dtype)
        encoders = {t: GuidanceEncoder(GuidanceEncoderConfig()).to(dtype) for t in GUIDANCE_TYPES}
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            scaling_factor=0.18215,
        ).to(dtype)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            patch_size=14, image_size=224, projection_dim=768)).to(dtype)
    models = ChampModels(reference.eval(), denoising.eval(), {k: v.eval() for k, v in encoders.items()},
                         dtype, torch.device(device))
    return ChampPipeline(models, DiffusersVAE(vae.eval()), TransformersCLIP(clip.eval()))


class CountingWriter:
    """Stands in for a video writer (takes the uint8 chunks, keeps nothing)."""

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frames: np.ndarray) -> None:
        self.frames += len(frames)


def run_child(args) -> None:
    """One measurement in this process; prints one JSON line."""
    from champ_core.pipeline.sampling import SamplingOptions

    torch.set_num_threads(args.threads)
    if args.full_on:
        device = args.full_on
        pipe = full_size_pipeline(device, torch.float16 if device.startswith("cuda") else torch.float32)
    else:
        device = "cpu"
        pipe = tiny_pipeline()
    size = args.size
    guidance = synthetic_guidance(args.frames, size, args.guidance_types)
    reference = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    options = SamplingOptions(steps=args.steps, guidance_scale=3.5)
    step_times: list[float] = []
    last = [time.perf_counter()]

    def progress(event):
        if event.phase == "denoise" and event.window + 1 == event.num_windows:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            now = time.perf_counter()
            step_times.append(now - last[0])
            last[0] = now
        elif event.phase == "reference" and event.done == 1:
            last[0] = time.perf_counter()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    writer = CountingWriter() if args.stream else None
    result = pipe.animate(reference, guidance, size, size, options, progress=progress,
                          return_frames=not args.stream, writer=writer)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    assert (writer.frames if args.stream else result.frames.shape[0]) == args.frames
    print(json.dumps({
        "frames": args.frames,
        "seconds_total": total,
        "seconds_per_step": float(np.median(step_times)),
        "peak_rss": peak_rss_bytes(),
        "peak_gpu": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None,
        "latent_bytes_per_frame": 4 * (size // 8) ** 2 * 4,
        "frame_bytes_per_frame": 0 if args.stream else size * size * 3 * 4,
    }))


def measure(lengths, extra: list[str]) -> list[dict]:
    rows = []
    for frames in lengths:
        cmd = [sys.executable, __file__, "--child", "--frames", str(frames), *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"child for {frames} frames failed")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def cpu_table(args) -> None:
    for stream in [series == "stream" for series in args.series]:
        extra = ["--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads),
                 "--guidance-types", *args.guidance_types] + (["--stream"] if stream else [])
        where = "streamed to a writer (nothing kept)" if stream else "frames returned in memory (float32)"
        print(f"# CPU, tiny random networks, {args.size}x{args.size}, CFG 3.5, {args.steps} step(s), "
              f"{args.threads} thread(s), guidance {'+'.join(args.guidance_types)}, {where}")
        rows = measure(args.lengths, extra)
        print(f"{'frames':>7} {'s/step':>8} {'s/step/frame':>13} {'peak RSS MiB':>13}")
        for r in rows:
            print(f"{r['frames']:>7} {r['seconds_per_step']:>8.2f} {r['seconds_per_step'] / r['frames']:>13.4f} "
                  f"{r['peak_rss'] / 2**20:>13.1f}")
        x = np.array([r["frames"] for r in rows], dtype=np.float64)
        y = np.array([r["peak_rss"] for r in rows], dtype=np.float64)
        slope, intercept = np.polyfit(x, y, 1)
        need = rows[0]["latent_bytes_per_frame"] + rows[0]["frame_bytes_per_frame"]
        print(f"fitted peak-RSS slope: {slope / 1024:.1f} KiB/frame (intercept {intercept / 2**20:.0f} MiB)")
        print(f"latents + output frames need: {need / 1024:.1f} KiB/frame (latents "
              f"{rows[0]['latent_bytes_per_frame'] / 1024:.1f} + frames {rows[0]['frame_bytes_per_frame'] / 1024:.1f})")
        print(f"slope / need = {slope / need:.2f}" + ("" if stream else " (target <= 1.5)"))


def gpu_table(args, device: str) -> None:
    dtype = "fp16" if device.startswith("cuda") else "fp32"
    print(f"# {device}: full-size random weights, {dtype}, {args.gpu_size}x{args.gpu_size}, {args.gpu_steps} steps, "
          "CFG 3.5, four guidance types")
    if device.startswith("cuda"):
        print(f"# device: {torch.cuda.get_device_name(device)}")
    rows = measure(args.gpu_lengths, ["--full-on", device, "--size", str(args.gpu_size), "--steps",
                                      str(args.gpu_steps), "--threads", str(args.threads),
                                      "--guidance-types", "depth", "normal", "semantic_map", "dwpose"])
    print(f"{'frames':>7} {'s/frame':>8} {'s/step':>8} {'peak GPU GiB':>13} {'peak RSS GiB':>13}")
    for r in rows:
        gpu = f"{r['peak_gpu'] / 2**30:.2f}" if r["peak_gpu"] is not None else "-"
        print(f"{r['frames']:>7} {r['seconds_total'] / r['frames']:>8.3f} {r['seconds_per_step']:>8.2f} {gpu:>13} "
              f"{r['peak_rss'] / 2**30:>13.2f}")
    print("targets (one H100): <= 8 GiB GPU memory at any length, <= 0.25 s per frame")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[24, 240, 480, 960])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--guidance-types", nargs="+", default=["depth"],
                        help="guidance layers for the CPU table (default depth only, to keep it short)")
    parser.add_argument("--gpu-lengths", type=int, nargs="+", default=[24, 120, 250])
    parser.add_argument("--gpu-size", type=int, default=512)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--full-on", default=None, help="run the full-size table on this device (e.g. cuda, cpu)")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--series", nargs="+", choices=("memory", "stream"), default=["memory"],
                        help="memory: frames returned in memory (the target); stream: frames streamed to a writer")
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=24, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    if not args.skip_cpu:
        cpu_table(args)
    device = args.full_on or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print("note: CUDA is not available here; the full-size fp16 GPU table (24/120/250 frames at 512x512, "
              "20 steps, CFG 3.5) runs when a GPU is present (or pass --full-on cuda)")
    else:
        gpu_table(args, device)


if __name__ == "__main__":
    main()
