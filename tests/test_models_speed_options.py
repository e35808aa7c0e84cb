"""The inference fast paths compute the same numbers as the formulas they replace.

- `GEGLUFeedForward` (blocks.py): diffusers' FeedForward(geglu) layout and numbers; its inference
  path (row chunks, in-place GELU and gate product) equals the plain formula, and training keeps
  the plain formula (gradients flow to every parameter).
- `attend` (attention.py): short key sequences on the CPU (the motion modules') use product + softmax
  instead of the fused kernel: the same values within float rounding, gradients through SDPA.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from champ_core.models.attention import SHORT_KEYS_ON_CPU, attend
from champ_core.models.blocks import GEGLUFeedForward, geglu_feed_forward


def diffusers_ff(dim: int):
    from diffusers.models.attention import FeedForward

    return FeedForward(dim, dropout=0.0, activation_fn="geglu").eval()


@pytest.mark.parametrize("dim, shape", [(16, (3, 50, 16)), (32, (2, 7, 32))])
def test_geglu_feed_forward_matches_diffusers(dim, shape):
    torch.manual_seed(0)
    reference = diffusers_ff(dim)
    ours = GEGLUFeedForward(dim).eval()
    assert sorted(ours.state_dict()) == sorted(reference.state_dict())  # checkpoints load unchanged
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = reference(x)
        fast = ours(x)
        for chunk in (1, 64, 10_000):  # row chunks of 1 row, a few rows, everything
            chunked = geglu_feed_forward(x, ours.net[0].proj.weight, ours.net[0].proj.bias, ours.net[2].weight,
                                         ours.net[2].bias, chunk_elements=chunk * 8 * dim)
            assert torch.allclose(chunked, expected, rtol=0, atol=1e-6)
    assert fast.shape == expected.shape
    assert torch.allclose(fast, expected, rtol=0, atol=1e-6)


def test_geglu_feed_forward_trains_with_the_plain_formula():
    torch.manual_seed(0)
    reference = diffusers_ff(16)
    ours = GEGLUFeedForward(16)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 5, 16, requires_grad=True)
    out = ours(x)
    assert torch.equal(out, reference.train()(x))
    out.square().sum().backward()
    assert x.grad is not None and all(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())


@pytest.mark.parametrize("keys", [12, SHORT_KEYS_ON_CPU, SHORT_KEYS_ON_CPU + 1, 300])
def test_attend_equals_scaled_dot_product_attention(keys):
    torch.manual_seed(0)
    q = torch.randn(6, 4, keys, 8)  # (sequences, heads, tokens, head dim)
    k, v = torch.randn(6, 4, keys, 8), torch.randn(6, 4, keys, 8)
    expected = F.scaled_dot_product_attention(q, k, v)
    with torch.no_grad():
        out = attend(q, k, v)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, rtol=0, atol=2e-6)


def test_attend_with_autograd_uses_sdpa_and_backpropagates():
    torch.manual_seed(0)
    q = torch.randn(2, 2, 12, 8, requires_grad=True)
    k, v = torch.randn(2, 2, 12, 8), torch.randn(2, 2, 12, 8)
    out = attend(q, k, v)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    out.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
