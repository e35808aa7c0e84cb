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
    .venv/bin/python bench/pipeline.py --lengths 24 96 --steps 1 [--compare REV]

The memory table also checks peak RSS <= baseline + min(cache budget, guidance features of all
frames) + 1.5 x (latents + frames) at every length (baseline: cache off at the shortest length, on
REV with --compare).

Speed (--config mid): the issue's mid-size config (UNet 64/128/128/256, 2 layers per block, 21
motion modules, 4 guidance encoders, 12 frames at 256x256, fp32, CFG 3.5, 2 threads): reference
pass, guidance encoding, denoiser call, decode, whole call at 3 and 20 steps, guidance encodings
per frame (counted); --compare REV times the same on a git worktree of REV under /tmp, job by job
in alternating subprocesses, and prints ratios (this tree / REV). --device cuda adds the full-size
fp16 table (a note without CUDA).

    .venv/bin/python bench/pipeline.py --config mid --compare 58af858 --json mid.json
    .venv/bin/python bench/pipeline.py --config mid --steps 3 --threads 1     # quicker iteration
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    models = _build_models(reference, denoising, encoders, torch.float32, "cpu")
    pipe_dir = FIXTURE / "pipeline"
    return ChampPipeline(models, load_diffusers_vae(pipe_dir / "vae"), load_transformers_clip(pipe_dir / "image_encoder"))


def _models_type():
    """The container of the three networks: `ChampModel` in newer revisions, `ChampModels` before."""
    try:
        from champ_core.models.champ import ChampModel

        return ChampModel
    except ImportError:
        from champ_core.models import ChampModels

        return ChampModels


