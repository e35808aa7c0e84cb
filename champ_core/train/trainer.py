"""The training loop for both stages, on Accelerate (DDP by default; DeepSpeed ZeRO-2 via its config).

`train(config, resume=None)` runs one stage from a `TrainConfig` (config.py). What happens, in order:

1. cheap checks (precision vs device, optional packages), then the dataset schema check
   (`layout.check_dataset`): a malformed dataset stops here, before any model is loaded;
2. VAE and CLIP image encoder (frozen, `weight_dtype`), the `ChampModel` from the stage's starting
   point, the stage's trainable parameters, AdamW (or 8-bit AdamW), the LR schedule;
3. optionally the state of a checkpoint (`--resume latest|STEP`; state.py: safetensors + JSON only);
4. the loop: per optimizer step, `gradient_accumulation_steps` micro-batches per process.

Determinism and data order. The dataset item of draw number g depends only on (seed, g)
(datasets.py). Process r of W takes, in micro-step m, the draws (m*W + r)*B + [0, B); so W processes
with batch B see exactly the draws one process with batch W*B sees. Every random number of a
sample (VAE posterior sample, noise, noise offset, timestep, reference latent sample) comes from a
generator seeded by (seed, g), and the per-batch classifier-free-dropout coin from one seeded by
(seed, micro-step): the same on every process. Resuming therefore only needs the step number
(plus the model, optimizer, LR scheduler and RNG state, all saved in safe formats), and a resumed
run repeats an uninterrupted one bit for bit.

Outputs under `output_dir` (docs/training.md): `checkpoints/checkpoint-<step>/` (resumable
state, rotated), `weights/step-<step>/` and `weights/final/` (released file names + safetensors,
with the VAE and image encoder next to them for `animate --weights`), `log.jsonl`,
`tensorboard/`, `validation/step-<step>/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import state as st
from .config import ConfigError, Stage2Config, TrainConfig, config_to_dict

logger = logging.getLogger("champ_core.train")

LOG_FILE = "log.jsonl"
WEIGHTS_DIR = "weights"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
VALIDATION_DIR = "validation"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message is one line saying what to do."""


class Interrupted(Exception):
    """Raised after a Ctrl-C (SIGINT/SIGTERM) once the resumable checkpoint is written."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted at step {step}; state saved to {checkpoint}; continue with --resume latest")
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    step: int
    output_dir: Path
    final_weights: Path | None
    losses: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Seeds


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts (stable across processes and machines)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def sample_generator(seed: int, draw: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(derived_seed(seed, "sample", draw))


def batch_rng(seed: int, micro_step: int) -> random.Random:
    return random.Random(derived_seed(seed, "uncond", micro_step))


class RankDrawSampler(torch.utils.data.Sampler):
    """Draw numbers of one process: micro-step m gives (m*W + r)*B + [0, B), from `start_micro` on."""

    def __init__(self, start_micro: int, num_micro: int, batch: int, rank: int, world: int) -> None:
        self.start, self.num, self.batch, self.rank, self.world = start_micro, num_micro, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        for m in range(self.start, self.start + self.num):
            base = (m * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return self.num * self.batch


class _WithDraw(torch.utils.data.Dataset):
    """Adds the draw number to each item (key `draw`), so per-sample random numbers can follow it."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, draw: int) -> dict:
        item = dict(self.dataset[draw])
        item["draw"] = torch.tensor(draw, dtype=torch.long)
        return item


# ----------------------------------------------------------------------------------------------
# One step's inputs


