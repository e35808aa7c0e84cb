"""Guidance encoder: a per-frame conv stack (8x down), one spatial self-attention block, a conv out.

The reference builds an attention block after every conv plus one more (`guidance_attention`), but
its forward only runs the last of the per-conv blocks. This module holds just what runs; the
loader maps the reference's `attentions.<last>.*` onto `attention.*` and drops the never-run
blocks by an explicit rule (see checkpoints.py and docs/models.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SelfAttnProcessor
from .blocks import SpatialTransformer, fold_frames, unfold_frames
from .config import GuidanceEncoderConfig
from .errors import ModelInputError


class GuidanceEncoder(nn.Module):
    def __init__(self, config: GuidanceEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or GuidanceEncoderConfig()
        widths = config.block_out_channels
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], kernel_size=3, padding=1)
        convs = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            convs.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            convs.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(convs)
        self.attention = SpatialTransformer(widths[-1], config.num_attention_heads, None, config.norm_num_groups)
        self.attention.transformer_blocks[0].attn1.set_processor(SelfAttnProcessor())
        self.conv_out = nn.Conv2d(widths[-1], config.embedding_channels, kernel_size=3, padding=1)

    @property
    def downsampling(self) -> int:
        """Pixels per feature along each side: one stride-2 conv per step of `block_out_channels`."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def num_reference_attention_blocks(self) -> int:
        """How many `attentions.N` blocks the reference builds (one after every conv of `blocks`)."""
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, F, H, W) in [0, 1] -> (B, C, F, ceil(H/d), ceil(W/d)), d = `downsampling` (8 in Champ)."""
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ModelInputError(
                f"guidance must be (B, {self.config.in_channels}, F, H, W) in [0, 1], got {tuple(x.shape)}"
            )
        frames = x.shape[2]
        weight = self.conv_in.weight
        h = F.silu(self.conv_in(fold_frames(x.to(device=weight.device, dtype=weight.dtype))))
        for conv in self.blocks:
            h = F.silu(conv(h))
        h = self.attention(h)
        return unfold_frames(self.conv_out(h), frames)
