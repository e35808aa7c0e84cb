"""Training step speed with a per-phase breakdown, and peak memory.

    .venv/bin/python bench/train.py                      # tiny stage-1 and stage-2 configs on the CPU
    .venv/bin/python bench/train.py --steps 20 --stage 1
    .venv/bin/python bench/train.py --device cuda        # full SD1.5 architecture, random weights, fp16:
                                                         # stage 1 768 px batch 4, stage 2 512 px x 24 frames
                                                         # batch 1 with gradient checkpointing

Phases of one step (seconds, median over the timed steps): data (dataset items + collate), vae (posterior
of targets and references), clip (image embedding), reference (ReferenceNet + the denoiser's reference
K/V), denoiser (guidance encoders + denoising UNet forward and the loss), backward, optimizer (gradient
clipping + AdamW step). Steps run the trainer's own pieces (`step_inputs`, `ChampModel`, `training_loss`);
without CUDA the `--device cuda` run prints a note and exits. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere without installing
sys.path.insert(0, str(REPO / "tests"))

PHASES = ("data", "vae", "clip", "reference", "denoiser", "backward", "optimizer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times = {p: [] for p in PHASES}
        self._start = 0.0

    def start(self) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def lap(self, phase: str) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.times[phase].append(now - self._start)
        self._start = now


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def run_steps(model, trainable, vae, image_encoder, next_batch, *, stage, steps, device, autocast_dtype=None,
              scale=0.18215) -> dict[str, list[float]]:
    from champ_core.train.objective import (
        compute_snr,
        make_training_scheduler,
        min_snr_weights,
        velocity,
        weighted_mse,
    )
    from champ_core.train.trainer import step_inputs

    scheduler = make_training_scheduler({})
    acp = scheduler.alphas_cumprod.to(device)
    params = [p for _, p in trainable]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    clock = Clock(device)
    for step in range(steps + 1):  # the first step warms up and is not counted
        clock.start()
        batch = next_batch(step)
        clock.lap("data")
        with torch.no_grad():
            latents, noise, timesteps, _, ref_latents, clip, guidance = step_inputs(
                batch, vae, _NoClip(clip_dim(image_encoder)), stage=stage, seed=0, micro_step=step,
                num_train_timesteps=1000, noise_offset=0.05, uncond_ratio=0.0, device=device, scale=scale)
        clock.lap("vae")
        with torch.no_grad():
            from champ_core.train.objective import clip_embeddings

            clip = clip_embeddings(image_encoder, batch["clip_img"].to(device)).float()
        clock.lap("clip")
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            context = model.reference_context(ref_latents, clip)
            clock.lap("reference")
            noisy = torch.sqrt(acp[timesteps]).view(-1, 1, 1, 1, 1) * latents + \
                torch.sqrt(1 - acp[timesteps]).view(-1, 1, 1, 1, 1) * noise
            prediction = model(noisy, timesteps, clip, guidance=guidance, reference=context)
            target = velocity(acp, latents, noise, timesteps)
            weights = min_snr_weights(compute_snr(acp, timesteps), 5.0)
            loss = weighted_mse(prediction, target, weights)[0]
        clock.lap("denoiser")
        (scaler.scale(loss) if scaler else loss).backward()
        clock.lap("backward")
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.lap("optimizer")
    return {p: v[1:] for p, v in clock.times.items()}


class _NoClip:
    """step_inputs embeds CLIP itself; the bench times CLIP as its own phase, so this stands in."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        yield self._p

    def __call__(self, pixel_values):
        class Out:
            image_embeds = torch.zeros(pixel_values.shape[0], self.dim, device=pixel_values.device)
        return Out()


def clip_dim(image_encoder) -> int:
    return int(image_encoder.config.projection_dim)


def report(title: str, times: dict[str, list[float]], device: torch.device) -> None:
    medians = {p: statistics.median(v) for p, v in times.items()}
    total = sum(medians.values())
    parts = ", ".join(f"{p} {medians[p]:.3f}" for p in PHASES)
    print(f"{title}: {1.0 / total:.2f} steps/s ({total:.3f} s/step; {parts}); {peak_memory(device)}")