def mid_pipeline(dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """The issue's mid-size config with random weights (seed 0): UNet widths 64/128/128/256, 2 layers
    per block, SD1.5's block types and 8 heads, 21 motion modules (8 heads), four guidance encoders of
    the released widths with 64 output channels; the fixture's tiny VAE and CLIP (32-d token)."""
    from champ_core.guidance import GUIDANCE_TYPES
    from champ_core.models import (
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
    unet = dict(block_out_channels=(64, 128, 128, 256), layers_per_block=2, cross_attention_dim=32)
    reference = ReferenceUNet(UNetConfig(out_channels=None, **unet)).eval()
    denoising = DenoisingUNet3D(UNetConfig(motion=MotionModuleConfig(), **unet)).eval()
    encoders = {t: GuidanceEncoder(GuidanceEncoderConfig(embedding_channels=64)).eval() for t in GUIDANCE_TYPES}
    models = _build_models(reference, denoising, encoders, dtype, device)
    pipe_dir = FIXTURE / "pipeline"
    return ChampPipeline(models, load_diffusers_vae(pipe_dir / "vae"), load_transformers_clip(pipe_dir / "image_encoder"))


def _build_models(reference, denoising, encoders, dtype, device):
    container = _models_type()
    reference, denoising = reference.to(device, dtype), denoising.to(device, dtype)
    encoders = {k: v.to(device, dtype) for k, v in encoders.items()}
    if container.__name__ == "ChampModel":
        return container(reference, denoising, encoders)
    return container(reference, denoising, encoders, dtype, torch.device(device))


def full_size_pipeline(device: str, dtype: torch.dtype):
    """Released-size networks with random weights (for speed and memory only)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from champ_core.guidance import GUIDANCE_TYPES
    from champ_core.models import (
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
    models = _build_models(reference.eval(), denoising.eval(), {k: v.eval() for k, v in encoders.items()},
                           dtype, device)
    return ChampPipeline(models, DiffusersVAE(vae.eval()), TransformersCLIP(clip.eval()))


class CountingWriter:
    """Stands in for a video writer (takes the uint8 chunks, keeps nothing)."""

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frames: np.ndarray) -> None:
        self.frames += len(frames)


class EncoderCounter:
    """Counts the frames that go through the guidance encoders (forward hooks: works on any revision)."""

    def __init__(self, models) -> None:
        self.counts: dict[int, int] = {}  # encoder -> frames it encoded (the used types run equally often)
        self._handles = [e.register_forward_hook(self._hook) for e in models.guidance_encoders.values()]

    def _hook(self, module, inputs, output) -> None:
        self.counts[id(module)] = self.counts.get(id(module), 0) + int(output.shape[2])

    def per_frame(self, num_frames: int) -> float:
        return max(self.counts.values(), default=0) / num_frames


def _options(steps: int, cache_bytes: int | None):
    from champ_core.pipeline.sampling import SamplingOptions

    extra = {} if cache_bytes is None else {"guidance_cache_bytes": cache_bytes}
    return SamplingOptions(steps=steps, guidance_scale=3.5, **extra)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(args) -> None:
    """One memory measurement in this process; prints one JSON line."""
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
    options = _options(args.steps, args.cache_bytes)
    counter = EncoderCounter(pipe.models)
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
    encoder = next(iter(pipe.models.guidance_encoders.values()))
    feature_elements = encoder.config.embedding_channels * (size // 8) ** 2
    element = 2 if device.startswith("cuda") else 4  # fp16 on CUDA, fp32 on the CPU
    print(json.dumps({
        "frames": args.frames,
        "seconds_total": total,
        "seconds_per_step": float(np.median(step_times)),
        "peak_rss": peak_rss_bytes(),
        "peak_gpu": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None,
        "latent_bytes_per_frame": 4 * (size // 8) ** 2 * 4,
        "frame_bytes_per_frame": 0 if args.stream else size * size * 3 * 4,
        "feature_bytes_per_frame": feature_elements * element,
        "encodings_per_frame": counter.per_frame(args.frames),
    }))


def measure(lengths, extra: list[str], tree: Path | None = None) -> list[dict]:
    rows = []
    for frames in lengths:
        cmd = [sys.executable, __file__, "--child", "--frames", str(frames), *extra]
        if tree is not None:
            cmd += ["--tree", str(tree)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"child for {frames} frames failed")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def cpu_table(args) -> dict:
    """Peak RSS against length; checks peak <= baseline + min(budget, features) + 1.5 x (latents + frames)."""
    from champ_core.pipeline.guidance_cache import resolve_budget

    report = {}
    budget = resolve_budget(torch.device("cpu"), args.cache_bytes).total
    for stream in [series == "stream" for series in args.series]:
        extra = ["--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads),
                 "--guidance-types", *args.guidance_types] + (["--stream"] if stream else [])
        where = "streamed to a writer (nothing kept)" if stream else "frames returned in memory (float32)"
        print(f"# CPU, tiny random networks, {args.size}x{args.size}, CFG 3.5, {args.steps} step(s), "
              f"{args.threads} thread(s), guidance {'+'.join(args.guidance_types)}, {where}, "
              f"load average {os.getloadavg()[0]:.1f}")
        cache = [] if args.cache_bytes is None else ["--cache-bytes", str(args.cache_bytes)]
        rows = measure(args.lengths, extra + cache)
        # the baseline: cache off (constant memory) at the shortest length, on REV when comparing
        base_tree = _worktree(args.compare) if args.compare else None
        base = measure(args.lengths[:1], extra + ["--cache-bytes", "0"], base_tree)[0]
        print(f"baseline ({args.compare or 'this tree'}, cache off, {base['frames']} frames): "
              f"peak RSS {base['peak_rss'] / 2**20:.1f} MiB")
        print(f"{'frames':>7} {'s/step':>8} {'s/step/frame':>13} {'peak RSS MiB':>13} {'bound MiB':>10} "
              f"{'enc/frame':>10}")
        ok = True
        for r in rows:
            grow = r["frames"] - base["frames"]
            bound = (base["peak_rss"] + min(budget, r["frames"] * r["feature_bytes_per_frame"])
                     + 1.5 * grow * (r["latent_bytes_per_frame"] + r["frame_bytes_per_frame"]))
            r["bound"] = bound
            ok &= r["peak_rss"] <= bound
            print(f"{r['frames']:>7} {r['seconds_per_step']:>8.2f} {r['seconds_per_step'] / r['frames']:>13.4f} "
                  f"{r['peak_rss'] / 2**20:>13.1f} {bound / 2**20:>10.1f} {r['encodings_per_frame']:>10.2f}")
        print(f"peak <= baseline + min(budget {budget / 2**30:.2f} GiB, features of all frames) + 1.5 x (latents "
              f"+ frames) at every length: {'yes' if ok else 'NO'}")
        x = np.array([r["frames"] for r in rows], dtype=np.float64)
        y = np.array([r["peak_rss"] for r in rows], dtype=np.float64)
        if len(rows) > 1:
            slope, intercept = np.polyfit(x, y, 1)
            need = rows[0]["latent_bytes_per_frame"] + rows[0]["frame_bytes_per_frame"]
            print(f"fitted peak-RSS slope: {slope / 1024:.1f} KiB/frame (intercept {intercept / 2**20:.0f} MiB); "
                  f"latents + output frames {need / 1024:.1f} KiB/frame, guidance features "
                  f"{rows[0]['feature_bytes_per_frame'] / 1024:.1f} KiB/frame (cached)")
        report["stream" if stream else "memory"] = {"rows": rows, "baseline": base, "within_bound": ok}
    return report


def gpu_table(args, device: str) -> None:
    dtype = "fp16" if device.startswith("cuda") else "fp32"
    print(f"# {device}: full-size random weights, {dtype}, {args.gpu_size}x{args.gpu_size}, {args.gpu_steps} steps, "
          "CFG 3.5, four guidance types")
    if device.startswith("cuda"):
        print(f"# device: {torch.cuda.get_device_name(device)}")
    rows = measure(args.gpu_lengths, ["--full-on", device, "--size", str(args.gpu_size), "--steps",
                                      str(args.gpu_steps), "--threads", str(args.threads),
                                      "--guidance-types", "depth", "normal", "semantic_map", "dwpose"])
    print(f"{'frames':>7} {'s/frame':>8} {'s/step':>8} {'peak GPU GiB':>13} {'peak RSS GiB':>13} {'enc/frame':>10}")
    for r in rows:
        gpu = f"{r['peak_gpu'] / 2**30:.2f}" if r["peak_gpu"] is not None else "-"
        print(f"{r['frames']:>7} {r['seconds_total'] / r['frames']:>8.3f} {r['seconds_per_step']:>8.2f} {gpu:>13} "
              f"{r['peak_rss'] / 2**30:>13.2f} {r['encodings_per_frame']:>10.2f}")
    print("targets (one H100): <= 8 GiB GPU memory at any length, <= 0.25 s per frame")


# ----------------------------------------------------------------------------------------------
# --config mid: stage timings, optionally against a worktree of another revision, interleaved


def _worktree(rev: str) -> Path:
    """A detached `git worktree` of REV under /tmp (created once, reused); the main tree is not touched."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True, check=False)
    if commit.returncode != 0:
        raise SystemExit(f"--compare {rev}: not a revision of this repository ({commit.stderr.strip()})")
    sha = commit.stdout.strip()
    path = Path("/tmp") / f"champ-bench-{sha[:7]}"
    if not (path / "champ_core").is_dir():
        out = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), sha],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"git worktree add {path} {sha} failed: {out.stderr.strip()}")
    return path


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median process CPU seconds) over `repeats` calls after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu_seconds() - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def mid_child(args) -> None:
    """One mid-config measurement ('stages' or 'call') on the champ_core first on sys.path; one JSON line."""
    import champ_core

    torch.set_num_threads(args.threads)
    pipe = mid_pipeline()
    size, frames = args.size, args.frames
    guidance = synthetic_guidance(frames, size)
    image = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    row = {"tree": str(Path(champ_core.__file__).resolve().parents[1]), "what": args.what,
           "load_before": os.getloadavg()[0]}
    counter = EncoderCounter(pipe.models)
    with torch.no_grad():
        if args.what == "stages":
            reference = pipe.encode_reference(image, size, size)
            row["reference_pass"] = _timed(lambda: pipe.reference_context(reference), args.repeats)
            types = tuple(pipe.models.guidance_encoders)
            row["guidance_encoding"] = _timed(lambda: pipe.encode_guidance_window(
                guidance, range(frames), size, size, "squash", types, None), args.repeats)
            features = pipe.encode_guidance_window(guidance, range(frames), size, size, "squash", types, None)
            context = pipe.reference_context(reference)
            clip = reference.clip_embeds.to(pipe.device, pipe.dtype)
            sample = torch.randn((2, 4, frames, size // 8, size // 8), generator=torch.Generator().manual_seed(0))
            args_unet = (sample, torch.tensor(500), torch.cat([torch.zeros_like(clip), clip]),
                         features.expand(2, -1, -1, -1, -1), context, torch.tensor([False, True]))
            row["denoiser_step"] = _timed(lambda: pipe.models.denoising_unet(*args_unet), args.repeats)
            latents = sample[:1]
            row["decode"] = _timed(lambda: list(pipe.decode(latents, chunk_size=args.decode_chunk)), args.repeats)
        elif args.what == "count":  # the encoder count only (it does not depend on the pixel size)
            pipe.animate(image, guidance, size, size, _options(args.steps, args.cache_bytes), return_frames=False)
            row[f"guidance_encodings_per_frame_{args.steps}_steps"] = counter.per_frame(frames)
            row[f"counted_at_{args.steps}_steps"] = size
        else:
            start, cpu = time.perf_counter(), _cpu_seconds()
            result = pipe.animate(image, guidance, size, size, _options(args.steps, args.cache_bytes))
            row[f"whole_call_{args.steps}_steps"] = (time.perf_counter() - start, _cpu_seconds() - cpu)
            assert result.frames.shape[0] == frames
            row[f"guidance_encodings_per_frame_{args.steps}_steps"] = counter.per_frame(frames)
    row["load_after"] = os.getloadavg()[0]
    row["peak_rss"] = peak_rss_bytes()
    print(json.dumps(row))


def _run_mid(tree: Path, what: str, args, steps: int | None = None) -> dict:
    size = args.count_size if what == "count" else args.size
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mid-child", "--tree", str(tree), "--what", what,
           "--threads", str(args.threads), "--size", str(size), "--frames", str(args.frames),
           "--repeats", str(args.repeats), "--decode-chunk", str(args.decode_chunk)]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    if args.cache_bytes is not None and tree == REPO:
        cmd += ["--cache-bytes", str(args.cache_bytes)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"mid-config child ({what}, {tree}) failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


STAGES = ("reference_pass", "guidance_encoding", "denoiser_step", "decode")


def mid_table(args) -> dict:
    trees = {"this": REPO}
    if args.compare:
        trees["compare"] = _worktree(args.compare)
    jobs = [("stages", None)] + [("call", n) for n in args.call_steps] + [("count", n) for n in args.count_steps]
    results: dict[str, dict[str, list]] = {name: {} for name in trees}
    loads = []
    print(f"# mid config: UNet 64/128/128/256, 2 layers per block, 21 motion modules, 4 guidance encoders, "
          f"{args.frames} frames at {args.size}x{args.size}, fp32, CFG 3.5, {args.threads} CPU threads; "
          f"this tree vs {args.compare or '-'}; {args.rounds} round(s), order alternating per job")
    for round_index in range(args.rounds):
        for j, (what, steps) in enumerate(jobs):
            order = list(trees) if (round_index + j) % 2 == 0 else list(reversed(trees))
            if what == "count" and round_index:
                continue  # a count is exact: once is enough
            for name in order:
                row = _run_mid(trees[name], what, args, steps)
                loads += [row["load_before"], row["load_after"]]
                for key, value in row.items():
                    if key.startswith(STAGES) or key.startswith(("whole_call", "guidance_encodings")):
                        results[name].setdefault(key, []).append(value)
                print(f"  {name:>7} {what}{'' if steps is None else f' {steps} steps'}: " + ", ".join(
                    f"{k} {v[0]:.2f} s (CPU {v[1]:.2f} s)" if isinstance(v, list) else f"{k} {v:.2f}"
                    for k, v in row.items() if k.startswith(STAGES + ("whole_call", "guidance_encodings")))
                    + f"; load {row['load_before']:.1f}", flush=True)
    report: dict = {"config": "mid", "threads": args.threads, "frames": args.frames, "size": args.size,
                    "compare": args.compare, "rounds": args.rounds,
                    "load_average_min": min(loads), "load_average_max": max(loads)}
    keys = [k for k in results["this"]]
    print(f"{'stage':<40} {'this s':>9} {'this cpu':>9}" + (f" {'REV s':>9} {'REV cpu':>9} {'ratio':>7} {'cpu ratio':>9}"
                                                             if args.compare else ""))
    for key in keys:
        this = results["this"][key]
        if key.startswith("guidance_encodings"):
            report[key] = float(np.median(this))
            line = f"{key:<40} {report[key]:>9.2f}"
            if args.compare:
                other = float(np.median(results["compare"][key]))
                report[key + "_compare"] = other
                line += f" {other:>9.2f}"
            print(line)
            continue
        wall, cpu = float(np.median([v[0] for v in this])), float(np.median([v[1] for v in this]))
        report[key] = wall
        report[key + "_cpu"] = cpu
        line = f"{key:<40} {wall:>9.2f} {cpu:>9.2f}"
        if args.compare:
            other = results["compare"][key]
            o_wall, o_cpu = float(np.median([v[0] for v in other])), float(np.median([v[1] for v in other]))
            report[key + "_compare"], report[key + "_compare_cpu"] = o_wall, o_cpu
            report["ratio_" + key], report["ratio_" + key + "_cpu"] = wall / o_wall, cpu / o_cpu
            line += f" {o_wall:>9.2f} {o_cpu:>9.2f} {wall / o_wall:>7.3f} {cpu / o_cpu:>9.3f}"
        print(line)
    print(f"load average during the run: {min(loads):.1f} .. {max(loads):.1f} (2 cores)")
    if args.compare:  # the keys are always present; None where not measured in this run
        for key in ("ratio_whole_call_3_steps", "ratio_whole_call_20_steps", "guidance_encodings_per_frame_20_steps"):
            report.setdefault(key, None)
    if args.project_steps and "whole_call_3_steps" in report:
        _project(report, results, args)
    if args.compare:
        for steps, target in ((3, 0.68), (20, 0.58)):
            key = f"ratio_whole_call_{steps}_steps"
            if report.get(key) is not None:
                print(f"target whole call {steps} steps <= {target}x: {report[key]:.3f}x "
                      f"({'met' if report[key] <= target else 'NOT met'}; CPU-time ratio {report[key + '_cpu']:.3f})")
    return report


def _project(report: dict, results: dict, args) -> None:
    """whole(N) ~ whole(3) + (N - 3) x (denoiser step + guidance encoding x re-encodings per step),
    from this run's stage medians (wall and CPU); printed and stored as *_projected, never as measured."""
    for n in args.project_steps:
        for name in results:
            suffix = "" if name == "this" else "_compare"
            encodings = report.get("guidance_encodings_per_frame_3_steps" + suffix, 1.0)
            per_step_encodings = max(0.0, (encodings - 1.0) / 2.0)  # 1 per step uncached, 0 cached
            for kind, index in (("", 0), ("_cpu", 1)):
                step = float(np.median([v[index] for v in results[name]["denoiser_step"]]))
                enc = float(np.median([v[index] for v in results[name]["guidance_encoding"]]))
                whole3 = float(np.median([v[index] for v in results[name]["whole_call_3_steps"]]))
                report[f"whole_call_{n}_steps{suffix}{kind}_projected"] = whole3 + (n - 3) * (step + enc * per_step_encodings)
        if len(results) > 1:
            for kind in ("", "_cpu"):
                this = report[f"whole_call_{n}_steps{kind}_projected"]
                other = report[f"whole_call_{n}_steps_compare{kind}_projected"]
                report[f"ratio_whole_call_{n}_steps{kind}_projected"] = this / other
            print(f"projected whole call {n} steps (not measured): ratio {report[f'ratio_whole_call_{n}_steps_projected']:.3f} "
                  f"(CPU time {report[f'ratio_whole_call_{n}_steps_cpu_projected']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("tiny", "mid"), default="tiny",
                        help="tiny: the memory table (default); mid: stage timings of the issue's mid-size config")
    parser.add_argument("--compare", default=None, metavar="REV",
                        help="also time a git worktree of revision REV (under /tmp), interleaved, and print ratios")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--device", default="cpu", help="cuda: also the full-size fp16 table (a note without CUDA)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[24, 240, 480, 960])
    parser.add_argument("--size", type=int, default=None, help="pixels (default 256)")
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="tiny: denoising steps of the memory runs (default 1); mid: the whole-call step "
                             "counts (default 3 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (tiny default 1, mid default 2)")
    parser.add_argument("--frames", type=int, default=None, help="mid: frames (default 12)")
    parser.add_argument("--rounds", type=int, default=1, help="mid: repetitions of every job per tree")
    parser.add_argument("--count-steps", type=int, nargs="*", default=[],
                        help="mid: step counts whose guidance encodings are counted (not timed) at --count-size")
    parser.add_argument("--count-size", type=int, default=64, help="mid: pixel size of the count-only calls")
    parser.add_argument("--project-steps", type=int, nargs="*", default=[],
                        help="mid: also project the whole call at these step counts from the stage timings "
                             "(labelled as projected; for machines too loaded to time 20 steps)")
    parser.add_argument("--repeats", type=int, default=3, help="mid: timed calls per stage (median)")
    parser.add_argument("--decode-chunk", type=int, default=4, help="mid: VAE decode chunk (frames)")
    parser.add_argument("--cache-bytes", type=int, default=None,
                        help="guidance cache budget of this tree (default: automatic; 0 = off)")
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
    parser.add_argument("--mid-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--what", default="stages", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)  # the child times that tree's champ_core
    mid = args.config == "mid" or args.mid_child
    args.size = args.size or 256
    args.threads = args.threads or (2 if mid else 1)
    if args.child or args.mid_child:
        args.steps = (args.steps or [1])[0]
        args.frames = args.frames or 24
        (mid_child if args.mid_child else run_child)(args)
        return
    report: dict = {}
    if mid:
        args.frames = args.frames or 12
        args.call_steps = args.steps or [3, 20]
        report = mid_table(args)
    else:
        args.steps = (args.steps or [1])[0]
        if not args.skip_cpu:
            report = cpu_table(args)
    device = args.full_on or ("cuda" if args.device.startswith("cuda") or (not mid and torch.cuda.is_available())
                              else None)
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        print("note: CUDA is not available here; the full-size fp16 table (SD1.5 architecture, random weights, "
              "24/120/250 frames at 512x512, 20 steps, CFG 3.5: s/frame and peak GPU memory) runs with "
              "--device cuda on a machine with a GPU")
    elif device is not None:
        gpu_table(args, device)
    elif not mid:
        print("note: CUDA is not available here; the full-size fp16 GPU table (24/120/250 frames at 512x512, "
              "20 steps, CFG 3.5) runs when a GPU is present (or pass --full-on cuda)")
    if args.json:
        path = Path(args.json)
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(json.dumps(report, indent=2, default=float) + "\n")
        tmp.replace(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
