"""The sampling loop: reference image + guidance frames -> latents -> video frames.

Reading order (what `ChampPipeline.animate` does):
1. The reference is encoded once: CLIP image embedding (one token) and VAE latent mean x scaling.
   The ReferenceNet runs once (timestep 0) and the denoiser derives everything it needs from its
   features once (`prepare_reference`: reference tokens and their key/value projections per layer);
   that context serves every step and every window.
2. Initial latents: Gaussian noise from a CPU `torch.Generator` seeded with `seed`, shape
   (1, C, F, H/s, W/s) on the networks' latent grid (`ChampModel.latent_channels` / `latent_scale`;
   SD1.5's C = 4, s = 8), times the scheduler's initial sigma; the same numbers on every device.
   Callers may pass their own.
3. For every step and every window of the plan (`windows.py`): the window's guidance features come
   from the guidance stage (`GuidanceFeatureCache`: each frame encoded once while the byte budget
   lasts, the next window's frames read on a worker thread), and the window step calls THE Champ
   forward (`ChampModel.forward`, the same one training calls) to predict v. With classifier-free guidance (scale > 1) the batch is
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .codecs import SD_VAE_DOWNSAMPLING, SD_VAE_SCALING_FACTOR, ImageEmbedder, LatentCodec
from .guidance_cache import GuidanceFeatureCache
from .inputs import GuidanceSource, InputError, check_finite, prepare_reference
from .scheduler import make_scheduler
from .seeding import seed_generator
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
    # Encoded guidance features kept across windows and steps: None = automatic budget
    # (guidance_cache.resolve_budget), 0 = off (re-encode every window), N = at most N bytes.
    guidance_cache_bytes: int | None = None

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
    scaling_factor: float = SD_VAE_SCALING_FACTOR  # of the VAE that encoded it (unscaled = scaled / factor)


@dataclass
class Conditioning:
    """What every window step of one video shares: the reference context and the CFG batch layout."""

    context: object  # models.ReferenceContext
    clip_embeds: torch.Tensor  # (batch, 1, D): [zeros, clip] with CFG, [clip] without
    reference_mask: torch.Tensor  # (batch,) bool: False rows attend without the reference
    guidance_scale: float

    @property
    def batch(self) -> int:
        return self.clip_embeds.shape[0]

    @property
    def cfg(self) -> bool:
        return self.batch == 2


@dataclass
class AnimationResult:
    latents: torch.Tensor  # (F, 4, h, w) unscaled VAE latents on the CPU (ComfyUI's LATENT convention)
    frames: torch.Tensor | None  # (F, H, W, 3) float32 in [0, 1] when asked for


ProgressCallback = Callable[[ProgressEvent], None]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def _call(callback, *args) -> None:
    if callback is not None:
        callback(*args)


# ----------------------------------------------------------------------------------------------
# Reference encoding and decoding: the VAE and the image encoder only (no Champ networks needed)


@torch.no_grad()
def encode_reference(
    vae: LatentCodec, image_encoder: ImageEmbedder, image, width: int, height: int, fit: str = "squash",
    background=(255, 255, 255),
) -> ReferenceEncoding:
    """CLIP embedding (the image squashed to 224x224) and scaled VAE latent mean at width x height."""
    check_size(width, height, getattr(vae, "downsampling", PIXEL_MULTIPLE))
    vae_input, clip_input = prepare_reference(image, width, height, fit, background)
    vae_pixels = torch.from_numpy(np.array(vae_input)).permute(2, 0, 1)[None].float() / 255.0
    clip_pixels = torch.from_numpy(np.array(clip_input)).permute(2, 0, 1)[None].float() / 255.0
    latents = vae.encode(vae_pixels).float() * vae.scaling_factor
    clip_embeds = image_encoder.embed(clip_pixels).float()
    if clip_embeds.ndim == 2:
        clip_embeds = clip_embeds[:, None]
    return ReferenceEncoding(clip_embeds=clip_embeds, latents=latents, scaling_factor=float(vae.scaling_factor))


@torch.no_grad()
def decode_latents(
    vae: LatentCodec,
    latents: torch.Tensor,
    chunk_size: int = 4,
    output_size: tuple[int, int] | None = None,
    progress: ProgressCallback | None = None,
) -> Iterator[tuple[range, torch.Tensor]]:
    """Yield (frame indices, float32 frames (n, H, W, 3) in [0, 1] on the CPU) chunk by chunk.

    `latents`: scaled (1, 4, F, h, w). `output_size`: (width, height) to resize to (bilinear).
    """
    check_finite(latents, "latents to decode")
    num_frames = latents.shape[2]
    chunk_size = max(1, int(chunk_size))
    for start in range(0, num_frames, chunk_size):
        stop = min(num_frames, start + chunk_size)
        chunk = latents[0, :, start:stop].permute(1, 0, 2, 3).float() / vae.scaling_factor
        images = vae.decode(chunk).float().cpu()  # (n, 3, H, W)
        if output_size is not None and tuple(images.shape[-2:]) != (output_size[1], output_size[0]):
            images = F.interpolate(images, size=(output_size[1], output_size[0]), mode="bilinear",
                                   align_corners=False).clamp(0, 1)
        _call(progress, ProgressEvent("decode", stop, num_frames))
        yield range(start, stop), images.permute(0, 2, 3, 1).contiguous()


def unscaled_latents(latents: torch.Tensor, scaling_factor: float = SD_VAE_SCALING_FACTOR) -> torch.Tensor:
    """Scaled (1, 4, F, h, w) -> unscaled (F, 4, h, w) float32 (ComfyUI's LATENT["samples"] convention)."""
    return latents[0].permute(1, 0, 2, 3).float() / scaling_factor


def scaled_latents(samples: torch.Tensor, scaling_factor: float = SD_VAE_SCALING_FACTOR) -> torch.Tensor:
    """Unscaled (F, 4, h, w) -> scaled (1, 4, F, h, w): the inverse of `unscaled_latents`."""
    return samples.permute(1, 0, 2, 3)[None].float() * scaling_factor


PIXEL_MULTIPLE = SD_VAE_DOWNSAMPLING  # the default grid (the UNets handle odd latent sizes)


def check_size(width: int, height: int, multiple: int = PIXEL_MULTIPLE) -> None:
    if width < multiple or height < multiple or width % multiple or height % multiple:
        raise InputError(
            f"generation size {width}x{height} must be a positive multiple of {multiple} in both "
            f"directions (e.g. {max(multiple, round(width / multiple) * multiple)}x"
            f"{max(multiple, round(height / multiple) * multiple)})"
        )


def usable_guidance_types(
    available: Sequence[str], given: Sequence[str], strengths: Mapping[str, float] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(types to encode, types ignored for lack of an encoder).

    Layers at strength 0 add exactly nothing and are not encoded, unless every usable layer is at 0.
    """
    usable = tuple(t for t in given if t in available)
    if not usable:
        raise InputError(
            f"none of the guidance types given ({', '.join(given) or 'none'}) has an encoder in the "
            f"loaded models ({', '.join(available) or 'none'})"
        )
    ignored = tuple(t for t in given if t not in available)
    strengths = strengths or {}
    active = tuple(t for t in usable if float(strengths.get(t, 1.0)) != 0.0) or usable
    return active, ignored


# ----------------------------------------------------------------------------------------------
# The denoiser: the Champ networks over temporal windows


class ChampDenoiser:
    """Windowed classifier-free-guided denoising over a `ChampModel` (the Champ networks only)."""

    def __init__(self, models) -> None:
        if models is None:
            raise InputError("the Champ denoiser needs the Champ networks (a ChampModel, e.g. from load_champ_models)")
        self.models = models

    @property
    def device(self) -> torch.device:
        return torch.device(self.models.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.models.dtype

    def pixel_multiple(self) -> int:
        return self.models.latent_scale

    def check_size(self, width: int, height: int) -> None:
        check_size(width, height, self.pixel_multiple())

    # -- noise -----------------------------------------------------------------------------
    @staticmethod
    def initial_noise(num_frames: int, width: int, height: int, seed: int, channels: int = 4,
                      scale: int = PIXEL_MULTIPLE) -> torch.Tensor:
        """Seeded Gaussian noise (1, channels, F, H/scale, W/scale); SD1.5's latent grid by default."""
        generator = seed_generator(seed)
        return torch.randn((1, channels, num_frames, height // scale, width // scale), generator=generator)

    def latent_shape(self, num_frames: int, width: int, height: int) -> tuple[int, int, int, int, int]:
        scale = self.models.latent_scale
        return (1, self.models.latent_channels, num_frames, height // scale, width // scale)

    def model_noise(self, num_frames: int, width: int, height: int, seed: int) -> torch.Tensor:
        """`initial_noise` on this model's latent grid (channels and scale from the networks)."""
        return self.initial_noise(num_frames, width, height, seed, self.models.latent_channels, self.models.latent_scale)

    def initial_latents(self, latents, num_frames: int, width: int, height: int, seed: int, scheduler) -> torch.Tensor:
        if latents is None:
            latents = self.model_noise(num_frames, width, height, seed) * scheduler.init_noise_sigma
        expected = self.latent_shape(num_frames, width, height)
        if tuple(latents.shape) != expected:
            raise InputError(f"initial latents have shape {tuple(latents.shape)}, expected {expected} "
                             f"({num_frames} guidance frames at {width}x{height})")
        check_finite(latents, "initial latents")
        return latents.to(self.device, torch.float32)

    # -- stage helpers ---------------------------------------------------------------------
    def window_plan(self, num_frames: int, windows: WindowOptions) -> WindowPlan:
        """The plan of temporal windows. Without motion modules (stage-1 weights) frames never mix:
        every frame is denoised exactly once, independently (windows that partition the clip: the
        largest length up to the given one that divides the frame count, no overlap, no wrap)."""
        max_frames = getattr(self.models.denoising_unet, "max_frames", 32)
        if max_frames is None and num_frames >= 1:
            length = max(d for d in range(1, min(windows.length, num_frames) + 1) if num_frames % d == 0)
            windows = replace(windows, length=length, overlap=0, schedule="open", stride=1, shift_per_step=False)
            return plan_windows(num_frames, windows, max_positions=length)
        return plan_windows(num_frames, windows, int(max_frames or 32))

    def guidance_types(self, guidance: GuidanceSource, strengths: Mapping[str, float] | None = None) -> tuple[str, ...]:
        used, ignored = usable_guidance_types(tuple(self.models.guidance_encoders), tuple(guidance.types), strengths)
        if ignored:
            warnings.warn(f"guidance type(s) {list(ignored)} have no encoder in the loaded models and are ignored",
                          stacklevel=3)
        return used

    @torch.no_grad()
    def reference_context(self, reference: ReferenceEncoding):
        """ReferenceNet once (timestep 0, real CLIP embedding), then the denoiser's reusable K/V context."""
        return self.models.reference_context(reference.latents.to(self.device, self.dtype),
                                             reference.clip_embeds.to(self.device, self.dtype))

    def check_reference_latents(self, reference: ReferenceEncoding, latents: torch.Tensor) -> None:
        """A VAE of another latent grid than the networks' (say SD1.5's with the built-in networks)
        would fail deep inside the UNet; name both grids instead."""
        got, expected = tuple(reference.latents.shape[1:]), tuple(latents.shape[1:2] + latents.shape[3:])
        if got != expected:
            raise InputError(
                f"the VAE gives reference latents of shape {got} (channels, h, w), but the Champ networks work on "
                f"{expected}: use the VAE the networks were trained with (the built-in model's own vae/ for the "
                "built-in networks, sd-vae-ft-mse for the released Champ weights)"
            )

    def reference_stage(self, reference: ReferenceEncoding, guidance_scale: float) -> Conditioning:
        """The reference context plus the CFG batch: [uncond (zero CLIP, no reference), cond]."""
        context = self.reference_context(reference)
        clip = reference.clip_embeds.to(self.device, self.dtype)
        if guidance_scale > 1.0:
            return Conditioning(context, torch.cat([torch.zeros_like(clip), clip]),
                                torch.tensor([False, True], device=self.device), guidance_scale)
        return Conditioning(context, clip, torch.tensor([True], device=self.device), guidance_scale)

    @torch.no_grad()
    def encode_guidance_window(
        self, guidance: GuidanceSource, frames, width: int, height: int, fit: str, types, strengths,
        layers: Mapping[str, np.ndarray] | None = None,
    ) -> torch.Tensor:
        """Guidance features (1, C, n, h, w) of some frames; `layers`: frames already read."""
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

    def guidance_stage(self, guidance: GuidanceSource, width: int, height: int, fit: str, types,
                       options: SamplingOptions) -> GuidanceFeatureCache:
        """Per-frame guidance features for the whole video (`GuidanceFeatureCache`; a context manager)."""
        strengths = options.guidance_strengths
        return GuidanceFeatureCache(
            lambda frames: guidance.read(list(frames), width, height, fit),
            lambda layers: self.encode_guidance_window(guidance, None, width, height, fit, types, strengths,
                                                       layers=layers),
            guidance.num_frames, self.device, self.dtype, budget_bytes=options.guidance_cache_bytes,
        )

    def window_step(self, model_input: torch.Tensor, frames: Sequence[int], timestep, cond: Conditioning,
                    features: torch.Tensor) -> torch.Tensor:
        """v-prediction (batch, 4, n, h, w) float32 of one window: THE Champ forward (ChampModel.forward)."""
        index = torch.tensor(frames, dtype=torch.long, device=self.device)
        sample = model_input.index_select(2, index).to(self.dtype)
        batch = cond.batch
        return self.models(
            sample.expand(batch, -1, -1, -1, -1), timestep, cond.clip_embeds,
            guidance_features=features.expand(batch, -1, -1, -1, -1),
            reference=cond.context, reference_mask=cond.reference_mask,
        ).float()

    @staticmethod
    def guide(fused: torch.Tensor, weight_sum: torch.Tensor, cond: Conditioning, legacy_sum: bool) -> torch.Tensor:
        """Average the windows' predictions per frame, then uncond + scale * (cond - uncond)."""
        # in place where the result is bit-identical: these buffers are latent-sized
        if cond.cfg or not legacy_sum:
            fused.div_(weight_sum.view(1, 1, -1, 1, 1))
        if not cond.cfg:
            return fused
        uncond, conditional = fused.chunk(2)
        return (conditional - uncond).mul_(cond.guidance_scale).add_(uncond)

    def make_scheduler(self, options: SamplingOptions):
        scheduler = make_scheduler(options.solver, options.beta_schedule)
        scheduler.set_timesteps(options.steps, device=self.device)
        step_kwargs = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_kwargs["generator"] = seed_generator(options.seed, 1)
        return scheduler, step_kwargs

    # -- the loop --------------------------------------------------------------------------
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
        plan = self.window_plan(num_frames, options.windows)
        types = self.guidance_types(guidance, options.guidance_strengths)
        scheduler, step_kwargs = self.make_scheduler(options)
        latents = self.initial_latents(latents, num_frames, width, height, options.seed, scheduler)
        self.check_reference_latents(reference, latents)
        _call(progress, ProgressEvent("reference", 0, 1))
        cond = self.reference_stage(reference, options.guidance_scale)
        _call(progress, ProgressEvent("reference", 1, 1))
        num_steps = len(scheduler.timesteps)
        order = [window.frames for s in range(num_steps) for window in plan.windows(s)]
        done = 0
        with self.guidance_stage(guidance, width, height, fit, types, options) as features_of:
            for step, t in enumerate(scheduler.timesteps):
                windows = plan.windows(step)
                model_input = scheduler.scale_model_input(latents, t)
                fused = torch.zeros((cond.batch, *latents.shape[1:]), dtype=torch.float32, device=self.device)
                weight_sum = torch.zeros(num_frames, dtype=torch.float32, device=self.device)
                for w, window in enumerate(windows):
                    features = features_of.window(window.frames)
                    if done + 1 < len(order):
                        features_of.prefetch(order[done + 1])  # read the next window during this one
                    prediction = self.window_step(model_input, window.frames, t, cond, features)
                    index = torch.tensor(window.frames, dtype=torch.long, device=self.device)
                    weights = torch.tensor(window.weights, dtype=torch.float32, device=self.device)
                    fused.index_add_(2, index, prediction * weights.view(1, 1, -1, 1, 1))
                    weight_sum.index_add_(0, index, weights)
                    done += 1
                    _call(progress, ProgressEvent("denoise", done, len(order), step, num_steps, w, len(windows)))
                model_output = self.guide(fused, weight_sum, cond, options.legacy_sum_without_cfg)
                del fused
                latents = scheduler.step(model_output, t, latents, **step_kwargs).prev_sample.float()
                _call(on_step, step, t, model_output, latents)
        return latents


class ChampPipeline(ChampDenoiser):
    """Champ's windowed video sampler: the Champ networks plus a VAE and an image encoder, all required."""

    def __init__(self, models, vae: LatentCodec, image_encoder: ImageEmbedder) -> None:
        super().__init__(models)
        missing = [name for name, part in (("vae", vae), ("image_encoder", image_encoder)) if part is None]
        if missing:
            raise InputError(f"ChampPipeline needs {' and '.join(missing)}; for one part alone use "
                             "encode_reference / decode_latents (VAE, image encoder) or ChampDenoiser (networks)")
        self.vae = vae
        self.image_encoder = image_encoder

    def encode_reference(self, image, width: int, height: int, fit: str = "squash",
                         background=(255, 255, 255)) -> ReferenceEncoding:
        return encode_reference(self.vae, self.image_encoder, image, width, height, fit, background)

    def decode(
        self,
        latents: torch.Tensor,
        chunk_size: int = 4,
        output_size: tuple[int, int] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[range, torch.Tensor]]:
        return decode_latents(self.vae, latents, chunk_size, output_size, progress)

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
        return AnimationResult(latents=unscaled_latents(final, self.vae.scaling_factor).cpu(), frames=frames)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float frames in [0, 1] -> uint8 numpy, rounded."""
    return (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
