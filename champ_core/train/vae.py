"""Training a small diffusers `AutoencoderKL` on the frames of a data set in the training layout.

The pack's built-in Champ works in the latent space of its own VAE, trained here on generated
people (the SD1.5 VAE is far too big for a model meant to run anywhere). The objective is the
usual one for a KL autoencoder, kept simple because the domain is simple: L1 + MSE reconstruction
plus a small KL term, and an L1 term on image gradients that keeps the clothing patterns sharp.
At the end the latent scale is measured on the data (1 / std of the sampled latents, as SD's
0.18215 was) and stored in the model's config as `scaling_factor`, which the pipeline reads.

Output: `OUT/vae/` in diffusers' folder format (config.json + diffusion_pytorch_model.safetensors),
written atomically; `OUT/vae_log.jsonl` with the loss per logged step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, _build, apply_overrides, read_yaml


@dataclass
class VAETrainConfig:
    video_folder: str = ""
    output_dir: str = ""
    data_parts: list[str] = field(default_factory=lambda: ["all"])
    image_size: int = 128
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    batch_size: int = 8
    max_train_steps: int = 2000
    learning_rate: float = 2e-4
    lr_warmup_steps: int = 50
    # "cosine": after the warm-up the rate falls to 0 at the last step along a half cosine; a small
    # autoencoder's last few hundred steps at a low rate remove most of the noise of a high one.
    lr_schedule: str = "constant"
    kl_weight: float = 1e-6
    gradient_weight: float = 0.5
    seed: int = 0
    log_steps: int = 50
    scale_samples: int = 256
    num_threads: int = 0  # 0: torch's default
    # True: the posterior's log-variance is pinned at diffusers' lowest value (-30), so the encoder is
    # a plain deterministic autoencoder. On a CPU budget it learns in hundreds of steps what a KL
    # autoencoder (whose encoder must first learn to shrink the sampling noise) learns in thousands.
    deterministic: bool = True
    # > 0: train on random crops of this size (the autoencoder is convolutional, so it runs at any size
    # afterwards); 4x fewer pixels per sample at half the size, so 4x more samples in the same time.
    crop_size: int = 0


def load_vae_config(path: str | Path, overrides: Sequence[str] = ()) -> VAETrainConfig:
    data = apply_overrides(read_yaml(path), overrides)
    config = _build(VAETrainConfig, data, str(path) + (" with --set" if overrides else ""))
    if not config.video_folder:
        raise ConfigError(f"{path}: set video_folder (a data set in the training layout), e.g. --set video_folder=DIR")
    if not config.output_dir:
        raise ConfigError(f"{path}: set output_dir, e.g. --set output_dir=out/vae")
    if config.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"{path}: lr_schedule {config.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
    if config.image_size % 2 ** (len(config.block_out_channels) - 1):
        raise ConfigError(f"{path}: image_size {config.image_size} must be a multiple of "
                          f"{2 ** (len(config.block_out_channels) - 1)} for {len(config.block_out_channels)} blocks")
    return config


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, config: VAETrainConfig) -> float:
    """The learning rate's multiplier at optimizer step `step` (0-based): linear warm-up, then the schedule."""
    warmup = max(1, config.lr_warmup_steps)
    if step < warmup or config.lr_schedule == "constant":
        return min(1.0, (step + 1) / warmup)
    progress = (step - warmup + 1) / max(1, config.max_train_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_vae(config: VAETrainConfig):
    from diffusers import AutoencoderKL

    n = len(config.block_out_channels)
    torch.manual_seed(config.seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=config.latent_channels,
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(config.block_out_channels), layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups, sample_size=config.image_size, scaling_factor=1.0,
    )  # fmt: skip
    if config.deterministic:
        pin_log_variance(vae)
    return vae


LOWEST_LOG_VARIANCE = -30.0  # diffusers clamps the posterior's log-variance to [-30, 20]


@torch.no_grad()
def pin_log_variance(vae) -> None:
    """Posterior log-variance -> -30 whatever the input (the log-variance half of quant_conv)."""
    latent = vae.config.latent_channels
    vae.quant_conv.weight[latent:].zero_()
    vae.quant_conv.bias[latent:].fill_(LOWEST_LOG_VARIANCE)


class FramePool:
    """Every frame of every video's `images/`, read once into memory at the training size."""

    def __init__(self, root: str | Path, image_size: int, data_parts: Sequence[str] = ("all",)) -> None:
        from PIL import Image

        from .layout import IMAGES, find_videos

        frames = []
        for entry in find_videos(root, data_parts):
            for path in sorted((entry.path / IMAGES).iterdir()):
                if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                    continue
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    if image.size != (image_size, image_size):
                        image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
                    frames.append(np.asarray(image))
        if not frames:
            raise ConfigError(f"video_folder {root}: no frames found under */images/ (make some with synth-data)")
        self.frames = np.stack(frames)

    def __len__(self) -> int:
        return len(self.frames)

    def batch(self, rng: np.random.Generator, size: int, crop: int = 0) -> torch.Tensor:
        """(size, 3, S, S) in [-1, 1]: random frames (random `crop` x `crop` windows of them when crop
        > 0), each flipped left-right half of the time."""
        picked = self.frames[rng.integers(len(self.frames), size=size)]
        if crop:
            height, width = picked.shape[1:3]
            ys, xs = rng.integers(height - crop + 1, size=size), rng.integers(width - crop + 1, size=size)
            picked = np.stack([frame[y:y + crop, x:x + crop] for frame, y, x in zip(picked, ys, xs)])
        flip = rng.random(size) < 0.5
        picked[flip] = picked[flip, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(picked)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, gradient_weight: float) -> torch.Tensor:
    diff = reconstruction - target
    loss = diff.abs().mean() + diff.square().mean()
    if gradient_weight:
        for dim in (2, 3):
            loss = loss + gradient_weight * (reconstruction.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
    return loss


@torch.no_grad()
def measure_scaling_factor(vae, pool: FramePool, samples: int, seed: int) -> float:
    """1 / std of sampled latents over `samples` frames: unit-variance latents for the diffusion model."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    latents = []
    for start in range(0, samples, 16):
        pixels = pool.batch(rng, min(16, samples - start))
        latents.append(vae.encode(pixels).latent_dist.sample(generator))
    return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))


def train_vae(config: VAETrainConfig, progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Train, measure the latent scale, write OUT/vae/ atomically; returns that folder."""
    from ..atomic import atomic_dir

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool = FramePool(config.video_folder, config.image_size, config.data_parts)
    vae = build_vae(config).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.time()
    log_path = out / "vae_log.jsonl"
    with log_path.open("w", encoding="utf-8") as log:
        for step in range(1, config.max_train_steps + 1):
            pixels = pool.batch(rng, config.batch_size, config.crop_size)
            posterior = vae.encode(pixels).latent_dist
            latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
            reconstruction = vae.decode(latents).sample
            rec = reconstruction_loss(reconstruction, pixels, config.gradient_weight)
            kl = posterior.kl().mean() / pixels[0].numel()
            loss = rec + config.kl_weight * kl * pixels[0].numel()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if config.deterministic:  # keep the pinned half exactly as it was (Adam would move it)
                pin_log_variance(vae)
            value = loss.item()
            if progress is not None:
                progress(step, config.max_train_steps, value)
            if step % config.log_steps == 0 or step == config.max_train_steps:
                log.write(json.dumps({"step": step, "loss": value, "reconstruction": rec.item(),
                                      "kl": kl.item(), "seconds": round(time.time() - started, 1)}) + "\n")
                log.flush()
    vae.eval()
    scale = measure_scaling_factor(vae, pool, config.scale_samples, config.seed + 1)
    vae.register_to_config(scaling_factor=scale)
    target = out / "vae"
    with atomic_dir(target, overwrite=True) as tmp:
        vae.save_pretrained(str(tmp), safe_serialization=True)
        (Path(tmp) / "training.json").write_text(json.dumps(
            {"config": asdict(config), "frames": len(pool), "seconds": round(time.time() - started, 1),
             "scaling_factor": scale, "torch_threads": torch.get_num_threads()}, indent=1))
    return target
