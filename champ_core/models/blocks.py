"""UNet building blocks. Every 2D op runs per frame: video tensors are folded to (batch*frames, C, h, w).

diffusers supplies the standard parts (ResnetBlock2D, BasicTransformerBlock, Downsample2D,
Upsample2D); the feed-forwards (`GEGLUFeedForward`, diffusers' layout) and the motion modules (AnimateDiff v2 layout) are written here. Module and
parameter names follow the reference implementation's state dicts, so released weights load
without renaming.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .attention import attend, merge_heads, split_heads
from .config import MotionModuleConfig

TRANSFORMER_NORM_EPS = 1e-6  # GroupNorm in front of spatial transformers and motion modules


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, h, w) -> (B*F, C, h, w), batch-major (all frames of item 0 first)."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def unfold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B*F, C, h, w) -> (B, C, F, h, w)."""
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).permute(0, 2, 1, 3, 4)


# Rows of a feed-forward's input processed at once in inference, so its widest intermediate (the
# GEGLU projection, 8x the channels) stays about this many elements: 4 MiB in fp32 on a CPU, where
# fresh buffers above glibc's 32 MiB mmap threshold cost a page fault per 4 KiB; on a GPU the
# caching allocator has no such cost, so the chunks are only there to bound peak memory.
FEED_FORWARD_CHUNK_ELEMENTS = {"cpu": 1 << 20}
FEED_FORWARD_CHUNK_ELEMENTS_DEFAULT = 1 << 26


class GEGLUFeedForward(nn.Module):
    """diffusers' `FeedForward(dim, activation_fn="geglu")` with the same parameter names
    (`net.0.proj`, `net.2`), and an inference path that computes the same numbers with less memory
    traffic: row chunks, GELU and the gate product in place, the output projection written into one
    preallocated tensor (measured bit-identical on CPU; docs/benchmarks.md). With autograd on, it
    runs diffusers' formula unchanged."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        projection = nn.Module()
        projection.proj = nn.Linear(dim, inner * 2)
        self.net = nn.ModuleList([projection, nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj, out = self.net[0].proj, self.net[2]
        if torch.is_grad_enabled() or self.training:
            hidden, gate = proj(x).chunk(2, dim=-1)
            return out(self.net[1](hidden * torch.nn.functional.gelu(gate)))
        return geglu_feed_forward(x, proj.weight, proj.bias, out.weight, out.bias)


def geglu_feed_forward(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor,
                       b_out: torch.Tensor, chunk_elements: int | None = None) -> torch.Tensor:
    """out(h * gelu(g)) with [h, g] = x @ w_in.T + b_in, for inference (no autograd)."""
    inner = w_in.shape[0] // 2
    rows_in = x.reshape(-1, x.shape[-1])
    rows = rows_in.shape[0]
    if chunk_elements is None:
        chunk_elements = FEED_FORWARD_CHUNK_ELEMENTS.get(x.device.type, FEED_FORWARD_CHUNK_ELEMENTS_DEFAULT)
    chunk = max(1, chunk_elements // (2 * inner))
    result = torch.empty((rows, w_out.shape[0]), dtype=x.dtype, device=x.device)
    for start in range(0, rows, chunk):
        projected = torch.nn.functional.linear(rows_in[start:start + chunk], w_in, b_in)
        hidden, gate = projected[:, :inner], projected[:, inner:]
        torch.ops.aten.gelu_(gate)
        hidden.mul_(gate)
        torch.addmm(b_out, hidden, w_out.t(), out=result[start:start + chunk])
    return result.view(*x.shape[:-1], w_out.shape[0])


class SpatialTransformer(nn.Module):
    """GroupNorm, 1x1 conv in, transformer block(s) over the h*w tokens of each image, 1x1 conv out, residual."""

    def __init__(self, channels: int, heads: int, cross_attention_dim: int | None, norm_num_groups: int = 32):
        from diffusers.models.attention import BasicTransformerBlock

        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=TRANSFORMER_NORM_EPS, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, channels // heads, cross_attention_dim=cross_attention_dim)]
        )
        for block in self.transformer_blocks:  # same parameter names, faster inference path
            block.ff = GEGLUFeedForward(channels)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        residual = x
        x = self.proj_in(self.norm(x))
        x = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states=context)
        x = x.reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(x) + residual


# ----------------------------------------------------------------------------------------------
# Motion modules (AnimateDiff "Vanilla" temporal transformer)


class SinusoidalPositionEncoding(nn.Module):
    """Standard sinusoid over frame positions; a persistent buffer (it is part of the checkpoints)."""

    def __init__(self, channels: int, max_frames: int):
        super().__init__()
        position = torch.arange(max_frames, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
        pe = torch.zeros(1, max_frames, channels)
        pe[0, :, 0::2] = torch.sin(position * frequency)
        pe[0, :, 1::2] = torch.cos(position * frequency)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


class TemporalSelfAttention(nn.Module):
    """Self-attention across the frames at each spatial position, with position encoding on its input."""

    def __init__(self, channels: int, heads: int, max_frames: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])
        self.pos_encoder = SinusoidalPositionEncoding(channels, max_frames)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bf, tokens, c = x.shape
        batch = bf // frames
        # (B*F, N, C) -> (B*N, F, C): one sequence per spatial position
        x = x.view(batch, frames, tokens, c).transpose(1, 2).reshape(batch * tokens, frames, c)
        x = self.pos_encoder(x)
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.to_q, self.to_k, self.to_v))
        x = self.to_out[1](self.to_out[0](merge_heads(attend(q, k, v))))
        return x.view(batch, tokens, frames, c).transpose(1, 2).reshape(bf, tokens, c)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [
                TemporalSelfAttention(channels, config.num_attention_heads, config.max_frames)
                for _ in range(config.num_attention_blocks)
            ]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in range(config.num_attention_blocks)])
        self.ff = GEGLUFeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        self.norm = nn.GroupNorm(config.norm_num_groups, channels, eps=TRANSFORMER_NORM_EPS, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, config) for _ in range(config.num_transformer_blocks)]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        n, c, h, w = x.shape
        residual = x
        x = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, frames)
        x = self.proj_out(x)
        return x.reshape(n, h, w, c).permute(0, 3, 1, 2) + residual


class MotionModule(nn.Module):
    """Wrapper that gives the reference's key names (`motion_modules.N.temporal_transformer.*`)."""

    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, config)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, frames)


