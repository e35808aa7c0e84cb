"""Per-frame pixel metrics with the definitions of DisCo's evaluation code (used by Champ and MagicAnimate).

Every function takes two uint8 RGB frames of shape (H, W, 3) and returns a Python float. They are
small pure functions so that their definitions can be read (and tested) one by one.
"""

from __future__ import annotations

import math

import numpy as np

# The value DisCo reports when the mean squared error is exactly 0.
PSNR_IDENTICAL = 100.0


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"expected two uint8 (H, W, 3) frames of one shape, got {pred.shape} and {gt.shape}")
    if pred.dtype != np.uint8 or gt.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {pred.dtype} and {gt.dtype}")


def l1_frame(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean |pred - gt| over height, width and channels on 0-255 values, divided again by H * W.

    The second division is DisCo's (its figures depend on the resolution: ~3e-4 at 256x256).
    """
    _check_pair(pred, gt)
    height, width = pred.shape[:2]
    diff = np.abs(pred.astype(np.float64) - gt.astype(np.float64))
    return float(diff.mean() / (height * width))


def _psnr_from_mse(mse: float) -> float:
    if mse == 0:
        return PSNR_IDENTICAL
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def psnr_legacy_frame(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR as published (Champ's Table 1): difference AND square computed in uint8, both wrapping mod 256."""
    _check_pair(pred, gt)
    diff = pred - gt  # uint8 arithmetic: wraps modulo 256
    square = diff * diff  # uint8 again: wraps modulo 256
    return _psnr_from_mse(float(square.mean(dtype=np.float64)))


def psnr_frame(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR* (the corrected figure): the same formula in float64."""
    _check_pair(pred, gt)
    diff = pred.astype(np.float64) - gt.astype(np.float64)
    return _psnr_from_mse(float(np.mean(diff * diff)))


def to_gray(frame: np.ndarray) -> np.ndarray:
    """uint8 gray image as OpenCV's BGR->GRAY conversion gives it for DisCo's cv2-read (BGR) frames."""
    import cv2

    bgr = np.ascontiguousarray(frame[..., ::-1])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def ssim_frame(pred: np.ndarray, gt: np.ndarray) -> float:
    """SSIM of the two uint8 gray images with scikit-image's defaults (7x7 window, data range 255)."""
    from skimage.metrics import structural_similarity

    _check_pair(pred, gt)
    return float(structural_similarity(to_gray(pred), to_gray(gt), data_range=255))
