"""The two UNets: the ReferenceNet (2D, writes reference tokens) and the denoising UNet3D (reads them).

Both share one SD1.5-style skeleton (`_UNetCore`). The denoising UNet folds video frames into the
batch for every 2D op and adds a motion module after every resnet(+attention) unit (AnimateDiff v2:
21 modules at SD1.5 size). Reference attention uses attention processors (see attention.py); the
reference tokens' key/value projections are computed once per video in `prepare_reference`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (
    CrossAttnProcessor,
    ReferenceReadProcessor,
    ReferenceWriteProcessor,
    SelfAttnProcessor,
    mask_runs,
    split_heads,
)
from .blocks import DownStage, MidStage, SpatialTransformer, Stage, UpStage, fold_frames, unfold_frames
from .config import UNetConfig
from .errors import ModelInputError, WindowTooLongError


@dataclass
class ReferenceFeatures:
    """What the ReferenceNet writes: per transformer block, the self-attention input tokens (B, N, C).

    Keys are block names, e.g. "down_blocks.0.attentions.0.transformer_blocks.0".
    """

    tokens: dict[str, torch.Tensor]

    @property
    def batch_size(self) -> int:
        return next(iter(self.tokens.values())).shape[0]


@dataclass
class ReferenceContext:
    """Reference keys/values per self-attention layer of the denoising UNet, ready to be read.

    `keys_values[name] = (keys, values)`, each (R, heads, N_ref, head_dim) in the UNet's dtype.
    Built once per video by `DenoisingUNet3D.prepare_reference`; reused for every step and window.
    """

    keys_values: dict[str, tuple[torch.Tensor, torch.Tensor]]
    batch_size: int
    rounded_to_fp16: bool


def _timestep_batch(timestep, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1 or t.shape[0] not in (1, batch):
        raise ModelInputError(f"timestep must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t.expand(batch)


class _UNetCore(nn.Module):
    """SD1.5 UNet skeleton over 2D (per-frame) tensors; `forward_core` works on folded frames."""

    def __init__(self, config: UNetConfig):
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        super().__init__()
        self.config = config
        c = config
        widths = c.block_out_channels
        temb = widths[0] * 4
        groups, eps, heads = c.norm_num_groups, c.norm_eps, c.num_attention_heads
        self.conv_in = nn.Conv2d(c.in_channels, widths[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(widths[0], c.flip_sin_to_cos, c.freq_shift)
        self.time_embedding = TimestepEmbedding(widths[0], temb)

        self.down_blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            self.down_blocks.append(
                DownStage(
                    widths[max(i - 1, 0)], width, c.layers_per_block, temb,
                    c.cross_attention_dim if c.down_cross_attention[i] else None, heads, groups, eps, c.motion,
                    add_downsample=i < len(widths) - 1,
                )
            )
        self.up_blocks = nn.ModuleList()
        reversed_widths = list(reversed(widths))
        for i, width in enumerate(reversed_widths):
            self.up_blocks.append(
                UpStage(
                    reversed_widths[min(i + 1, len(widths) - 1)], width, reversed_widths[max(i - 1, 0)],
                    c.layers_per_block + 1, temb,
                    c.cross_attention_dim if c.up_cross_attention[i] else None, heads, groups, eps, c.motion,
                    add_upsample=i < len(widths) - 1,
                )
            )
        self.mid_block = MidStage(widths[-1], temb, c.cross_attention_dim, heads, groups, eps, c.motion)
        if c.out_channels is not None:
            self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=eps)
            self.conv_out = nn.Conv2d(widths[0], c.out_channels, kernel_size=3, padding=1)
        self.cross_attention_shortcut = True
        self.gradient_checkpointing = False
        for attn in self.cross_attentions():
            attn.set_processor(CrossAttnProcessor())

    def set_cross_attention_shortcut(self, enabled: bool) -> None:
        """Single-token cross-attention as `to_out(to_v(token))` (default) or the general product.

        Same values either way. The general path keeps `attn2.to_q`, `attn2.to_k` and `norm2` in
        the autograd graph, where they get exactly zero gradients (softmax over one key is 1), as in
        the reference; with the shortcut their `.grad` stays None. Training uses the general path,
        so optimizers treat those tensors as the reference's do (weight decay included).
        """
        self.cross_attention_shortcut = bool(enabled)
        for attn in self.cross_attentions():
            attn.set_processor(CrossAttnProcessor() if enabled else SelfAttnProcessor())

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute every resnet(+attention)(+motion module) unit in backward (non-reentrant
        checkpoints, so reference tokens written inside a unit keep their gradient path)."""
        self.gradient_checkpointing = bool(enabled)
        for module in self.modules():
            if isinstance(module, (Stage, MidStage)):
                module.gradient_checkpointing = bool(enabled)

    def _set_recompute_context(self, factory) -> None:
        for module in self.modules():
            if isinstance(module, (Stage, MidStage)):
                module.recompute_context = factory

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def transformer_blocks(self) -> dict[str, nn.Module]:
        """Spatial transformer blocks by name, in module order."""
        blocks = {}
        for name, module in self.named_modules():
            if isinstance(module, SpatialTransformer):
                for j, block in enumerate(module.transformer_blocks):
                    blocks[f"{name}.transformer_blocks.{j}"] = block
        return blocks

    def cross_attentions(self):
        return [block.attn2 for block in self.transformer_blocks().values() if block.attn2 is not None]

    def time_embed(self, timestep, batch: int) -> torch.Tensor:
        t = _timestep_batch(timestep, batch, self.device)
        return self.time_embedding(self.time_proj(t).to(self.dtype))

    def forward_core(self, x, temb, context, frames: int, guidance=None):
        """x (N, C, h, w), temb (N, T), context (N, tokens, D) with N = batch * frames."""
        up_factor = 2 ** (len(self.up_blocks) - 1)
        forward_size = any(s % up_factor for s in x.shape[-2:])
        x = self.conv_in(x)
        if guidance is not None:
            x = x + guidance
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context, frames)
            skips.extend(block_skips)
        x = self.mid_block(x, temb, context, frames)
        for i, block in enumerate(self.up_blocks):
            block_skips = skips[-len(block.resnets):]
            del skips[-len(block.resnets):]
            size = skips[-1].shape[2:] if forward_size and i < len(self.up_blocks) - 1 else None
            x = block(x, block_skips, temb, context, frames, size)
        if self.config.out_channels is not None:
            x = self.conv_out(F.silu(self.conv_norm_out(x)))
        return x