@torch.no_grad()
def step_inputs(batch: Mapping[str, torch.Tensor], vae, image_encoder, *, stage: int, seed: int,
                micro_step: int, num_train_timesteps: int, noise_offset: float, uncond_ratio: float,
                device: torch.device, scale: float):
    """Latents, noise, timesteps, the dropout coin, reference latents, CLIP embeddings and guidance.

    The reference's draws per sample, in its order (target posterior sample, noise, offset,
    timestep, reference posterior sample), each sample from its own generator.
    """
    from .objective import (
        clip_embeddings,
        clip_input_for_step,
        draw_uncond,
        noise_with_offset,
        sample_latents,
        vae_posterior,
    )

    draws = [int(d) for d in batch["draw"]]
    if stage == 1:
        target = batch["tgt_img"].to(device)
        guidance = batch["tgt_guid"].unsqueeze(2)  # (B, 3G, 1, H, W)
        frames = 1
    else:
        video = batch["tgt_vid"].to(device)  # (B, F, 3, H, W)
        frames = video.shape[1]
        target = video.flatten(0, 1)
        guidance = batch["tgt_guid_vid"].transpose(1, 2)  # (B, 3G, F, H, W)
    mean, std = vae_posterior(vae, target)
    ref_mean, ref_std = vae_posterior(vae, batch["ref_img"].to(device))
    mean = mean.float().unflatten(0, (len(draws), frames))  # (B, F, 4, h, w)
    std = std.float().unflatten(0, (len(draws), frames))
    latents, noises, timesteps, ref_latents = [], [], [], []
    for i, draw in enumerate(draws):
        g = sample_generator(seed, draw)
        eps = torch.randn(mean[i].shape, generator=g)
        x0 = sample_latents(mean[i], std[i], eps.to(device), scale).transpose(0, 1)  # (4, F, h, w)
        base = torch.randn(x0.shape, generator=g)
        offset = torch.randn((x0.shape[0], 1, 1, 1), generator=g) if noise_offset > 0 else None
        noise = noise_with_offset(base.to(device), None if offset is None else offset.to(device), noise_offset)
        t = torch.randint(0, num_train_timesteps, (1,), generator=g)
        ref_eps = torch.randn(ref_mean[i].shape, generator=g)
        latents.append(x0)
        noises.append(noise)
        timesteps.append(t)
        ref_latents.append(sample_latents(ref_mean[i].float(), ref_std[i].float(), ref_eps.to(device), scale))
    uncond = draw_uncond(uncond_ratio, batch_rng(seed, micro_step))
    clip = clip_embeddings(image_encoder, clip_input_for_step(batch["clip_img"].to(device), uncond)).float()
    return (torch.stack(latents), torch.stack(noises), torch.cat(timesteps).to(device), uncond,
            torch.stack(ref_latents), clip, guidance.to(device).float())


# ----------------------------------------------------------------------------------------------
# Interruption


