"""Smoothing on SO(3): the adjustable filter against the reference's 5-tap filter."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from champ_core.body.model import axis_angle_to_matrix, matrix_to_axis_angle, open_body_model
from champ_core.body.motion import Motion
from champ_core.body.motions import BUILTIN_MOTIONS, builtin_motion
from champ_core.body.smoothing import SmoothingError, smooth_motion, smooth_vectors
from champ_core.camera import Camera


def _joints(motion, body):
    return motion.pose(body).joints.numpy().astype(np.float64)


def _acc(j):
    return float(((j[2:] - 2 * j[1:-1] + j[:-2]) ** 2).sum(-1).mean())


def _noisy(motion, rng, sigma=0.03):
    rot = axis_angle_to_matrix(torch.as_tensor(np.concatenate([motion.global_orient[:, None], motion.body_pose], 1),
                                               dtype=torch.float64))
    noise = axis_angle_to_matrix(torch.as_tensor(rng.normal(0, sigma, size=(motion.num_frames, 24, 3))))
    aa = matrix_to_axis_angle(rot @ noise).numpy()
    transl = motion.transl + rng.normal(0, 0.01, size=motion.transl.shape)
    return replace(motion, global_orient=aa[:, 0], body_pose=aa[:, 1:], transl=transl)


def test_adjustable_filter_beats_reference_filter_on_both_counts():
    body = open_body_model()
    clips = {name: builtin_motion(name, body, seconds=3, fps=30) for name in BUILTIN_MOTIONS}
    speed = {n: np.linalg.norm(np.diff(_joints(m, body), axis=0), axis=-1).mean() for n, m in clips.items()}
    fastest = clips[max(speed, key=speed.get)]
    clean_j = _joints(fastest, body)
    noisy = _noisy(clips["walk"], np.random.default_rng(0))
    ref_acc = _acc(_joints(smooth_motion(noisy, "reference"), body))
    ref_disp = np.linalg.norm(_joints(smooth_motion(fastest, "reference"), body) - clean_j, axis=-1).mean()
    winners = []
    for strength in (0.6, 0.8, 1.0, 1.2):
        acc = _acc(_joints(smooth_motion(noisy, "gaussian", strength), body))
        disp = np.linalg.norm(_joints(smooth_motion(fastest, "gaussian", strength), body) - clean_j, axis=-1).mean()
        if acc < ref_acc and disp < ref_disp:
            winners.append(strength)
    assert winners, "no strength beats the reference filter on both counts"
    assert _acc(_joints(noisy, body)) > 2 * ref_acc  # the noise is real and the reference filter does something


def test_rotation_filter_is_proper():
    # constant-speed rotation about a fixed axis through +-pi is a ramp on SO(3): kept exactly
    T = 40
    angle = np.linspace(-3.0, 3.0, T)
    go = np.stack([np.zeros(T), angle, np.zeros(T)], -1)
    motion = Motion(go, np.zeros((T, 23, 3)), np.zeros((1, 10)), np.zeros((T, 3)) + [0, 0, 5], Camera.centred(500, 64, 64))
    for method, strength in (("reference", 1.0), ("gaussian", 2.0)):
        out = smooth_motion(motion, method, strength)
        r_in = axis_angle_to_matrix(torch.as_tensor(go))
        r_out = axis_angle_to_matrix(torch.as_tensor(out.global_orient.astype(np.float64)))
        assert torch.allclose(r_in, r_out, atol=1e-4)
    # end keys fixed and Nyquist jitter removed by the reference taps
    x = np.zeros((12, 1))
    x[1::2] = 1.0
    y = smooth_vectors(x, np.array([1 / 6, 1 / 4, 1 / 6, 1 / 4, 1 / 6]))
    assert y[0, 0] == pytest.approx(0) and y[-1, 0] == pytest.approx(x[-1, 0])
    assert np.allclose(y[3:-3, 0], 0.5)


def test_bad_smoothing_arguments():
    motion = builtin_motion("wave", open_body_model(), seconds=0.5)
    with pytest.raises(SmoothingError):
        smooth_motion(motion, "kalman")
    with pytest.raises(SmoothingError):
        smooth_motion(motion, "gaussian", -1)
    assert np.array_equal(smooth_motion(motion, "none").body_pose, motion.body_pose)
    one = motion.slice(0, 1)
    assert smooth_motion(one, "gaussian", 2).num_frames == 1
