"""Seeds: ComfyUI's seed widgets span 0 .. 2**64 - 1, torch generators take exactly that range."""

from __future__ import annotations

import torch

SEED_RANGE = 1 << 64


def seed_generator(seed: int, offset: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded with (seed + offset) mod 2**64, so a derived stream (offset 1, 2 ...)
    of the largest seed wraps around instead of overflowing torch's unsigned 64-bit seed."""
    return torch.Generator(device).manual_seed((int(seed) + int(offset)) % SEED_RANGE)