class StopFlag:
    """SIGINT / SIGTERM set a flag; the loop checks it between steps (all processes agree on it)."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.raised and signum == signal.SIGINT:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.raised = True
        logger.warning("stop requested: finishing this step and writing a checkpoint")

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------------------------
# Set-up helpers


def check_precision(config: TrainConfig, cuda: bool) -> None:
    if not cuda:
        if config.solver.mixed_precision == "fp16":
            raise ConfigError(f"{config.source}: solver.mixed_precision fp16 needs a CUDA GPU; on the CPU use "
                              "--set solver.mixed_precision=bf16 (or no)")
        if config.weight_dtype == "fp16":
            raise ConfigError(f"{config.source}: weight_dtype fp16 needs a CUDA GPU; on the CPU use "
                              "--set weight_dtype=fp32 (or bf16)")


def _require_bitsandbytes():
    try:
        import bitsandbytes
    except ImportError:
        raise TrainingError("solver.use_8bit_adam needs the bitsandbytes package, which is not installed: "
                            "pip install bitsandbytes, or --set solver.use_8bit_adam=false") from None
    return bitsandbytes


def make_optimizer(config: TrainConfig, parameters, lr: float):
    solver = config.solver
    kwargs = dict(lr=lr, betas=(solver.adam_beta1, solver.adam_beta2), weight_decay=solver.adam_weight_decay,
                  eps=solver.adam_epsilon)
    if solver.use_8bit_adam:
        return _require_bitsandbytes().optim.AdamW8bit(parameters, **kwargs)
    return torch.optim.AdamW(parameters, **kwargs)


def make_lr_scheduler(config: TrainConfig, optimizer):
    from diffusers.optimization import get_scheduler

    solver = config.solver
    return get_scheduler(solver.lr_scheduler, optimizer=optimizer, num_warmup_steps=solver.lr_warmup_steps,
                         num_training_steps=solver.max_train_steps, num_cycles=solver.lr_num_cycles)


def _quiet_libraries() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def resolve_models(config: TrainConfig) -> dict[str, Path]:
    from .tiny import default_cache_dir, resolve_model_path

    cache = default_cache_dir(config.output_dir)
    out = {}
    for key in ("base_model_path", "vae_model_path", "image_encoder_path"):
        value = getattr(config, key)
        if isinstance(config, Stage2Config) and key == "base_model_path":
            out[key] = Path(value)  # stage 2 starts from stage 1's weights; the base path is not read
            continue
        path = resolve_model_path(key, value, config.tiny_model, cache)
        if not path.is_dir():
            raise TrainingError(f"{key}: folder {path} does not exist ({config.source}); put the model there or "
                                "point the key at it with --set")
        out[key] = path
    return out


def load_frozen(paths: Mapping[str, Path], dtype: torch.dtype, device: torch.device):
    from ..models.external import load_image_encoder, load_vae

    return load_vae(paths["vae_model_path"], dtype, device), load_image_encoder(paths["image_encoder_path"], dtype, device)


def champ_config(config: TrainConfig, base_unet_dir: Path):
    """The networks' `ChampConfig`: both UNets from the SD1.5 folder's unet/config.json, the guidance
    encoders from `guidance_encoder_kwargs`."""
    from ..models.config import ChampConfig, guidance_encoder_config_from_reference
    from .starting import sd15_champ_config

    guidance = guidance_encoder_config_from_reference(config_to_dict(config.guidance_encoder_kwargs))
    if not (base_unet_dir / "config.json").is_file():
        raise TrainingError(f"base_model_path: {base_unet_dir / 'config.json'} does not exist; base_model_path must "
                            "be an SD1.5 folder in diffusers format (unet/config.json + unet/diffusion_pytorch_model"
                            ".safetensors)")
    return sd15_champ_config(base_unet_dir, ChampConfig(guidance_encoder=guidance))


def stage1_weights_dir(config: Stage2Config) -> Path:
    """stage1_ckpt_dir (a stage-1 output_dir, or one of its weights folders) + stage1_ckpt_step."""
    root = Path(config.stage1_ckpt_dir)
    if not config.stage1_ckpt_dir or not root.is_dir():
        raise TrainingError(f"stage1_ckpt_dir {config.stage1_ckpt_dir!r} is not a folder ({config.source}); "
                            "pass --set stage1_ckpt_dir=OUTPUT_DIR_OF_STAGE_1")
    weights = root / WEIGHTS_DIR if (root / WEIGHTS_DIR).is_dir() else root
    if any(weights.glob("denoising_unet.*")):
        return weights  # a weights folder itself
    step = config.stage1_ckpt_step
    if step == "latest":
        if (weights / "final").is_dir():
            return weights / "final"
        steps = sorted(int(p.name[5:]) for p in weights.glob("step-*") if p.name[5:].isdigit())
        if not steps:
            raise TrainingError(f"stage1_ckpt_dir {root} holds no stage-1 weights (weights/final/ or "
                                "weights/step-N/); train stage 1 first")
        return weights / f"step-{steps[-1]}"
    folder = weights / f"step-{step}"
    if not folder.is_dir():
        raise TrainingError(f"stage1_ckpt_step {step}: {folder} does not exist; use 'latest' or a saved step")
    return folder


def check_motion_kwargs(config: Stage2Config) -> None:
    """The motion modules are AnimateDiff v2's ("Vanilla"); other architectures are refused by name."""
    from ..models.config import MotionModuleConfig, unet_config_from_diffusers

    kwargs = config_to_dict(config.unet_additional_kwargs)
    if not kwargs["use_motion_module"] or kwargs["motion_module_type"] != "Vanilla":
        raise ConfigError(f"{config.source}: unet_additional_kwargs must keep use_motion_module: true and "
                          "motion_module_type: Vanilla (AnimateDiff v2 motion modules, as the reference)")
    stub = {"block_out_channels": [32], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]}
    motion = unet_config_from_diffusers({**stub, **kwargs}, motion=True, output_head=True).motion
    if motion != MotionModuleConfig():
        raise ConfigError(f"{config.source}: unet_additional_kwargs.motion_module_kwargs must be the reference's "
                          f"values (8 heads, 1 transformer block, 2 Temporal_Self blocks, 32 positions); got {motion}")