class ReferenceUNet(_UNetCore):
    """The ReferenceNet: an SD1.5 UNet without output head; it runs for its reference tokens only."""

    def __init__(self, config: UNetConfig):
        if config.motion is not None:
            raise ValueError("the ReferenceNet has no motion modules")
        super().__init__(config)
        self._writers = {}
        for name, block in self.transformer_blocks().items():
            processor = ReferenceWriteProcessor(name)
            block.attn1.set_processor(processor)
            self._writers[name] = processor

    def forward(self, latents: torch.Tensor, timestep, clip_embeds: torch.Tensor) -> ReferenceFeatures:
        """latents (B, 4, h, w) (VAE mean x 0.18215), timestep (0 in Champ), clip_embeds (B, 1, D)."""
        if latents.ndim != 4:
            raise ModelInputError(f"reference latents must be (B, C, h, w), got {tuple(latents.shape)}")
        batch = latents.shape[0]
        if clip_embeds.ndim != 3 or clip_embeds.shape[0] != batch:
            raise ModelInputError(f"clip_embeds must be ({batch}, tokens, D), got {tuple(clip_embeds.shape)}")
        sink: dict[str, torch.Tensor] = {}
        for writer in self._writers.values():
            writer.sink = sink
        try:
            temb = self.time_embed(timestep, batch)
            self.forward_core(latents.to(self.dtype), temb, clip_embeds.to(self.dtype), frames=1)
        finally:
            for writer in self._writers.values():
                writer.sink = None
        return ReferenceFeatures({name: sink[name] for name in self._writers})


