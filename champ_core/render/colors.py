"""Colour conventions of Champ's guidance maps: the semantic part palette and sRGB transfer curves.

The reference colours each body part with OpenCV's VIRIDIS colour map sampled at 10 x label (label =
the SMPL joint whose skinning weight is largest at that vertex), stored in RGB order. Only those 24
entries are needed, so they are kept here as data instead of importing OpenCV at run time; a test
checks them against `cv2.applyColorMap`.
"""

from __future__ import annotations

import numpy as np
import torch

# RGB colour of SMPL joint label 0..23 (= OpenCV COLORMAP_VIRIDIS at index 10 * label).
SEMANTIC_LUT_RGB = np.array(
    [
        (68, 1, 84), (71, 16, 99), (72, 29, 111), (71, 42, 122), (69, 55, 129), (65, 66, 135),
        (61, 78, 138), (56, 89, 140), (51, 99, 141), (46, 109, 142), (42, 118, 142), (39, 128, 142),
        (35, 137, 142), (32, 146, 140), (30, 156, 137), (33, 165, 133), (40, 174, 128), (53, 183, 121),
        (70, 192, 111), (90, 200, 100), (112, 207, 87), (137, 213, 72), (162, 218, 55), (189, 223, 38),
    ],
    dtype=np.uint8,
)  # fmt: skip
NUM_PART_LABELS = len(SEMANTIC_LUT_RGB)


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """The sRGB electro-optical transfer function (piecewise), values in [0, 1]."""
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """Inverse of `srgb_to_linear` (Blender's "Standard" view transform), values in [0, 1]."""
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055)


def part_colors(part_labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-vertex RGB uint8 colours (V, 3) for integer part labels (V,) in 0..23."""
    labels = np.asarray(part_labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_PART_LABELS):
        raise ValueError(
            f"part labels must be SMPL joint indices 0..{NUM_PART_LABELS - 1}; got {labels.min()}..{labels.max()}"
        )
    return SEMANTIC_LUT_RGB[labels]