def build_model(config: TrainConfig, paths: Mapping[str, Path], device: torch.device):
    """The stage's `ChampModel` (float32 master weights) from its starting point."""
    from .starting import build_champ_model_for_stage

    types = list(config.data.guids)
    if isinstance(config, Stage2Config):
        check_motion_kwargs(config)
        mm_path = Path(config.mm_path) if config.mm_path else None
        if mm_path is not None and not mm_path.is_file():
            raise TrainingError(f"mm_path {mm_path} does not exist ({config.source}); put the AnimateDiff file "
                                "(mm_sd_v15_v2.ckpt) there, or --set mm_path= for fresh motion modules")
        return build_champ_model_for_stage(2, None, guidance_types=types, stage1_dir=stage1_weights_dir(config),
                                           stage1_step=None, motion_module_path=mm_path, seed=config.seed,
                                           dtype=torch.float32, device=device)
    unet_dir = paths["base_model_path"] / "unet"
    return build_champ_model_for_stage(1, champ_config(config, unet_dir), guidance_types=types,
                                       sd15_unet_dir=unet_dir, seed=config.seed, dtype=torch.float32, device=device)


def save_weights(model, folder: Path, stage: int, step: int) -> list[Path]:
    from .starting import save_champ_weights

    return save_champ_weights(model, folder, stage=stage)


def _weights_extras(output_dir: Path, paths: Mapping[str, Path]) -> None:
    """VAE and image encoder next to the weights folders, so `animate --weights weights/final` works."""
    weights = output_dir / WEIGHTS_DIR
    for key, name in (("vae_model_path", "sd-vae-ft-mse"), ("image_encoder_path", "image_encoder")):
        target = weights / name
        if target.exists() or target.is_symlink():
            continue
        source = Path(paths[key]).resolve()
        weights.mkdir(parents=True, exist_ok=True)
        size = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
        if size < 64 * 2**20:  # small (the tiny models): a copy keeps the output self-contained
            from ..atomic import atomic_dir

            with atomic_dir(target, overwrite=True) as tmp:
                shutil.copytree(source, tmp, dirs_exist_ok=True)
        else:  # a real VAE / CLIP: linked, not copied
            try:
                target.symlink_to(source, target_is_directory=True)
            except OSError:
                logger.info("could not link %s to %s; pass that folder next to the weights yourself", target, source)


# ----------------------------------------------------------------------------------------------
# The loop


