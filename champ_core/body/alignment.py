"""Transfer a motion onto the reference person: their body, their camera, their place in the frame.

What the reference implementation does (and what users complain about): it copies the reference's
betas and camera translation into every frame, so the dancer is pinned in place and root motion is
lost; without `--view_transfer` the camera handling breaks. Here:

- shape: the reference's betas (optionally with the second coefficient set to `figure_scale`, the
  reference's `--figure_scale` convention: -10 very heavy ... +10 very slim);
- camera: the reference's (intrinsics and image size);
- position: at the first frame the pelvis is exactly where the reference person's fitted pelvis is.
  After that the motion's own root movement is kept: the pelvis' image trajectory is the motion's
  own, shifted to start at the reference's pelvis and scaled by the ratio of the two people's
  apparent sizes, and its distance to the camera changes by the motion's own ratio. Apparent size
  is matched by distance to the camera, never by scaling the mesh. `root_motion="pin"` keeps the
  pelvis fixed at the reference's position instead (the reference implementation's behaviour);
- orientation: the motion's own (`orientation="motion"`), or turned about the camera's vertical
  axis so that the first frame faces where the reference person faces (`"reference"`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .model import BodyModel, axis_angle_to_matrix, matrix_to_axis_angle
from .motion import Motion


class AlignmentError(ValueError):
    pass


@dataclass
class AlignOptions:
    root_motion: str = "follow"  # "follow" | "pin"
    orientation: str = "motion"  # "motion" | "reference"
    figure_scale: float | None = None  # overrides betas[1] (the reference implementation's convention)
    use_reference_betas: bool = True


def _pelvis_rest(body: BodyModel, betas: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        j = body.rest_joints(torch.as_tensor(betas[:, : body.num_betas], dtype=body.v_template.dtype))
    return j[:, 0].cpu().numpy().astype(np.float64)


def body_stature(body: BodyModel, betas: np.ndarray) -> float:
    """Rest-pose height of the body (m) for one set of betas."""
    with torch.no_grad():
        b = torch.as_tensor(np.asarray(betas).reshape(1, -1)[:, : body.num_betas], dtype=body.v_template.dtype)
        v = body.v_template + torch.einsum("bk,vck->bvc", b, body.shapedirs)[0]
        used = torch.unique(body.faces)
        y = v[used, 1]
    return float(y.max() - y.min())


def pelvis_positions(motion: Motion, body: BodyModel) -> np.ndarray:
    """(T,3) pelvis joint in the motion's camera frame (independent of orientation and pose)."""
    return _pelvis_rest(body, motion.betas_per_frame()) + motion.transl.astype(np.float64)


def _heading(rot: np.ndarray) -> float:
    forward = rot @ np.array([0.0, 0.0, 1.0])
    return math.atan2(forward[0], forward[2])


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def align_to_reference(motion: Motion, reference: Motion, body: BodyModel,
                       options: AlignOptions | None = None) -> Motion:
    """The motion re-targeted to the reference person (see the module docstring)."""
    options = options or AlignOptions()
    if options.root_motion not in ("follow", "pin"):
        raise AlignmentError(f"root_motion must be 'follow' or 'pin', got '{options.root_motion}'")
    if options.orientation not in ("motion", "reference"):
        raise AlignmentError(f"orientation must be 'motion' or 'reference', got '{options.orientation}'")
    T = motion.num_frames
    betas = (reference.betas[:1] if options.use_reference_betas else motion.betas[:1]).astype(np.float64).copy()
    if options.figure_scale is not None:
        betas[0, 1] = float(options.figure_scale)
    cam_r, cam_d = reference.camera, motion.camera

    p_ref = pelvis_positions(reference.slice(0, 1), body)[0]
    p_mot = pelvis_positions(motion, body)
    if (p_mot[:, 2] <= 0).any() or p_ref[2] <= 0:
        raise AlignmentError("a body is behind its camera (pelvis depth <= 0): check the motion's translation")
    if options.root_motion == "pin":
        pelvis = np.repeat(p_ref[None], T, 0)
    else:
        # image trajectory of the motion's pelvis, scaled by the ratio of apparent sizes
        size_ref = cam_r.fy * body_stature(body, betas) / p_ref[2]
        size_mot = cam_d.fy * body_stature(body, motion.betas[:1]) / p_mot[0, 2]
        k = size_ref / size_mot
        u_mot = np.stack([cam_d.fx * p_mot[:, 0] / p_mot[:, 2] + cam_d.cx, cam_d.fy * p_mot[:, 1] / p_mot[:, 2] + cam_d.cy], -1)
        u_ref = np.array([cam_r.fx * p_ref[0] / p_ref[2] + cam_r.cx, cam_r.fy * p_ref[1] / p_ref[2] + cam_r.cy])
        u = u_ref + k * (u_mot - u_mot[0])
        z = p_ref[2] * p_mot[:, 2] / p_mot[0, 2]
        pelvis = np.stack([(u[:, 0] - cam_r.cx) * z / cam_r.fx, (u[:, 1] - cam_r.cy) * z / cam_r.fy, z], -1)
    transl = pelvis - _pelvis_rest(body, betas)

    global_orient = motion.global_orient.astype(np.float64)
    if options.orientation == "reference":
        rot_m = axis_angle_to_matrix(torch.as_tensor(global_orient)).numpy()
        rot_r = axis_angle_to_matrix(torch.as_tensor(reference.global_orient[:1].astype(np.float64))).numpy()[0]
        turn = _rot_y(_heading(rot_r) - _heading(rot_m[0]))
        global_orient = matrix_to_axis_angle(torch.as_tensor(turn[None] @ rot_m)).numpy()
    return Motion(global_orient.astype(np.float32), motion.body_pose.copy(), betas.astype(np.float32),
                  transl.astype(np.float32), cam_r, motion.fps, list(motion.frame_names), motion.valid.copy())
