"""Temporal smoothing of a `Motion` that respects rotations.

Each joint rotation is filtered on SO(3), not component-wise: for frame t the neighbours are taken
into the tangent space at R_t (R_t^T R_{t+k} -> axis-angle), averaged there with the filter's taps,
and mapped back (R_t exp(sum_k a_k log(R_t^T R_{t+k}))). That is one step of the weighted Karcher
mean, exact for rotations about a fixed axis and never leaving SO(3). Translation uses the same
taps linearly. The sequence is extended at both ends by odd reflection (R_{-k} = R_0 (R_0^T R_k)^-1),
so ramps are preserved and the end frames stay fixed.

Methods:
- "none";
- "reference": the reference implementation's Blender "Smooth Keys", measured as the 5-tap kernel
  (1/6, 1/4, 1/6, 1/4, 1/6) applied once (there component-wise on quaternions; here on SO(3));
- "gaussian": a Gaussian kernel whose standard deviation is `strength` frames (0 = none).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from .model import axis_angle_to_matrix, matrix_to_axis_angle
from .motion import Motion

REFERENCE_TAPS = np.array([1 / 6, 1 / 4, 1 / 6, 1 / 4, 1 / 6])
SMOOTHING_METHODS = ("none", "reference", "gaussian")


class SmoothingError(ValueError):
    pass


def gaussian_taps(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    k = np.arange(-radius, radius + 1)
    taps = np.exp(-0.5 * (k / sigma) ** 2)
    return taps / taps.sum()


def _reflect_index(T: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the padded sequence and whether each is a reflected (mirrored) sample."""
    idx = np.arange(-radius, T + radius)
    mirrored_low = idx < 0
    mirrored_high = idx >= T
    source = np.where(mirrored_low, -idx, np.where(mirrored_high, 2 * (T - 1) - idx, idx))
    return np.clip(source, 0, T - 1), mirrored_low | mirrored_high


def smooth_rotations(rot: torch.Tensor, taps: np.ndarray) -> torch.Tensor:
    """rot (T, J, 3, 3) float64 -> filtered rotations, same shape."""
    T = rot.shape[0]
    radius = len(taps) // 2
    if T < 3 or radius == 0:
        return rot
    source, mirrored = _reflect_index(T, radius)
    # odd reflection about the end frame: R_pad = R_end (R_end^T R_src)^T
    ends = torch.as_tensor(np.where(np.arange(-radius, T + radius) < 0, 0, T - 1))
    src = rot[torch.as_tensor(source)]
    end = rot[ends]
    reflected = end @ (end.transpose(-1, -2) @ src).transpose(-1, -2)
    padded = torch.where(torch.as_tensor(mirrored)[:, None, None, None], reflected, src)
    out = torch.empty_like(rot)
    chunk = 256
    for s in range(0, T, chunk):
        e = min(T, s + chunk)
        centre = rot[s:e]
        tangent = torch.zeros(e - s, rot.shape[1], 3, dtype=rot.dtype)
        for k, a in enumerate(taps):
            if a == 0:
                continue
            neighbour = padded[s + k: e + k]
            tangent = tangent + float(a) * matrix_to_axis_angle(centre.transpose(-1, -2) @ neighbour)
        out[s:e] = centre @ axis_angle_to_matrix(tangent)
    return out


def smooth_vectors(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """x (T, ...) -> filtered with odd reflection at both ends."""
    T = x.shape[0]
    radius = len(taps) // 2
    if T < 3 or radius == 0:
        return x.copy()
    source, mirrored = _reflect_index(T, radius)
    ends = np.where(np.arange(-radius, T + radius) < 0, 0, T - 1)
    padded = np.where(mirrored.reshape(-1, *([1] * (x.ndim - 1))), 2 * x[ends] - x[source], x[source])
    out = np.zeros_like(x, dtype=np.float64)
    for k, a in enumerate(taps):
        out += a * padded[k: k + T]
    return out


def smooth_motion(motion: Motion, method: str = "gaussian", strength: float = 1.0) -> Motion:
    """Return a smoothed copy of `motion` (pose, orientation and translation; betas unchanged)."""
    if method not in SMOOTHING_METHODS:
        raise SmoothingError(f"unknown smoothing '{method}': choose one of {', '.join(SMOOTHING_METHODS)}")
    if method == "none" or motion.num_frames < 3:
        return replace(motion)
    if method == "reference":
        taps = REFERENCE_TAPS
    else:
        if strength < 0 or not math.isfinite(strength):
            raise SmoothingError(f"smoothing strength must be >= 0 frames, got {strength}")
        if strength == 0:
            return replace(motion)
        taps = gaussian_taps(float(strength))
    aa = np.concatenate([motion.global_orient[:, None], motion.body_pose], axis=1).astype(np.float64)
    rot = axis_angle_to_matrix(torch.as_tensor(aa))
    smoothed = matrix_to_axis_angle(smooth_rotations(rot, taps)).numpy().astype(np.float32)
    transl = smooth_vectors(motion.transl.astype(np.float64), taps).astype(np.float32)
    return replace(motion, global_orient=smoothed[:, 0], body_pose=smoothed[:, 1:], transl=transl)