def bench_tiny(stages, steps: int) -> None:
    from train_run_helpers import TINY_STAGE1, TINY_STAGE2, make_videos

    from champ_core.train import trainer as T
    from champ_core.train.config import config_to_dict, load_config
    from champ_core.train.datasets import build_dataset
    from champ_core.train.trainable import prepare_for_training

    torch.manual_seed(0)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_videos(tmp / "data", videos=2, frames=8)
        stage1_out = None
        for stage in (1, 2):
            path = TINY_STAGE1 if stage == 1 else TINY_STAGE2
            sets = [f"data.video_folder={data}", f"output_dir={tmp / f'run{stage}'}"]
            if stage == 2:
                sets.append(f"stage1_ckpt_dir={stage1_out}")
            config = load_config(f"stage{stage}", path, sets)
            paths = T.resolve_models(config)
            vae, image_encoder = T.load_frozen(paths, torch.float32, device)
            model = T.build_model(config, paths, device)
            if stage == 1:  # stage 2 starts from these weights
                stage1_out = tmp / "run1"
                T.save_weights(model, stage1_out / "weights" / "final", 1, 0)
            if stage not in stages:
                continue
            trainable = prepare_for_training(model, stage, gradient_checkpointing=config.solver.gradient_checkpointing)
            dataset = build_dataset(stage, config_to_dict(config.data), config.seed)
            bs = config.data.train_bs

            def next_batch(i, dataset=dataset, bs=bs):
                items = [dict(dataset[i * bs + j], draw=torch.tensor(i * bs + j)) for j in range(bs)]
                return torch.utils.data.default_collate(items)

            times = run_steps(model, trainable, vae, image_encoder, next_batch, stage=stage, steps=steps,
                              device=device)
            size = config.data.image_size
            frames = "" if stage == 1 else f" x {config.data.sample_frames} frames"
            report(f"tiny stage {stage} CPU ({size} px{frames}, batch {bs}, threads {torch.get_num_threads()})",
                   times, device)


def bench_cuda(stages, steps: int) -> None:
    if not torch.cuda.is_available():
        print("note: --device cuda needs a CUDA GPU; none is available here, so only the CPU figures can be "
              "measured (run without --device)")
        return
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from champ_core.models.champ import ChampModel
    from champ_core.models.config import GuidanceEncoderConfig, MotionModuleConfig, UNetConfig
    from champ_core.models.guidance_encoder import GuidanceEncoder
    from champ_core.models.unet import DenoisingUNet3D, ReferenceUNet
    from champ_core.train.trainable import prepare_for_training

    device = torch.device("cuda")
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2)
    vae = vae.to(device, torch.float16).eval().requires_grad_(False)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                          num_attention_heads=16, patch_size=14, projection_dim=768))
    clip = clip.to(device, torch.float16).eval().requires_grad_(False)
    for stage in stages:
        torch.cuda.reset_peak_memory_stats(device)
        motion = MotionModuleConfig() if stage == 2 else None
        model = ChampModel(ReferenceUNet(UNetConfig(out_channels=None)), DenoisingUNet3D(UNetConfig(motion=motion)),
                           {t: GuidanceEncoder(GuidanceEncoderConfig()) for t in
                            ("depth", "normal", "semantic_map", "dwpose")}).to(device)
        trainable = prepare_for_training(model, stage, gradient_checkpointing=stage == 2)
        size, frames, bs = (768, 1, 4) if stage == 1 else (512, 24, 1)

        def next_batch(i, size=size, frames=frames, bs=bs, stage=stage):
            g = torch.Generator().manual_seed(i)
            ref = torch.rand(bs, 3, size, size, generator=g) * 2 - 1
            clip_img = torch.randn(bs, 3, 224, 224, generator=g)
            draws = torch.arange(i * bs, (i + 1) * bs)
            if stage == 1:
                return {"tgt_img": torch.rand(bs, 3, size, size, generator=g) * 2 - 1,
                        "tgt_guid": torch.rand(bs, 12, size, size, generator=g), "ref_img": ref,
                        "clip_img": clip_img, "draw": draws}
            return {"tgt_vid": torch.rand(bs, frames, 3, size, size, generator=g) * 2 - 1,
                    "tgt_guid_vid": torch.rand(bs, frames, 12, size, size, generator=g), "ref_img": ref,
                    "clip_img": clip_img, "draw": draws}

        times = run_steps(model, trainable, vae, clip, next_batch, stage=stage, steps=steps, device=device,
                          autocast_dtype=torch.float16)
        what = f"{size} px batch {bs}" if stage == 1 else f"{size} px x {frames} frames batch {bs}, checkpointing"
        report(f"SD1.5 stage {stage} CUDA fp16 ({what})", times, device)
        del model, trainable
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--stage", type=int, choices=(1, 2), nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage (after one warm-up step)")
    args = parser.parse_args()
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.device == "cuda":
        bench_cuda(args.stage, args.steps)
    else:
        bench_tiny(args.stage, args.steps)


if __name__ == "__main__":
    main()
