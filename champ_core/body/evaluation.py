"""Fitting evaluation: synthetic sequences unlike the built-in motions, external sequences, metrics.

Synthetic sequences draw every joint angle as a sum of random sinusoids (random frequencies,
phases and amplitudes within joint ranges), a random heading and drifting root, random betas, and
a random pinhole camera (focal 0.9x to 20x the image height, several aspect ratios, 512 px tall).
They share only the anatomical range of motion with the fitter's prior (not its mean pose or
weights), and nothing with `motions.py` (whose clips are fixed, hand-written gait/gesture cycles).

External sequences (`CHAMP_BODY_EVAL_DIR`): npz files with `keypoints_2d` (T,18,3) OpenPose-18,
`joints_3d` (T,24,3) SMPL joints in camera coordinates (m), `focal_px`, `width`, `height`, `fps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..camera import Camera
from .keypoints import openpose18_from_body, project
from .model import BodyModel, axis_angle_to_matrix, matrix_to_axis_angle
from .priors import range_of_motion


@dataclass
class EvalSequence:
    name: str
    keypoints_2d: np.ndarray  # (T,18,3) noisy, conf 0 = missing
    joints_3d: np.ndarray  # (T,24,3)
    camera: Camera
    fps: float
    clean_keypoints_2d: np.ndarray | None = None  # (T,18,2) when known


# Everyday sampling bands (generator only) for the large joints: (body_pose index, axis) -> (lo, hi).
# Other angles use the middle 60 % of the anatomical range of motion.
_EVERYDAY = {
    (0, 0): (-0.9, 0.3), (1, 0): (-0.9, 0.3), (3, 0): (0.0, 1.3), (4, 0): (0.0, 1.3),
    (15, 1): (-1.1, 0.4), (16, 1): (-0.4, 1.1), (15, 2): (-1.4, 0.4), (16, 2): (-0.4, 1.4),
    (17, 1): (-1.8, 0.0), (18, 1): (0.0, 1.8),
}


def random_body_pose(rng: np.random.Generator, T: int, fps: float) -> np.ndarray:
    """Every joint angle oscillates inside a random sub-range of an everyday band of its range of
    motion (random centre, amplitude, two random frequencies and phases)."""
    lo, hi = (r.numpy().astype(np.float64) for r in range_of_motion())
    t = np.arange(T) / fps
    pose = np.zeros((T, 23, 3))
    for j in range(23):
        for axis in range(3):
            if (j, axis) in _EVERYDAY:
                a, b = _EVERYDAY[(j, axis)]
            else:
                mid, half = 0.5 * (lo[j, axis] + hi[j, axis]), 0.3 * (hi[j, axis] - lo[j, axis])
                a, b = mid - half, mid + half
            span = b - a
            centre = a + span * rng.uniform(0.2, 0.8)
            amp = span * rng.uniform(0.1, 0.4)
            wave = np.zeros(T)
            for _ in range(2):
                freq = rng.uniform(0.15, 1.2)
                wave += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
            wave /= max(np.abs(wave).max(), 1e-6)
            pose[:, j, axis] = np.clip(centre + amp * wave, a, b)
    return pose


def make_eval_sequence(seed: int, num_frames: int = 60, fps: float = 30.0, noise_px: float = 2.0,
                       missing: float = 0.05, body: BodyModel | None = None) -> EvalSequence:
    """A random sequence: returns noisy keypoints, clean keypoints and ground-truth joints."""
    from .model import open_body_model


    body = body or open_body_model()
    rng = np.random.default_rng(seed)
    T = num_frames
    height = 512
    width = int(rng.choice([384, 512, 640, 768]))
    focal = float(height * rng.choice([rng.uniform(0.9, 2.0), rng.uniform(2.0, 6.0), 5000 / 256 * max(width, 512) / height]))
    camera = Camera.centred(focal, width, height)
    betas = rng.normal(0.0, 1.0, size=(1, 10))
    body_pose = random_body_pose(rng, T, fps)
    # heading: start within +-70 degrees of facing the camera, drift slowly
    t = np.arange(T) / fps
    yaw = rng.uniform(-1.2, 1.2) + rng.uniform(-0.6, 0.6) * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t)
    tilt = rng.uniform(-0.1, 0.1)
    rots = []
    for y in yaw:
        ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]], dtype=torch.float64)
        rx = axis_angle_to_matrix(torch.tensor([math.pi + tilt, 0.0, 0.0], dtype=torch.float64))
        rots.append(ry @ rx)
    global_orient = matrix_to_axis_angle(torch.stack(rots)).numpy()
    # distance: the body is 60-85 % of the image height
    fill = rng.uniform(0.6, 0.85)
    z = focal * 1.75 / (fill * height)
    drift = np.stack([rng.uniform(-0.15, 0.15) * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 6)),
                      np.zeros(T), rng.uniform(-0.1, 0.1) * z * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t)], -1)
    transl = np.array([0.0, 0.2, z]) + drift
    dt = torch.float32
    with torch.no_grad():
        out = body(torch.tensor(global_orient, dtype=dt), torch.tensor(body_pose, dtype=dt),
                   torch.tensor(betas, dtype=dt), torch.tensor(transl, dtype=dt))
    joints = out.joints.numpy().astype(np.float64)
    op = openpose18_from_body(out.vertices.numpy(), out.joints.numpy()).astype(np.float64)
    clean = project(op, camera)
    noisy = clean + rng.normal(0.0, noise_px, size=clean.shape)
    conf = (rng.random(clean.shape[:2]) >= missing).astype(np.float64)
    inside = (clean[..., 0] >= 0) & (clean[..., 0] < width) & (clean[..., 1] >= 0) & (clean[..., 1] < height)
    conf *= inside
    kp = np.concatenate([noisy, conf[..., None]], -1)
    kp[conf == 0] = 0.0
    return EvalSequence(f"synthetic-{seed}", kp, joints, camera, fps, clean)


def load_eval_dir(folder: str | Path) -> list[EvalSequence]:
    seqs = []
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path, allow_pickle=False) as d:
            cam = Camera.centred(float(d["focal_px"]), int(d["width"]), int(d["height"]))
            seqs.append(EvalSequence(path.stem, d["keypoints_2d"].astype(np.float64), d["joints_3d"].astype(np.float64),
                                     cam, float(d["fps"]) if "fps" in d else 30.0))
    return seqs


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-align pred (N,3) to gt (N,3) (rotation, uniform scale, translation)."""
    mp, mg = pred.mean(0), gt.mean(0)
    p, g = pred - mp, gt - mg
    u, s, vt = np.linalg.svd(p.T @ g)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = (s * np.diag(fix)).sum() / (p**2).sum()
    return scale * p @ rot + mg


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint error after per-frame Procrustes alignment (same units as the input)."""
    errs = [np.linalg.norm(procrustes_align(p, g) - g, axis=-1).mean() for p, g in zip(pred, gt)]
    return float(np.mean(errs))


def reprojection_errors(motion, body: BodyModel, target_xy: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-point pixel distances between the fitted body's OpenPose-18 projection and target (T,18,2)."""
    out = motion.pose(body)
    op = openpose18_from_body(out.vertices.cpu().numpy(), out.joints.cpu().numpy())
    d = np.linalg.norm(project(op.astype(np.float64), motion.camera) - target_xy, axis=-1)
    return d[mask] if mask is not None else d.reshape(-1)
