"""Attention processors (for diffusers' `Attention` modules) built on torch's scaled-dot-product attention.

Reference attention ("mutual self-attention") is done with processors instead of patching
diffusers classes:
- `ReferenceWriteProcessor` sits on every spatial self-attention (`attn1`) of the ReferenceNet and
  records its input tokens (the output of the block's `norm1`) before attending normally;
- `ReferenceReadProcessor` sits on every `attn1` of the denoising UNet. When the UNet hands it
  precomputed reference keys/values, the rows that read the reference attend to
  [their own tokens ; the reference tokens]; the other rows attend to their own tokens only.
The processors hold per-call state only while their UNet's forward runs (set and cleared there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads)."""
    batch, tokens, channels = x.shape
    return x.view(batch, tokens, heads, channels // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, D) -> (B, N, heads * D)."""
    batch, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * dim)


def project_out(attn, x: torch.Tensor) -> torch.Tensor:
    x = attn.to_out[0](x)
    return attn.to_out[1](x)  # dropout (identity at p=0 / eval)


# On a CPU, torch's fused attention kernel has a fixed cost per (sequence, head) that dominates for
# the motion modules' short sequences (one per spatial position, as long as the window): there a
# plain product + softmax is about twice as fast (docs/benchmarks.md). Longer key sequences (spatial
# attention) and every GPU call use scaled_dot_product_attention.
SHORT_KEYS_ON_CPU = 64


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with heads already split; no mask."""
    if q.device.type == "cpu" and k.shape[-2] <= SHORT_KEYS_ON_CPU and not torch.is_grad_enabled():
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)


def _check_plain(attn, attention_mask) -> None:
    if attention_mask is not None:
        raise NotImplementedError("attention masks are not used by Champ's networks")
    if attn.norm_cross is not None or attn.spatial_norm is not None or attn.group_norm is not None:
        raise NotImplementedError("Champ's attention layers have no extra norms")


class SelfAttnProcessor:
    """Plain self-attention (the guidance encoder's attention, and the default of `attn1`)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None) -> torch.Tensor:
        _check_plain(attn, attention_mask)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = split_heads(attn.to_q(hidden_states), attn.heads)
        k = split_heads(attn.to_k(context), attn.heads)
        v = split_heads(attn.to_v(context), attn.heads)
        return project_out(attn, merge_heads(attend(q, k, v)))


class CrossAttnProcessor:
    """Cross-attention to the CLIP token(s).

    Champ's image conditioning is a single token. Softmax over one key is exactly 1, so the layer
    is `to_out(to_v(token))` added at every position: the query projection and the attention
    product are skipped (same numbers, a fraction of the work). More than one token falls back to
    the general computation.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None) -> torch.Tensor:
        _check_plain(attn, attention_mask)
        if encoder_hidden_states is None:
            raise ValueError("cross-attention needs encoder_hidden_states (the CLIP image embedding)")
        if encoder_hidden_states.shape[1] == 1:
            value = project_out(attn, attn.to_v(encoder_hidden_states))  # (B, 1, C)
            return value.expand(-1, hidden_states.shape[1], -1)
        return SelfAttnProcessor()(attn, hidden_states, encoder_hidden_states)


class ReferenceWriteProcessor(SelfAttnProcessor):
    """Self-attention that also records its input tokens into `sink[name]` while `sink` is set."""

    def __init__(self, name: str):
        self.name = name
        self.sink: dict[str, torch.Tensor] | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None) -> torch.Tensor:
        if self.sink is not None:
            self.sink[self.name] = hidden_states
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask)


class ReferenceReadProcessor:
    """Self-attention over [own tokens ; reference tokens] for the rows that read the reference.

    Per-call state, set by the denoising UNet around its forward:
    - `reference`: (keys, values), each (R, heads, N_ref, D), already projected by this layer's
      `to_k`/`to_v` (once per video, in `DenoisingUNet3D.prepare_reference`);
    - `row_index`: (rows,) long, which reference row each (batch x frame) row reads;
    - `row_runs`: None (every row reads the reference) or [(start, stop, reads)] covering the rows
      in order; rows come batch-major, so CFG's [uncond | cond] batch is two runs.
    """

    def __init__(self, name: str):
        self.name = name
        self.reference: tuple[torch.Tensor, torch.Tensor] | None = None
        self.row_index: torch.Tensor | None = None
        self.row_runs: list[tuple[int, int, bool]] | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None) -> torch.Tensor:
        _check_plain(attn, attention_mask)
        if encoder_hidden_states is not None:
            raise ValueError("reference self-attention takes no encoder_hidden_states")
        q = split_heads(attn.to_q(hidden_states), attn.heads)
        k = split_heads(attn.to_k(hidden_states), attn.heads)
        v = split_heads(attn.to_v(hidden_states), attn.heads)
        if self.reference is None:
            return project_out(attn, merge_heads(attend(q, k, v)))
        ref_k, ref_v = self.reference
        if self.row_runs is None:
            return project_out(attn, merge_heads(self._attend_with_reference(q, k, v, ref_k, ref_v, self.row_index)))
        outputs = []  # run by run on slices (views), without gathers or scatters
        for start, stop, reads in self.row_runs:
            rows = slice(start, stop)
            if reads:
                outputs.append(self._attend_with_reference(q[rows], k[rows], v[rows], ref_k, ref_v, self.row_index[rows]))
            else:
                outputs.append(attend(q[rows], k[rows], v[rows]))
        out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return project_out(attn, merge_heads(out))

    @staticmethod
    def _attend_with_reference(q, k, v, ref_k, ref_v, index) -> torch.Tensor:
        if ref_k.shape[0] == 1:  # one reference for every row: a broadcast view, no gathered copy
            ref_k, ref_v = ref_k.expand(q.shape[0], -1, -1, -1), ref_v.expand(q.shape[0], -1, -1, -1)
        else:
            ref_k, ref_v = ref_k[index], ref_v[index]
        return attend(q, torch.cat([k, ref_k], dim=2), torch.cat([v, ref_v], dim=2))


def mask_runs(mask: torch.Tensor) -> list[tuple[int, int, bool]]:
    """(start, stop, value) of the runs of equal values in a 1D bool tensor."""
    values = mask.tolist()
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, bool(values[start])))
            start = i
    return runs
