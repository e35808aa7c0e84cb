"""Crop and resize of training frames: the reference's two augmentations, as small pure functions.

One `CropPlan` (a box in source pixels plus how the box becomes a `size` x `size` square) is drawn per
dataset item and applied to every image of that item, so the target, each of its guidance maps, every
frame of a clip and (without `bbox_crop`) the reference get exactly the same crop. The reference meant
to do this by restoring torch's RNG state, but restored it only once per list of images.

- `bbox_crop` off: the box of torchvision's `RandomResizedCrop(size, scale=(0.9, 1.0), ratio=(1, 1))`
  (up to ten tries at a random square of 90-100 % of the frame's area, else the centred square of the
  short side: the usual outcome for frames far from square), then a bilinear resize to the square.
- `bbox_crop` on: a square around the person box (its longer side times a random factor in
  `bbox_resize_ratio`, centred on the box, clipped to the frame, coordinates truncated to integers as
  the reference does), then `aug_type` "Resize" (plain bilinear resize to the square, aspect not
  kept) or "Padding" (the long edge resized to `size`, the short one padded with black on both sides).

`clip_pixels` is the CLIP encoder's input exactly as the reference's `CLIPImageProcessor()` (transformers
4.36) computes it: shortest edge to 224 (PIL bicubic, the long edge truncated), centre crop 224 x 224,
x 1/255, OpenAI CLIP mean and std. The processor of newer transformers (5.x) gives other values (up to
0.015 apart on the training fixture), so the rule is spelled out here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..pipeline.codecs import CLIP_MEAN, CLIP_SIZE, CLIP_STD

AUG_TYPES: tuple[str, ...] = ("Resize", "Padding")
CROP_SCALE = (0.9, 1.0)
CROP_RATIO = (1.0, 1.0)
CROP_ATTEMPTS = 10


@dataclass(frozen=True)
class Box:
    """A crop box in source pixels, PIL's convention: left, top inclusive; right, bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class CropPlan:
    """How one image becomes the training square: crop `box`, then `fit` ("Resize" or "Padding")."""

    box: Box
    size: int
    fit: str = "Resize"


def random_resized_crop_box(
    rng: np.random.Generator, width: int, height: int,
    scale: tuple[float, float] = CROP_SCALE, ratio: tuple[float, float] = CROP_RATIO,
) -> Box:
    """The box `RandomResizedCrop` would cut from a `width` x `height` frame (its sampling rule)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(CROP_ATTEMPTS):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return Box(left, top, left + w, top + h)
    # fallback: the centred crop closest to the allowed aspect range
    frame_ratio = width / height
    if frame_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif frame_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return Box(left, top, left + w, top + h)


def person_box(bbox: Sequence[float], width: int, height: int, scale: float) -> Box:
    """The square around a person box [x0, y0, x1, y1], scaled by `scale`, clipped to the frame."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    side = max(x1 - x0, y1 - y0) * scale
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, right = int(max(0.0, cx - side / 2)), int(min(float(width), cx + side / 2))
    top, bottom = int(max(0.0, cy - side / 2)), int(min(float(height), cy + side / 2))
    if right <= left or bottom <= top:  # a box outside the frame: keep the whole frame
        return Box(0, 0, width, height)
    return Box(left, top, right, bottom)


def mean_bbox(bboxes: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """The mean person box over a clip's frames (stage 2 crops the whole clip around it)."""
    mean = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4).mean(axis=0)
    return tuple(float(v) for v in mean)


def full_frame(width: int, height: int) -> Box:
    return Box(0, 0, width, height)


def apply_plan(image: np.ndarray, plan: CropPlan) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3): crop the plan's box, then resize (or resize and pad)."""
    from PIL import Image

    box, size = plan.box, plan.size
    cropped = Image.fromarray(np.ascontiguousarray(image[box.top:box.bottom, box.left:box.right]))
    if plan.fit == "Resize":
        return np.asarray(cropped.resize((size, size), Image.Resampling.BILINEAR))
    if plan.fit != "Padding":
        raise ValueError(f"unknown aug_type {plan.fit!r}; choose one of {', '.join(AUG_TYPES)}")
    w, h = cropped.size
    factor = size / max(w, h)
    new_w, new_h = max(1, int(w * factor)), max(1, int(h * factor))
    resized = np.asarray(cropped.resize((new_w, new_h), Image.Resampling.BILINEAR))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def clip_pixels(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, 224, 224): the CLIP image encoder's input (see the module docstring)."""
    from PIL import Image

    height, width = image.shape[:2]
    short, long = min(width, height), max(width, height)
    new_short, new_long = CLIP_SIZE, int(CLIP_SIZE * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - CLIP_SIZE) // 2, (new_w - CLIP_SIZE) // 2
    if top < 0 or left < 0:  # cannot happen after the resize; kept as the processor's padding rule would be
        raise ValueError(f"image of {width}x{height} too small for the CLIP crop")
    crop = resized[top:top + CLIP_SIZE, left:left + CLIP_SIZE]
    scaled = (crop * (1 / 255)).astype(np.float32)  # float64 product, then float32, as the processor does
    pixels = (scaled - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