class Trainer:
    def __init__(self, config: TrainConfig, resume: str | None = None, show_progress: bool = True,
                 on_step: Callable[[int, float], None] | None = None) -> None:
        self.config = config
        self.resume = resume or (config.resume_from_checkpoint or None)
        self.show_progress = show_progress
        self.on_step = on_step
        self.stage = 1 if config.stage == "stage1" else 2
        self.output_dir = Path(config.output_dir)

    # -- preparation -----------------------------------------------------------------------
    def _check_data(self) -> None:
        from .layout import check_dataset

        data = self.config.data
        if not data.video_folder:
            raise ConfigError(f"{self.config.source}: data.video_folder is empty; pass --set data.video_folder=DIR "
                              "(a folder in the layout of docs/training.md)")
        summary = check_dataset(data.video_folder, guids=tuple(data.guids), data_parts=tuple(data.data_parts),
                                bbox_crop=data.bbox_crop)
        logger.info("dataset: %s", summary.line())

    def _dataset(self):
        from .datasets import build_dataset

        return build_dataset(self.stage, config_to_dict(self.config.data), self.config.seed,
                             max_skip_fraction=self.config.max_bad_sample_fraction)

    # -- checkpoints -----------------------------------------------------------------------
    def _save_checkpoint(self, accelerator, model, optimizer, lr_scheduler, step: int) -> Path:
        root = self.output_dir / CHECKPOINTS_DIR
        final = st.checkpoint_dir(root, step)
        staging = root / f".{final.name}.partial"
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        accelerator.wait_for_everyone()
        st.write_rng(staging, accelerator.process_index)  # every rank: its own generators
        sharded = _is_deepspeed(accelerator)
        if sharded:  # ZeRO: every rank holds (and writes) its own optimizer shard; none waits on another
            st.write_optimizer(staging, _optimizer_state(optimizer), None, rank=accelerator.process_index)
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            st.write_model(staging, unwrapped.state_dict())
            st.write_optimizer(staging, None if sharded else _optimizer_state(optimizer), lr_scheduler.state_dict())
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            st.save_json(staging / st.TRAINER_JSON, {
                "version": st.FORMAT_VERSION, "stage": self.config.stage, "step": step, "sharded_optimizer": sharded,
                "world_size": accelerator.num_processes, "train_bs": self.config.data.train_bs,
                "gradient_accumulation_steps": self.config.solver.gradient_accumulation_steps,
                "seed": self.config.seed, "config": config_to_dict(self.config),
            })
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            for removed in st.rotate_checkpoints(root, self.config.checkpoints_total_limit):
                logger.info("removed old checkpoint %s", removed)
        accelerator.wait_for_everyone()
        return final

    def _load_checkpoint(self, accelerator, model, optimizer, lr_scheduler) -> int:
        folder = st.find_checkpoint(self.output_dir / CHECKPOINTS_DIR, str(self.resume))
        state = st.read_checkpoint(folder, accelerator.process_index)
        trainer = state["trainer"]
        mismatched = [(key, trainer.get(key), want) for key, want in (
            ("stage", self.config.stage), ("world_size", accelerator.num_processes),
            ("train_bs", self.config.data.train_bs),
            ("gradient_accumulation_steps", self.config.solver.gradient_accumulation_steps),
            ("seed", self.config.seed)) if trainer.get(key) != want]
        if mismatched:
            key, had, want = mismatched[0]
            raise TrainingError(f"cannot resume from {folder}: it was written with {key} = {had}, this run has "
                                f"{want}; resume with the same settings (or start a new output_dir)")
        unwrapped = accelerator.unwrap_model(model)
        try:
            unwrapped.load_state_dict(state["model"], strict=True)
        except RuntimeError as exc:
            raise TrainingError(f"{folder / st.MODEL_FILE} does not match this model: "
                                f"{str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}") from None
        if _is_deepspeed(accelerator):  # ZeRO-2 reads the shard of this rank from a per-rank list
            shards = [None] * accelerator.num_processes
            shards[accelerator.process_index] = state["optimizer"]
            _load_optimizer_state(optimizer, shards)
        else:
            _load_optimizer_state(optimizer, state["optimizer"])
        if state["scheduler"] is not None:
            lr_scheduler.load_state_dict(state["scheduler"])
        st.set_rng_state(*state["rng"])
        logger.info("resumed from %s (step %d)", folder, trainer["step"])
        return int(trainer["step"])

    # -- logging ---------------------------------------------------------------------------
    def _open_log(self, start_step: int):
        path = self.output_dir / LOG_FILE
        if path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if entry.get("step", 0) <= start_step:
                    kept.append(line)
            path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        return open(path, "a", encoding="utf-8")

    def _save_weights(self, accelerator, model, name: str, step: int, paths) -> Path | None:
        target = self.output_dir / WEIGHTS_DIR / name
        if accelerator.is_main_process:
            save_weights(accelerator.unwrap_model(model), target, stage=self.stage, step=step)
            _weights_extras(self.output_dir, paths)
        accelerator.wait_for_everyone()
        return target

    # -- main ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        from .objective import make_training_scheduler, training_loss
        from .trainable import prepare_for_training

        config, solver = self.config, self.config.solver
        cuda = torch.cuda.is_available()
        check_precision(config, cuda)
        if solver.use_8bit_adam:
            _require_bitsandbytes()
        if self.resume:  # a missing checkpoint is found out before anything is loaded
            st.find_checkpoint(self.output_dir / CHECKPOINTS_DIR, str(self.resume))
        self._check_data()  # before any model is loaded
        _quiet_libraries()

        accelerator = Accelerator(
            cpu=not cuda,  # with `accelerate launch --multi_gpu` and no GPU: one CPU process each (gloo)
            mixed_precision=solver.mixed_precision,
            gradient_accumulation_steps=solver.gradient_accumulation_steps,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=self.stage == 1)],
        )
        device = accelerator.device
        main = accelerator.is_main_process
        if main:
            logger.info("accelerate: %d process%s (%s), device %s, mixed precision %s", accelerator.num_processes,
                        "" if accelerator.num_processes == 1 else "es", accelerator.distributed_type.value, device,
                        solver.mixed_precision)
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if main:
            paths = resolve_models(config)  # builds the tiny models once, before the other ranks read them
        accelerator.wait_for_everyone()
        if not main:
            paths = resolve_models(config)
        weight_dtype = DTYPES[config.weight_dtype]
        vae, image_encoder = load_frozen(paths, weight_dtype, device)
        scale = float(getattr(vae.config, "scaling_factor", 0.18215))
        model = build_model(config, paths, device)
        trainable = prepare_for_training(model, self.stage, gradient_checkpointing=solver.gradient_checkpointing,
                                         reference_bank_fp32=config.reference_bank_fp32)
        # attention always runs through PyTorch SDPA: enable_xformers_memory_efficient_attention is accepted
        # for the reference's yamls and changes nothing
        lr = solver.learning_rate
        if solver.scale_lr:
            lr *= solver.gradient_accumulation_steps * config.data.train_bs * accelerator.num_processes
        optimizer = make_optimizer(config, [p for _, p in trainable], lr)
        lr_scheduler = make_lr_scheduler(config, optimizer)
        noise_scheduler = make_training_scheduler(config_to_dict(config.noise_scheduler_kwargs))
        alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
        num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
        if _is_deepspeed(accelerator):  # the loader is not prepared (the sampler shards the draws itself)
            accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.data.train_bs
        model, optimizer = accelerator.prepare(model, optimizer)

        start_step = 0
        if self.resume:
            start_step = self._load_checkpoint(accelerator, model, optimizer, lr_scheduler)
        dataset = self._dataset()
        accum = solver.gradient_accumulation_steps
        remaining = max(0, solver.max_train_steps - start_step)
        sampler = RankDrawSampler(start_step * accum, remaining * accum, config.data.train_bs,
                                  accelerator.process_index, accelerator.num_processes)
        loader = torch.utils.data.DataLoader(
            _WithDraw(dataset), batch_size=config.data.train_bs, sampler=sampler,
            num_workers=config.data.num_workers, drop_last=False,
            persistent_workers=False, pin_memory=cuda,
        )

        writer = None
        log_file = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.output_dir / TENSORBOARD_DIR / config.exp_name))
            log_file = self._open_log(start_step)
        from tqdm import tqdm

        bar = tqdm(total=solver.max_train_steps, initial=start_step, desc=f"train {config.stage}",
                   unit="step", dynamic_ncols=True, disable=not (main and self.show_progress))
        samples_per_step = config.data.train_bs * accelerator.num_processes * accum
        losses: list[float] = []
        step = start_step
        micro = start_step * accum
        pending_loss = 0.0
        last_saved = start_step if self.resume else -1
        final_weights = None
        params = [p for _, p in trainable]
        try:
            with StopFlag() as stop:
                data_iter = iter(loader)
                while step < solver.max_train_steps:
                    batch = _next_batch(data_iter)
                    with accelerator.accumulate(model):
                        latents, noise, timesteps, uncond, ref_latents, clip, guidance = step_inputs(
                            batch, vae, image_encoder, stage=self.stage, seed=config.seed, micro_step=micro,
                            num_train_timesteps=num_train_timesteps, noise_offset=config.noise_offset,
                            uncond_ratio=config.uncond_ratio, device=device, scale=scale)
                        out = training_loss(model, alphas_cumprod, latents, noise, timesteps, clip, guidance,
                                            ref_latents, uncond=uncond, snr_gamma=config.snr_gamma or None,
                                            temporal_weight=config.temporal_loss_weight)
                        accelerator.backward(out.loss)
                        grad_norm = None
                        if accelerator.sync_gradients:
                            grad_norm = accelerator.clip_grad_norm_(params, solver.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    micro += 1
                    pending_loss += accelerator.gather(out.loss.detach().float()[None]).mean().item() / accum
                    if not accelerator.sync_gradients:
                        continue
                    lr_scheduler.step()
                    step += 1
                    loss_value, pending_loss = pending_loss, 0.0
                    losses.append(loss_value)
                    lr_now = lr_scheduler.get_last_lr()[0]
                    norm = float(grad_norm) if grad_norm is not None else float("nan")
                    if main and (step % solver.log_steps == 0 or step == solver.max_train_steps):
                        entry = {"step": step, "loss": loss_value, "lr": lr_now, "grad_norm": norm,
                                 "epoch": (step * samples_per_step) // max(1, len(dataset)), "time": time.time()}
                        log_file.write(json.dumps(entry) + "\n")
                        log_file.flush()
                        writer.add_scalar("train/loss", loss_value, step)
                        writer.add_scalar("train/lr", lr_now, step)
                        writer.add_scalar("train/grad_norm", norm, step)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr_now:.2e}", refresh=False)
                    if self.on_step is not None:
                        self.on_step(step, loss_value)

                    if step % config.checkpointing_steps == 0 and step < solver.max_train_steps:
                        self._save_checkpoint(accelerator, model, optimizer, lr_scheduler, step)
                        self._save_weights(accelerator, model, f"step-{step}", step, paths)
                        last_saved = step
                    elif self._epoch_boundary(step, samples_per_step, len(dataset)):
                        self._save_weights(accelerator, model, f"step-{step}", step, paths)
                    if step % config.validation.validation_steps == 0:
                        self._validate(accelerator, model, vae, image_encoder, step, writer)
                    if _agree(accelerator, stop.raised) and step < solver.max_train_steps:
                        checkpoint = (st.checkpoint_dir(self.output_dir / CHECKPOINTS_DIR, step)
                                      if last_saved == step else
                                      self._save_checkpoint(accelerator, model, optimizer, lr_scheduler, step))
                        raise Interrupted(step, checkpoint)
                if last_saved != step:
                    self._save_checkpoint(accelerator, model, optimizer, lr_scheduler, step)
                final_weights = self._save_weights(accelerator, model, "final", step, paths)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            if log_file is not None:
                log_file.close()
        accelerator.end_training()
        return TrainResult(step, self.output_dir, final_weights, losses)

    def _epoch_boundary(self, step: int, per_step: int, size: int) -> bool:
        interval = self.config.save_model_epoch_interval
        if interval <= 0 or size <= 0:
            return False
        before, after = ((step - 1) * per_step) // size, (step * per_step) // size
        return after > before and after % interval == 0

    def _validate(self, accelerator, model, vae, image_encoder, step: int, writer) -> None:
        if accelerator.is_main_process:
            from .validation import run_validation

            run_validation(self.config, accelerator.unwrap_model(model), vae, image_encoder, step,
                           self.output_dir / VALIDATION_DIR / f"step-{step}", writer, self.stage)
        accelerator.wait_for_everyone()


def _next_batch(iterator):
    from .datasets import DataSkipLimitError

    try:
        return next(iterator)
    except StopIteration:
        raise TrainingError("the data loader ran out of samples before max_train_steps") from None
    except DataSkipLimitError as exc:
        raise TrainingError(str(exc).splitlines()[0]) from None


def _agree(accelerator, flag: bool) -> bool:
    """True when any process saw a stop signal (one all-reduce when there are several processes)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def _is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _optimizer_state(optimizer) -> dict:
    inner = getattr(optimizer, "optimizer", optimizer)
    return inner.state_dict()


def _load_optimizer_state(optimizer, state) -> None:
    inner = getattr(optimizer, "optimizer", optimizer)
    inner.load_state_dict(state)


@contextmanager
def _logging_to_stderr(level: int = logging.INFO):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("champ_core")
    root.addHandler(handler)
    previous = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def _reset_accelerate_state() -> None:
    """Accelerate keeps one precision/accumulation set-up per process; clear it (the process group stays)
    so that another run in the same process may use other settings."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


def train(config: TrainConfig, resume: str | None = None, show_progress: bool = True) -> TrainResult:
    with _logging_to_stderr():
        try:
            return Trainer(config, resume, show_progress).run()
        finally:
            _reset_accelerate_state()


def run_command(stage: str, config_path, overrides=(), resume: str | None = None, show_progress: bool = True) -> int:
    """`python -m champ_core train stage1|stage2`: one line and exit status 2 for every expected failure."""
    from ..cli import CommandError
    from .config import load_config
    from .layout import DatasetError

    try:
        config = load_config(stage, config_path, overrides)
        result = train(config, resume, show_progress)
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except (ConfigError, st.StateError, TrainingError, DatasetError) as exc:
        raise CommandError(" ".join(str(exc).split("\n"))) from None
    print(f"done: {result.step} steps; weights in {result.final_weights}")
    return 0
