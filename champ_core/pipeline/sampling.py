"""The sampling loop: reference image + guidance frames -> latents -> video frames.

Reading order (what `ChampPipeline.animate` does):
1. The reference is encoded once: CLIP image embedding (one token) and VAE latent mean x scaling.
   The ReferenceNet runs once (timestep 0) and the denoiser derives everything it needs from its
   features once (`prepare_reference`: reference tokens and their key/value projections per layer);
   that context serves every step and every window.
2. Initial latents: Gaussian noise from a CPU `torch.Generator` seeded with `seed`, shape
   (1, 4, F, H/8, W/8), times the scheduler's initial sigma; the same numbers on every device.
   Callers may pass their own.
3. For every step and every window of the plan (`windows.py`): the window's guidance frames are read
   (the next window's on a worker thread, overlapping the network calls), encoded (guidance
   features are never held for the whole clip unless a cache budget is given), and the denoiser
   predicts v. With classifier-free guidance (scale > 1) the batch is
   [unconditional, conditional]: the unconditional half has a zero CLIP embedding and no reference
   tokens; guidance features are the same in both halves. Window predictions are fused per frame
   (weighted average: flat by default), then guided: uncond + scale * (cond - uncond).
   Without CFG the reference *sums* overlapping windows (a bug); here they are always averaged,
   unless `legacy_sum_without_cfg=True` (kept only to compare with the reference's numbers).
4. The scheduler takes one step on the whole latent clip.
5. Decoding streams: latents are decoded a chunk of frames at a time and handed to the caller (or a
   video writer), so only the latents are held for the whole clip.

Progress: `progress(ProgressEvent)` is called before the reference pass, after every (step, window)
and after every decoded chunk. It may raise to cancel; nothing is kept in the models (the reference
context is a local), and a `VideoWriter` deletes its partial file.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .codecs import ImageEmbedder, LatentCodec
from .inputs import GuidanceSource, InputError, prepare_reference
from .scheduler import make_scheduler
from .windows import WindowOptions, WindowPlan, plan_windows


@dataclass(frozen=True)
class SamplingOptions:
    steps: int = 20
    guidance_scale: float = 3.5
    seed: int = 42
    solver: str = "ddim"
    beta_schedule: str = "linear"
    windows: WindowOptions = field(default_factory=WindowOptions)
    guidance_strengths: Mapping[str, float] | None = None
    # The reference sums (not averages) overlapping windows when CFG is off; only for parity tests.
    legacy_sum_without_cfg: bool = False
    # Keep encoded guidance features of up to this many bytes instead of re-encoding every step.
    guidance_cache_bytes: int = 0

    def validate(self) -> None:
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}")
        if not np.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise InputError(f"guidance scale must be a finite number >= 0, got {self.guidance_scale}")


@dataclass(frozen=True)
class ProgressEvent:
    phase: str  # "reference", "denoise" or "decode"
    done: int  # units finished in this phase
    total: int
    step: int = 0
    num_steps: int = 0
    window: int = 0
    num_windows: int = 0


@dataclass
class ReferenceEncoding:
    clip_embeds: torch.Tensor  # (1, 1, D)
    latents: torch.Tensor  # (1, 4, h, w), scaled (the denoiser's latent space)


@dataclass
class AnimationResult:
    latents: torch.Tensor  # (F, 4, h, w) unscaled VAE latents on the CPU (ComfyUI's LATENT convention)
    frames: torch.Tensor | None  # (F, H, W, 3) float32 in [0, 1] when asked for


ProgressCallback = Callable[[ProgressEvent], None]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def _call(callback, *args) -> None:
    if callback is not None:
        callback(*args)


class ChampPipeline:
    """Champ's windowed video sampler over `ChampModels` plus a VAE and an image encoder."""

    def __init__(self, models, vae: LatentCodec, image_encoder: ImageEmbedder) -> None:
        self.models = models
        self.vae = vae
        self.image_encoder = image_encoder

    @property
    def device(self) -> torch.device:
        return torch.device(self.models.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.models.dtype

    # -- sizes -----------------------------------------------------------------------------
    def pixel_multiple(self) -> int:
        """Generation sizes must be multiples of the VAE's 8x (the UNets handle odd latent sizes)."""
        return 8

    def check_size(self, width: int, height: int) -> None:
        multiple = self.pixel_multiple()
        if width < multiple or height < multiple or width % multiple or height % multiple:
            raise InputError(
                f"generation size {width}x{height} must be a positive multiple of {multiple} in both "
                f"directions (e.g. {max(multiple, round(width / multiple) * multiple)}x"
                f"{max(multiple, round(height / multiple) * multiple)})"
            )

    # -- reference -------------------------------------------------------------------------
    @torch.no_grad()
    def encode_reference(
        self, image, width: int, height: int, fit: str = "squash", background=(255, 255, 255)
    ) -> ReferenceEncoding:
        vae_input, clip_input = prepare_reference(image, width, height, fit, background)
        vae_pixels = torch.from_numpy(np.array(vae_input)).permute(2, 0, 1)[None].float() / 255.0
        clip_pixels = torch.from_numpy(np.array(clip_input)).permute(2, 0, 1)[None].float() / 255.0
        latents = self.vae.encode(vae_pixels).float() * self.vae.scaling_factor
        clip_embeds = self.image_encoder.embed(clip_pixels).float()
        if clip_embeds.ndim == 2:
            clip_embeds = clip_embeds[:, None]
        return ReferenceEncoding(clip_embeds=clip_embeds, latents=latents)

    @torch.no_grad()
    def reference_context(self, reference: ReferenceEncoding):
        """ReferenceNet once (timestep 0, real CLIP embedding), then the denoiser's reusable context."""
        m = self.models
        features = m.reference_unet(
            reference.latents.to(self.device, self.dtype),
            torch.zeros((), dtype=torch.long, device=self.device),
            reference.clip_embeds.to(self.device, self.dtype),
        )
        return m.denoising_unet.prepare_reference(features)

    # -- noise -----------------------------------------------------------------------------
    @staticmethod
    def initial_noise(num_frames: int, width: int, height: int, seed: int, channels: int = 4) -> torch.Tensor:
        generator = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn((1, channels, num_frames, height // 8, width // 8), generator=generator)

    # -- guidance --------------------------------------------------------------------------
    def _guidance_types(self, guidance: GuidanceSource) -> tuple[str, ...]:
        available = tuple(self.models.guidance_encoders)
        used = tuple(t for t in guidance.types if t in available)
        if not used:
            raise InputError(
                f"none of the guidance types given ({', '.join(guidance.types)}) has an encoder in the "
                f"loaded models ({', '.join(available) or 'none'})"
            )
        ignored = [t for t in guidance.types if t not in available]
        if ignored:
            warnings.warn(f"guidance type(s) {ignored} have no encoder in the loaded models and are ignored",
                          stacklevel=3)
        return used

    @torch.no_grad()
    def encode_guidance_window(
        self, guidance: GuidanceSource, frames, width: int, height: int, fit: str, types, strengths,
        layers: Mapping[str, np.ndarray] | None = None,
    ) -> torch.Tensor:
        """Guidance features (1, C, n, h, w) of one window; `layers`: frames already read (read-ahead)."""
        if layers is None:
            layers = guidance.read(list(frames), width, height, fit)
        tensors = {}
        for kind in types:
            pixels = torch.from_numpy(layers[kind]).permute(3, 0, 1, 2)[None]  # (1, 3, n, H, W) uint8
            if self.dtype == torch.float32:  # the reference divides in float64, then casts: same bits
                tensors[kind] = (pixels.to(torch.float64) / 255.0).to(self.device, self.dtype)
            else:  # half precision: move the uint8 frames first, convert on the device
                tensors[kind] = (pixels.to(self.device).float() / 255.0).to(self.dtype)
        return self.models.encode_guidance(tensors, dict(strengths) if strengths else None)

    # -- denoising -------------------------------------------------------------------------
    @torch.no_grad()
    def denoise(
        self,
        reference: ReferenceEncoding,
        guidance: GuidanceSource,
        width: int,
        height: int,
        options: SamplingOptions = SamplingOptions(),
        fit: str = "squash",
        latents: torch.Tensor | None = None,
        progress: ProgressCallback | None = None,
        on_step: StepCallback | None = None,
    ) -> torch.Tensor:
        """Scaled latents (1, 4, F, h, w) float32 on the model device.

        `latents`: initial latents (scaled, already multiplied by the initial sigma); default: seeded noise.
        `on_step(step_index, timestep, model_output, latents_after_step)`: an inspection hook.
        """
        options.validate()
        self.check_size(width, height)
        num_frames = guidance.num_frames
        plan: WindowPlan = plan_windows(num_frames, options.windows, self._max_positions())
        types = self._guidance_types(guidance)
        scheduler = make_scheduler(options.solver, options.beta_schedule)
        scheduler.set_timesteps(options.steps, device=self.device)
        step_kwargs = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_kwargs["generator"] = torch.Generator("cpu").manual_seed(int(options.seed) + 1)

        if latents is None:
            latents = self.initial_noise(num_frames, width, height, options.seed) * scheduler.init_noise_sigma
        expected = (1, 4, num_frames, height // 8, width // 8)
        if tuple(latents.shape) != expected:
            raise InputError(f"initial latents have shape {tuple(latents.shape)}, expected {expected} "
                             f"({num_frames} guidance frames at {width}x{height})")
        latents = latents.to(self.device, torch.float32)

        _call(progress, ProgressEvent("reference", 0, 1))
        context = self.reference_context(reference)
        _call(progress, ProgressEvent("reference", 1, 1))
        do_cfg = options.guidance_scale > 1.0
        batch = 2 if do_cfg else 1
        clip = reference.clip_embeds.to(self.device, self.dtype)
        clip_batch = torch.cat([torch.zeros_like(clip), clip]) if do_cfg else clip
        reference_mask = torch.tensor([False, True] if do_cfg else [True], device=self.device)

        cache: dict[tuple[int, ...], torch.Tensor] = {}
        cache_bytes = 0
        num_steps = len(scheduler.timesteps)
        # Every window of every step in order; the next window's frames are read on a worker thread
        # while the current one runs through the networks (PNG decoding and resizing release the GIL).
        order = [window.frames for s in range(num_steps) for window in plan.windows(s)]
        total = len(order)
        done = 0
        with ThreadPoolExecutor(max_workers=1) as read_ahead:
            pending: dict[int, Future] = {}

            def submit(job: int) -> None:
                if job < total and job not in pending and order[job] not in cache:
                    pending[job] = read_ahead.submit(guidance.read, list(order[job]), width, height, fit)

            for step, t in enumerate(scheduler.timesteps):
                windows = plan.windows(step)
                model_input = scheduler.scale_model_input(latents, t)
                fused = torch.zeros((batch, *latents.shape[1:]), dtype=torch.float32, device=self.device)
                weight_sum = torch.zeros(num_frames, dtype=torch.float32, device=self.device)
                for w, window in enumerate(windows):
                    if done == 0:
                        submit(0)
                    future = pending.pop(done, None)
                    submit(done + 1)  # start reading the next window now
                    index = torch.tensor(window.frames, dtype=torch.long, device=self.device)
                    features = cache.get(window.frames)
                    if features is None:
                        features = self.encode_guidance_window(
                            guidance, window.frames, width, height, fit, types, options.guidance_strengths,
                            layers=future.result() if future is not None else None)
                        size = features.numel() * features.element_size()
                        if cache_bytes + size <= options.guidance_cache_bytes:
                            cache[window.frames] = features
                            cache_bytes += size
                    sample = model_input.index_select(2, index).to(self.dtype)
                    prediction = self.models.denoising_unet(
                        sample.expand(batch, -1, -1, -1, -1),
                        t,
                        clip_batch,
                        features.expand(batch, -1, -1, -1, -1),
                        context,
                        reference_mask,
                    ).float()
                    weights = torch.tensor(window.weights, dtype=torch.float32, device=self.device)
                    fused.index_add_(2, index, prediction * weights.view(1, 1, -1, 1, 1))
                    weight_sum.index_add_(0, index, weights)
                    done += 1
                    _call(progress, ProgressEvent("denoise", done, total, step, num_steps, w, len(windows)))
                # in place where the result is bit-identical: these buffers are latent-sized
                if do_cfg or not options.legacy_sum_without_cfg:
                    fused.div_(weight_sum.view(1, 1, -1, 1, 1))
                if do_cfg:
                    uncond, cond = fused.chunk(2)
                    model_output = (cond - uncond).mul_(options.guidance_scale).add_(uncond)
                    del uncond, cond
                else:
                    model_output = fused
                del fused
                latents = scheduler.step(model_output, t, latents, **step_kwargs).prev_sample.float()
                _call(on_step, step, t, model_output, latents)
        return latents

    def _max_positions(self) -> int:
        config = getattr(self.models.denoising_unet, "config", None)
        motion = getattr(config, "motion", None)
        return int(getattr(motion, "max_frames", 32) or 32)

    # -- decoding --------------------------------------------------------------------------
    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        chunk_size: int = 4,
        output_size: tuple[int, int] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[range, torch.Tensor]]:
        """Yield (frame indices, float32 frames (n, H, W, 3) in [0, 1] on the CPU) chunk by chunk.

        `latents`: scaled (1, 4, F, h, w). `output_size`: (width, height) to resize to (bilinear).
        """
        num_frames = latents.shape[2]
        chunk_size = max(1, int(chunk_size))
        for start in range(0, num_frames, chunk_size):
            stop = min(num_frames, start + chunk_size)
            chunk = latents[0, :, start:stop].permute(1, 0, 2, 3).float() / self.vae.scaling_factor
            images = self.vae.decode(chunk).float().cpu()  # (n, 3, H, W)
            if output_size is not None and tuple(images.shape[-2:]) != (output_size[1], output_size[0]):
                images = F.interpolate(images, size=(output_size[1], output_size[0]), mode="bilinear",
                                       align_corners=False).clamp(0, 1)
            _call(progress, ProgressEvent("decode", stop, num_frames))
            yield range(start, stop), images.permute(0, 2, 3, 1).contiguous()

    # -- everything ------------------------------------------------------------------------
    def animate(
        self,
        reference_image,
        guidance: GuidanceSource,
        width: int = 512,
        height: int = 512,
        options: SamplingOptions = SamplingOptions(),
        fit: str = "squash",
        latents: torch.Tensor | None = None,
        progress: ProgressCallback | None = None,
        return_frames: bool = True,
        writer=None,
        decode_chunk: int = 4,
        output_size: tuple[int, int] | None = None,
    ) -> AnimationResult:
        """Sample a video. `writer`: anything with `.write(uint8 (n, H, W, 3))` (e.g. `VideoWriter`),
        fed chunk by chunk; `return_frames=False` keeps decoded frames out of memory."""
        self.check_size(width, height)
        reference = self.encode_reference(reference_image, width, height, fit)
        final = self.denoise(reference, guidance, width, height, options, fit, latents, progress)
        frames = None  # filled chunk by chunk: no second copy of the whole clip
        if return_frames or writer is not None:
            for index, chunk in self.decode(final, decode_chunk, output_size, progress):
                if writer is not None:
                    writer.write(to_uint8(chunk))
                if return_frames:
                    if frames is None:
                        frames = torch.empty((final.shape[2], *chunk.shape[1:]), dtype=chunk.dtype)
                    frames[index.start:index.stop] = chunk
        unscaled = (final[0].permute(1, 0, 2, 3) / self.vae.scaling_factor).cpu()
        return AnimationResult(latents=unscaled, frames=frames)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float frames in [0, 1] -> uint8 numpy, rounded."""
    return (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