class DenoisingUNet3D(_UNetCore):
    """The video UNet: SD1.5 layout per frame, AnimateDiff v2 motion modules, reference attention."""

    def __init__(self, config: UNetConfig, *, round_reference_to_fp16: bool = True):
        # config.motion None: the stage-1 denoiser (no motion modules; every frame on its own)
        super().__init__(config)
        # Compatibility with the reference implementation: it hands the reference tokens to the
        # reader as float16 even in a float32 run (see docs/models.md).
        self.round_reference_to_fp16 = round_reference_to_fp16
        self._readers = {}
        for name, block in self.transformer_blocks().items():
            processor = ReferenceReadProcessor(name)
            block.attn1.set_processor(processor)
            self._readers[name] = processor

    @property
    def has_motion_modules(self) -> bool:
        return self.config.motion is not None

    @property
    def max_frames(self) -> int | None:
        """Frames one call may hold (the position encoding's length); None without motion modules."""
        return self.config.motion.max_frames if self.config.motion is not None else None

    @contextlib.contextmanager
    def _reader_state(self, state: dict):
        """Put the readers' per-call state back for a checkpointed unit's recomputation in backward."""
        saved = {name: dict(vars(reader)) for name, reader in self._readers.items()}
        for name, reader in self._readers.items():
            vars(reader).update(state[name])
        try:
            yield
        finally:
            for name, reader in self._readers.items():
                vars(reader).update(saved[name])

    def prepare_reference(self, features: ReferenceFeatures) -> ReferenceContext:
        """Project the reference tokens with every reader layer's to_k/to_v, once per video.

        Differentiable (training backpropagates through it); loaded models have requires_grad off.
        """
        blocks = self.transformer_blocks()
        if set(features.tokens) != set(blocks):
            missing = sorted(set(blocks) - set(features.tokens))
            extra = sorted(set(features.tokens) - set(blocks))
            raise ModelInputError(
                f"reference features do not match the denoising UNet's blocks (missing {missing}, unexpected {extra}); "
                "use a ReferenceNet of the same architecture"
            )
        keys_values = {}
        for name, block in blocks.items():
            tokens = features.tokens[name]
            if tokens.shape[-1] != block.norm1.normalized_shape[0]:
                raise ModelInputError(f"reference tokens of {name} have width {tokens.shape[-1]}, expected "
                                      f"{block.norm1.normalized_shape[0]}")
            if self.round_reference_to_fp16:
                tokens = tokens.to(torch.float16)
            tokens = tokens.to(device=self.device, dtype=self.dtype)
            attn = block.attn1
            keys_values[name] = (split_heads(attn.to_k(tokens), attn.heads), split_heads(attn.to_v(tokens), attn.heads))
        return ReferenceContext(keys_values, features.batch_size, self.round_reference_to_fp16)

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        clip_embeds: torch.Tensor,
        guidance_features: torch.Tensor | None = None,
        reference: ReferenceContext | None = None,
        reference_batch_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """sample (B, 4, F, h, w) -> prediction (B, out, F, h, w).

        Rows whose `reference_batch_mask` entry is False attend without reference tokens (CFG's
        unconditional half). A reference of batch 1 is shared by all rows; otherwise its batch
        must equal B.
        """
        if sample.ndim != 5:
            raise ModelInputError(f"sample must be (B, C, F, h, w), got {tuple(sample.shape)}")
        batch, _, frames, height, width = sample.shape
        if self.max_frames is not None and frames > self.max_frames:
            raise WindowTooLongError(
                f"{frames} frames in one call, but the motion modules' position encoding covers at most "
                f"{self.max_frames}; use temporal windows of <= {self.max_frames} frames"
            )
        if clip_embeds.ndim != 3 or clip_embeds.shape[0] not in (1, batch):
            raise ModelInputError(f"clip_embeds must be ({batch}, tokens, D), got {tuple(clip_embeds.shape)}")
        if guidance_features is not None:
            expected = (batch, self.config.block_out_channels[0], frames, height, width)
            if tuple(guidance_features.shape) != expected:
                raise ModelInputError(f"guidance_features must have shape {expected}, got {tuple(guidance_features.shape)}")
        row_index = row_runs = None
        if reference is not None:
            if reference.batch_size == 1:
                ref_rows = torch.zeros(batch, dtype=torch.long, device=self.device)
            elif reference.batch_size == batch:
                ref_rows = torch.arange(batch, device=self.device)
            else:
                raise ModelInputError(f"reference batch {reference.batch_size} does not match sample batch {batch} "
                                      "(use a reference of batch 1 or B)")
            row_index = ref_rows.repeat_interleave(frames)
            if reference_batch_mask is not None:
                mask = torch.as_tensor(reference_batch_mask, dtype=torch.bool, device=self.device)
                if mask.shape != (batch,):
                    raise ModelInputError(f"reference_batch_mask must have shape ({batch},), got {tuple(mask.shape)}")
                row_runs = mask_runs(mask.repeat_interleave(frames))
        for name, reader in self._readers.items():
            reader.reference = reference.keys_values[name] if reference is not None else None
            reader.row_index, reader.row_runs = row_index, row_runs
        if self.gradient_checkpointing:
            state = {name: dict(vars(reader)) for name, reader in self._readers.items()}
            self._set_recompute_context(lambda: self._reader_state(state))
        try:
            temb = self.time_embed(timestep, batch).repeat_interleave(frames, dim=0)
            context = clip_embeds.to(self.dtype).expand(batch, -1, -1).repeat_interleave(frames, dim=0)
            x = fold_frames(sample.to(self.dtype))
            guidance = fold_frames(guidance_features.to(self.dtype)) if guidance_features is not None else None
            out = self.forward_core(x, temb, context, frames, guidance)
        finally:
            for reader in self._readers.values():
                reader.reference = reader.row_index = reader.row_runs = None
            if self.gradient_checkpointing:
                self._set_recompute_context(None)
        return unfold_frames(out, frames)
