"""Foreground and temporal metrics of generated people against known ground truth (the quality bench).

The bench's sequences are generated people over a known empty background (`background.png` of a
`synth-data` video), so the person in a generated frame can be found without a segmentation
network: the pixels that differ from the background. Small pure functions on numpy arrays:

- `person_mask`: pixels differing from the background by more than 24/255 in any channel, after a
  3x3 binary opening (erosion then dilation; it removes specks smaller than 3x3).
- `mask_iou`: intersection over union of two masks (1 when both are empty).
- `foreground_region`: the union of a video's ground-truth masks, dilated by a square of radius r.
- `masked_psnr`: PSNR over the pixels of a region only (float64, 0-255 levels).
- `error_outside_person`: the fractions of pixels off by more than 24/255 from the ground truth in a
  ring around the person and beyond it (where a decoder's errors break `person_mask`).
- `temporal_error`: mean over consecutive pairs (t, t+1), over the pixels in mask_t or mask_t+1
  and the three channels, of |(gen_t+1 - gen_t) - (gt_t+1 - gt_t)|, in 0-255 levels.

Borders follow OpenCV's morphology convention: outside the image counts as foreground for an
erosion and as background for a dilation, so a person cut by the frame edge keeps its edge pixels.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FOREGROUND_THRESHOLD = 24  # levels of 255: a pixel is the person's when it differs by more than this
OPENING_SIZE = 3  # side of the square structuring element of the opening
REGION_DILATION_FRACTION = 1 / 32  # dilation radius of the foreground region, of the shorter frame side
PSNR_IDENTICAL = 100.0  # PSNR of identical pixels (the evaluation library's convention)


def _as_mask(mask, what: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{what}: expected a (H, W) mask, got shape {array.shape}")
    return array.astype(bool, copy=False)


def _window_reduce(mask: np.ndarray, radius: int, erode: bool) -> np.ndarray:
    if radius <= 0:
        return mask.copy()
    padded = np.pad(mask, radius, constant_values=erode)  # neutral border (see the module docstring)
    windows = sliding_window_view(padded, (2 * radius + 1, 2 * radius + 1))
    return windows.all(axis=(-2, -1)) if erode else windows.any(axis=(-2, -1))


def binary_erode(mask, radius: int = 1) -> np.ndarray:
    """Erosion by the (2r+1)x(2r+1) square."""
    return _window_reduce(_as_mask(mask, "mask"), int(radius), erode=True)


def binary_dilate(mask, radius: int = 1) -> np.ndarray:
    """Dilation by the (2r+1)x(2r+1) square."""
    return _window_reduce(_as_mask(mask, "mask"), int(radius), erode=False)


def binary_open(mask, size: int = OPENING_SIZE) -> np.ndarray:
    """Opening (erosion, then dilation) by the size x size square (size odd)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"opening size must be a positive odd number, got {size}")
    return binary_dilate(binary_erode(mask, size // 2), size // 2)


def _check_rgb(frame, what: str) -> np.ndarray:
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{what}: expected a uint8 (H, W, 3) frame, got {array.dtype} {array.shape}")
    return array


def person_mask(frame, background, threshold: int = FOREGROUND_THRESHOLD, opening: int = OPENING_SIZE) -> np.ndarray:
    """Bool (H, W): pixels of `frame` differing from `background` by more than `threshold` levels in
    any channel, after an `opening` x `opening` binary opening."""
    frame, background = _check_rgb(frame, "frame"), _check_rgb(background, "background")
    if frame.shape != background.shape:
        raise ValueError(f"frame {frame.shape} and background {background.shape} differ in size")
    diff = np.abs(frame.astype(np.int16) - background.astype(np.int16))
    return binary_open((diff > threshold).any(axis=-1), opening)


def mask_iou(pred, gt) -> float:
    """|pred & gt| / |pred | gt|; 1.0 when both masks are empty."""
    pred, gt = _as_mask(pred, "predicted mask"), _as_mask(gt, "ground-truth mask")
    if pred.shape != gt.shape:
        raise ValueError(f"masks differ in size: {pred.shape} and {gt.shape}")
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def error_outside_person(frame, truth, mask, threshold: int = FOREGROUND_THRESHOLD, ring: int = 3) -> tuple[float, float]:
    """(ring fraction, far fraction): of the pixels within `ring` px around `mask` (outside it), and of
    those farther out, the share where `frame` differs from `truth` by more than `threshold` levels in
    any channel; NaN for an empty set. Pixels off by that much outside the person are false positives
    of `person_mask`, whatever the frame shows there."""
    frame, truth = _check_rgb(frame, "frame"), _check_rgb(truth, "ground truth")
    mask = _as_mask(mask, "mask")
    if frame.shape != truth.shape or frame.shape[:2] != mask.shape:
        raise ValueError(f"frame {frame.shape}, ground truth {truth.shape} and mask {mask.shape} differ in size")
    off = (np.abs(frame.astype(np.int16) - truth.astype(np.int16)) > threshold).any(axis=-1)
    near = binary_dilate(mask, ring)
    ring_pixels, far_pixels = near & ~mask, ~near
    share = lambda where: float(off[where].mean()) if where.any() else math.nan  # noqa: E731
    return share(ring_pixels), share(far_pixels)


def region_radius(height: int, width: int, fraction: float = REGION_DILATION_FRACTION) -> int:
    """The foreground region's dilation radius for a frame size: `fraction` of the shorter side, at least 1."""
    return max(1, int(round(min(height, width) * fraction)))


def foreground_region(masks, radius: int | None = None) -> np.ndarray:
    """Bool (H, W): the union of the (T, H, W) ground-truth masks, dilated by `radius` (default:
    `region_radius` of the frame size)."""
    masks = np.asarray(masks).astype(bool, copy=False)
    if masks.ndim != 3 or len(masks) == 0:
        raise ValueError(f"expected (T, H, W) masks with T >= 1, got shape {masks.shape}")
    if radius is None:
        radius = region_radius(*masks.shape[1:])
    return binary_dilate(masks.any(axis=0), radius)


def masked_psnr(pred, gt, region) -> float:
    """PSNR (0-255 levels, float64) over the pixels where `region` is True (all three channels)."""
    pred, gt = _check_rgb(pred, "prediction"), _check_rgb(gt, "ground truth")
    region = _as_mask(region, "region")
    if pred.shape != gt.shape or region.shape != pred.shape[:2]:
        raise ValueError(f"prediction {pred.shape}, ground truth {gt.shape} and region {region.shape} differ in size")
    if not region.any():
        raise ValueError("the region is empty: no pixel to compute a PSNR over")
    diff = pred[region].astype(np.float64) - gt[region].astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_IDENTICAL
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def temporal_errors(gen, gt, masks) -> np.ndarray:
    """Per pair (t, t+1): mean over the pixels in mask_t | mask_t+1 and the channels of
    |(gen_t+1 - gen_t) - (gt_t+1 - gt_t)| (0-255 levels); NaN for a pair whose union is empty."""
    gen, gt, masks = np.asarray(gen), np.asarray(gt), np.asarray(masks).astype(bool, copy=False)
    if gen.shape != gt.shape or gen.ndim != 4 or gen.shape[-1] != 3:
        raise ValueError(f"expected generated and ground-truth frames (T, H, W, 3) of one shape, got "
                         f"{gen.shape} and {gt.shape}")
    if masks.shape != gen.shape[:3]:
        raise ValueError(f"masks {masks.shape} do not match the frames {gen.shape[:3]}")
    if len(gen) < 2:
        raise ValueError(f"the temporal error needs at least 2 frames, got {len(gen)}")
    gen, gt = gen.astype(np.float64), gt.astype(np.float64)
    out = np.full(len(gen) - 1, np.nan)
    for t in range(len(gen) - 1):
        region = masks[t] | masks[t + 1]
        if region.any():
            diff = (gen[t + 1] - gen[t]) - (gt[t + 1] - gt[t])
            out[t] = float(np.abs(diff[region]).mean())
    return out


def temporal_error(gen, gt, masks) -> float:
    """The mean of `temporal_errors` over the pairs with a non-empty union."""
    values = temporal_errors(gen, gt, masks)
    values = values[np.isfinite(values)]
    if not len(values):
        raise ValueError("every ground-truth mask is empty: no pixel to compute the temporal error over")
    return float(values.mean())