# ----------------------------------------------------------------------------------------------
# UNet stages


class Checkpointed(nn.Module):
    """Optional gradient checkpointing of a stage's units (set by `_UNetCore.set_gradient_checkpointing`).

    Non-reentrant `torch.utils.checkpoint`: tensors that leave a unit through a side channel (the
    ReferenceNet's recorded tokens) keep their gradient path. `recompute_context`, when set by the
    UNet for the duration of a forward, returns a context manager that puts per-call state (the
    reference readers') back while a unit is recomputed during backward.
    """

    gradient_checkpointing: bool = False
    recompute_context = None

    def _run(self, fn, *args):
        if not (self.gradient_checkpointing and torch.is_grad_enabled()):
            return fn(*args)
        from torch.utils.checkpoint import checkpoint

        factory = self.recompute_context

        def contexts():
            return contextlib.nullcontext(), (factory() if factory is not None else contextlib.nullcontext())

        return checkpoint(fn, *args, use_reentrant=False, context_fn=contexts)


def _resnet(in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float) -> nn.Module:
    from diffusers.models.resnet import ResnetBlock2D

    return ResnetBlock2D(
        in_channels=in_channels, out_channels=out_channels, temb_channels=temb_channels, groups=groups, eps=eps
    )


class Stage(Checkpointed):
    """Shared forward of the down/up stages: resnet -> [spatial transformer] -> [motion module] per unit."""

    resnets: nn.ModuleList
    attentions: nn.ModuleList | None
    motion_modules: nn.ModuleList | None

    def _build_units(self, channels_in: list[int], out: int, temb: int, cross_dim: int | None, heads: int,
                     groups: int, eps: float, motion: MotionModuleConfig | None) -> None:
        self.resnets = nn.ModuleList([_resnet(c, out, temb, groups, eps) for c in channels_in])
        if cross_dim is not None:
            self.attentions = nn.ModuleList(
                [SpatialTransformer(out, heads, cross_dim, groups) for _ in channels_in]
            )
        if motion is not None:
            self.motion_modules = nn.ModuleList([MotionModule(out, motion) for _ in channels_in])

    def _unit(self, i: int, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None, frames: int):
        x = self.resnets[i](x, temb)
        if getattr(self, "attentions", None) is not None:
            x = self.attentions[i](x, context)
        if getattr(self, "motion_modules", None) is not None:
            x = self.motion_modules[i](x, frames)
        return x


class DownStage(Stage):
    def __init__(self, in_channels: int, out_channels: int, layers: int, temb_channels: int,
                 cross_attention_dim: int | None, heads: int, groups: int, eps: float,
                 motion: MotionModuleConfig | None, add_downsample: bool):
        from diffusers.models.downsampling import Downsample2D

        super().__init__()
        self._build_units([in_channels] + [out_channels] * (layers - 1), out_channels, temb_channels,
                          cross_attention_dim, heads, groups, eps, motion)
        if add_downsample:
            self.downsamplers = nn.ModuleList(
                [Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=1, name="op")]
            )

    def forward(self, x, temb, context, frames):
        skips = []
        for i in range(len(self.resnets)):
            x = self._run(self._unit, i, x, temb, context, frames)
            skips.append(x)
        if getattr(self, "downsamplers", None) is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpStage(Stage):
    def __init__(self, in_channels: int, out_channels: int, prev_channels: int, layers: int, temb_channels: int,
                 cross_attention_dim: int | None, heads: int, groups: int, eps: float,
                 motion: MotionModuleConfig | None, add_upsample: bool):
        from diffusers.models.upsampling import Upsample2D

        super().__init__()
        channels_in = []
        for i in range(layers):
            skip = in_channels if i == layers - 1 else out_channels
            channels_in.append((prev_channels if i == 0 else out_channels) + skip)
        self._build_units(channels_in, out_channels, temb_channels, cross_attention_dim, heads, groups, eps, motion)
        if add_upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])

    def forward(self, x, skips, temb, context, frames, upsample_size=None):
        for i in range(len(self.resnets)):
            x = torch.cat([x, skips.pop()], dim=1)
            x = self._run(self._unit, i, x, temb, context, frames)
        if getattr(self, "upsamplers", None) is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidStage(Checkpointed):
    """resnet -> spatial transformer -> [motion module] -> resnet."""

    def __init__(self, channels: int, temb_channels: int, cross_attention_dim: int, heads: int, groups: int,
                 eps: float, motion: MotionModuleConfig | None):
        super().__init__()
        self.resnets = nn.ModuleList([_resnet(channels, channels, temb_channels, groups, eps) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialTransformer(channels, heads, cross_attention_dim, groups)])
        if motion is not None:
            self.motion_modules = nn.ModuleList([MotionModule(channels, motion)])

    def _units(self, x, temb, context, frames):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        if getattr(self, "motion_modules", None) is not None:
            x = self.motion_modules[0](x, frames)
        return self.resnets[1](x, temb)

    def forward(self, x, temb, context, frames):
        return self._run(self._units, x, temb, context, frames)
