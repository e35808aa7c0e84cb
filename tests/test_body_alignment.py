"""Alignment to the reference person: placement, framing, root trajectory, options."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import champ_core
from champ_core.body.alignment import AlignmentError, AlignOptions, align_to_reference, pelvis_positions
from champ_core.body.fitting import fit_reference
from champ_core.body.keypoints import load_pose_keypoints
from champ_core.body.model import axis_angle_to_matrix, open_body_model
from champ_core.body.motions import builtin_motion
from champ_core.camera import Camera
from champ_core.render import render_guidance

ASTRONAUT = Path(champ_core.__file__).parent / "body" / "data" / "astronaut_keypoints.json"


@pytest.fixture(scope="module")
def setup():
    body = open_body_model()
    reference = fit_reference(load_pose_keypoints(ASTRONAUT), body)
    # a motion seen by another camera (size, focal), with another body shape
    motion = builtin_motion("walk", body, seconds=2, fps=15, camera=Camera.centred(900.0, 640, 480),
                            betas=np.array([[1.5, -2.0, 0, 0, 0, 0, 0, 0, 0, 0]]))
    return body, reference, motion


def _silhouette_stats(mask):
    ys, xs = np.nonzero(mask)
    return ys.max() - ys.min() + 1


def test_aligned_body_in_reference_pose_matches_the_reference(setup):
    body, reference, motion = setup
    aligned = align_to_reference(motion, reference, body)
    assert aligned.camera == reference.camera and np.allclose(aligned.betas, reference.betas)
    probe = replace(aligned.slice(0, 1), global_orient=reference.global_orient, body_pose=reference.body_pose)
    ref_out, probe_out = reference.pose(body), probe.pose(body)
    masks = [render_guidance(o.vertices, body.faces, body.part_labels, reference.camera, layers=("mask",),
                             backend="torch")["mask"][0] > 0 for o in (ref_out, probe_out)]
    iou = (masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum()
    assert iou >= 0.95
    h_ref, h_probe = _silhouette_stats(masks[0]), _silhouette_stats(masks[1])
    assert abs(h_probe - h_ref) <= 0.02 * h_ref
    cam = reference.camera
    p_ref, p_probe = ref_out.joints[0, 0].numpy(), probe_out.joints[0, 0].numpy()
    uv = lambda p: np.array([cam.fx * p[0] / p[2] + cam.cx, cam.fy * p[1] / p[2] + cam.cy])  # noqa: E731
    assert np.linalg.norm(uv(p_ref) - uv(p_probe)) <= 5.0


def test_root_image_trajectory_is_the_motions_shifted_and_scaled(setup):
    body, reference, motion = setup
    aligned = align_to_reference(motion, reference, body)

    def image_track(m):
        p = pelvis_positions(m, body)
        c = m.camera
        return np.stack([c.fx * p[:, 0] / p[:, 2] + c.cx, c.fy * p[:, 1] / p[:, 2] + c.cy], -1)

    own, ours = image_track(motion), image_track(aligned)
    d_own, d_ours = own - own[0], ours - ours[0]
    assert np.abs(d_own).max() > 1.0  # the walk really moves in the image
    k = (d_own * d_ours).sum() / (d_own**2).sum()
    assert k > 0 and np.abs(d_ours - k * d_own).max() < 0.05
    # apparent size is matched by distance, not by scaling the mesh: betas are the reference's
    depth_ratio = pelvis_positions(aligned, body)[:, 2] / pelvis_positions(motion, body)[:, 2]
    assert np.allclose(depth_ratio / depth_ratio[0], 1.0, atol=1e-5)


def test_pin_orientation_and_figure_scale(setup):
    body, reference, motion = setup
    pinned = align_to_reference(motion, reference, body, AlignOptions(root_motion="pin"))
    p = pelvis_positions(pinned, body)
    assert np.abs(p - p[0]).max() < 1e-5
    turned = align_to_reference(motion, reference, body, AlignOptions(orientation="reference", figure_scale=-4))
    assert turned.betas[0, 1] == pytest.approx(-4)

    def heading(aa):
        f = axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float64)).numpy() @ np.array([0.0, 0.0, 1.0])
        return math.atan2(f[0], f[2])

    assert heading(turned.global_orient[0]) == pytest.approx(heading(reference.global_orient[0]), abs=1e-4)
    kept = align_to_reference(motion, reference, body)
    assert np.allclose(kept.global_orient, motion.global_orient)
    with pytest.raises(AlignmentError):
        align_to_reference(motion, reference, body, AlignOptions(root_motion="teleport"))
