"""Built-in procedural motions (walk, wave, turn, dance, idle) and world-to-camera placement.

Clips are written in SMPL's own world frame (y up, the body faces +z) as smooth periodic joint
curves, then placed in front of a default camera: 512 x 512, HMR2's focal length, the body
centred and filling 80 % of the image height at the first frame, facing the camera. Root
movement stays in metres. World-frame files (AMASS, z up) use the same placement with their own
axis change.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..camera import Camera
from .model import BodyModel, axis_angle_to_matrix, matrix_to_axis_angle
from .motion import Motion
from .priors import natural_pose

BUILTIN_MOTIONS = ("walk", "wave", "turn", "dance", "idle")
# world (SMPL y up, facing +z) -> OpenCV camera: y down, facing -z i.e. towards the camera
Y_UP_TO_CAMERA = np.diag([1.0, -1.0, -1.0])
# AMASS (z up) -> OpenCV camera: world z -> camera -y, world y -> camera +z
Z_UP_TO_CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

# body_pose indices
L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = 0, 1, 2, 3, 4, 5, 6, 7, 8
NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW = 11, 12, 13, 14, 15, 16, 17, 18


class MotionSourceError(ValueError):
    pass


def _base(T: int) -> np.ndarray:
    return np.tile(natural_pose().numpy().astype(np.float64)[None], (T, 1, 1))


def _walk(t: np.ndarray):
    phase = 2 * np.pi * t / 1.1
    pose = _base(len(t))
    s = np.sin(phase)
    pose[:, L_HIP, 0] = -0.45 * s - 0.1
    pose[:, R_HIP, 0] = 0.45 * s - 0.1
    pose[:, L_KNEE, 0] = 0.15 + 0.55 * np.clip(np.sin(phase - 1.2), 0, None) ** 1.5 * 1.4
    pose[:, R_KNEE, 0] = 0.15 + 0.55 * np.clip(np.sin(phase + np.pi - 1.2), 0, None) ** 1.5 * 1.4
    pose[:, L_ANKLE, 0] = 0.15 * np.sin(phase - 0.5)
    pose[:, R_ANKLE, 0] = -0.15 * np.sin(phase - 0.5)
    pose[:, L_SHOULDER, 1] = -0.25 + 0.35 * s  # arms swing against the legs
    pose[:, R_SHOULDER, 1] = 0.25 + 0.35 * s
    pose[:, L_SHOULDER, 2] = -1.25
    pose[:, R_SHOULDER, 2] = 1.25
    pose[:, SPINE2, 1] = 0.08 * s
    orient = np.zeros((len(t), 3))
    transl = np.stack([np.zeros_like(t), 0.02 * np.cos(2 * phase), 0.35 * t], -1)  # slowly towards the camera
    return orient, pose, transl


def _wave(t: np.ndarray):
    phase = 2 * np.pi * t / 0.8
    pose = _base(len(t))
    pose[:, R_SHOULDER, 2] = -0.35 + 0.05 * np.sin(phase)  # right arm raised to the side
    pose[:, R_SHOULDER, 1] = 0.15
    pose[:, R_SHOULDER, 0] = -1.4  # twist the upper arm so the elbow bends upwards
    pose[:, R_ELBOW, 1] = 1.3 + 0.35 * np.sin(phase)  # forearm waving
    pose[:, HEAD, 2] = 0.08 * np.sin(phase * 0.5)
    pose[:, SPINE3, 2] = 0.04 * np.sin(phase)
    return np.zeros((len(t), 3)), pose, np.zeros((len(t), 3))


def _turn(t: np.ndarray):
    duration = max(float(t[-1]), 1e-6)
    yaw = 2 * np.pi * (0.5 - 0.5 * np.cos(np.pi * t / duration))  # one full turn, easing in and out
    pose = _base(len(t))
    step = np.sin(2 * np.pi * t / 0.9)
    pose[:, L_HIP, 0] = -0.15 * np.clip(step, 0, None) - 0.1
    pose[:, R_HIP, 0] = -0.15 * np.clip(-step, 0, None) - 0.1
    pose[:, L_KNEE, 0] = 0.15 + 0.3 * np.clip(step, 0, None)
    pose[:, R_KNEE, 0] = 0.15 + 0.3 * np.clip(-step, 0, None)
    pose[:, L_SHOULDER, 2] = -0.8
    pose[:, R_SHOULDER, 2] = 0.8
    orient = np.stack([np.zeros_like(t), yaw, np.zeros_like(t)], -1)
    return orient, pose, np.zeros((len(t), 3))


def _dance(t: np.ndarray):
    beat = 2 * np.pi * t / 0.6
    pose = _base(len(t))
    sway = np.sin(beat / 2)
    pose[:, L_SHOULDER, 2] = -0.3 + 0.9 * np.sin(beat / 2)  # arms pump up and down alternately
    pose[:, R_SHOULDER, 2] = 0.3 + 0.9 * np.sin(beat / 2)
    pose[:, L_SHOULDER, 1] = -0.4
    pose[:, R_SHOULDER, 1] = 0.4
    pose[:, L_ELBOW, 1] = -0.9 - 0.5 * np.sin(beat)
    pose[:, R_ELBOW, 1] = 0.9 - 0.5 * np.sin(beat)
    bounce = 0.5 - 0.5 * np.cos(beat)
    pose[:, L_KNEE, 0] = 0.15 + 0.45 * bounce
    pose[:, R_KNEE, 0] = 0.15 + 0.45 * bounce
    pose[:, L_HIP, 0] = -0.1 - 0.25 * bounce
    pose[:, R_HIP, 0] = -0.1 - 0.25 * bounce
    pose[:, SPINE2, 1] = 0.2 * sway
    pose[:, SPINE1, 2] = 0.1 * sway
    pose[:, HEAD, 0] = 0.1 * np.sin(beat)
    orient = np.stack([np.zeros_like(t), 0.3 * np.sin(beat / 4), np.zeros_like(t)], -1)
    transl = np.stack([0.12 * sway, -0.05 * bounce, np.zeros_like(t)], -1)
    return orient, pose, transl


def _idle(t: np.ndarray):
    pose = _base(len(t))
    breath = np.sin(2 * np.pi * t / 3.5)
    pose[:, SPINE3, 0] = 0.03 * breath
    pose[:, HEAD, 1] = 0.1 * np.sin(2 * np.pi * t / 5.0)
    return np.zeros((len(t), 3)), pose, np.zeros((len(t), 3))


_CLIPS = {"walk": _walk, "wave": _wave, "turn": _turn, "dance": _dance, "idle": _idle}


def default_camera(width: int = 512, height: int = 512) -> Camera:
    return Camera.hmr2_default(width, height)


def place_world_motion(global_orient_w: np.ndarray, body_pose: np.ndarray, betas: np.ndarray, transl_w: np.ndarray,
                       body: BodyModel, world_to_camera: np.ndarray, camera: Camera | None = None, fps: float = 30.0,
                       fill: float = 0.8, face_camera: bool = False) -> Motion:
    """Put a world-frame SMPL sequence in front of a camera (default: `default_camera()`).

    The first frame's body is centred in the image and its rest height fills `fill` of the image
    height; later frames keep their world root movement (rotated into the camera frame).
    `face_camera` turns the whole sequence about the vertical so the first frame faces the camera.
    """
    from .alignment import body_stature

    camera = camera or default_camera()
    T = len(global_orient_w)
    betas = np.asarray(betas, dtype=np.float64).reshape(-1, np.asarray(betas).shape[-1])[:1]
    r_wc = np.asarray(world_to_camera, dtype=np.float64)
    rot_w = axis_angle_to_matrix(torch.as_tensor(np.asarray(global_orient_w, dtype=np.float64))).numpy()
    rot_c = r_wc[None] @ rot_w
    transl_w = np.asarray(transl_w, dtype=np.float64)
    with torch.no_grad():
        b = torch.as_tensor(betas[:, : body.num_betas], dtype=body.v_template.dtype)
        j0 = body.rest_joints(b)[0, 0].cpu().numpy().astype(np.float64)
        v = (body.v_template + torch.einsum("bk,vck->bvc", b, body.shapedirs)[0]).cpu().numpy()
    pelvis_c = (r_wc @ (j0[None] + transl_w).T).T  # pelvis positions, camera axes, before the offset
    if face_camera:
        forward = rot_c[0] @ np.array([0.0, 0.0, 1.0])
        angle = math.atan2(forward[0], forward[2])
        target = math.pi  # facing the camera = forward along -z
        c, s = math.cos(target - angle), math.sin(target - angle)
        turn = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        rot_c = turn[None] @ rot_c
        pelvis_c = (turn @ (pelvis_c - pelvis_c[0]).T).T + pelvis_c[0]
    stature = body_stature(body, betas)
    used = np.unique(body.faces.cpu().numpy())
    mid_y = 0.5 * (v[used, 1].max() + v[used, 1].min())
    z = camera.fy * stature / (fill * camera.height)
    # the pelvis sits (j0_y - mid_y) above the body's middle; camera y points down
    target0 = np.array([(camera.width / 2 - camera.cx) * z / camera.fx,
                        -(j0[1] - mid_y) + (camera.height / 2 - camera.cy) * z / camera.fy, z])
    offset = target0 - pelvis_c[0]
    transl_c = pelvis_c + offset - j0[None]
    go_c = matrix_to_axis_angle(torch.as_tensor(rot_c)).numpy()
    return Motion(go_c.astype(np.float32), np.asarray(body_pose, dtype=np.float32).reshape(T, 23, 3),
                  betas.astype(np.float32), transl_c.astype(np.float32), camera, fps)


def builtin_motion(name: str, body: BodyModel, seconds: float = 4.0, fps: float = 30.0,
                   camera: Camera | None = None, betas: np.ndarray | None = None, fill: float = 0.8,
                   start: float = 0.0) -> Motion:
    """One of BUILTIN_MOTIONS as a camera-frame `Motion` in front of `camera` (default camera).

    `fill`: the share of the image height the first frame's rest body fills; `start`: where in
    the clip (seconds) the motion begins (the clips are periodic, so any start is a valid motion).
    """
    if name not in _CLIPS:
        raise MotionSourceError(f"unknown built-in motion '{name}': choose one of {', '.join(BUILTIN_MOTIONS)}")
    T = max(2, int(round(seconds * fps)))
    t = start + np.arange(T) / fps
    orient, pose, transl = _CLIPS[name](t)
    betas = np.zeros((1, 10)) if betas is None else betas
    return place_world_motion(orient, pose, betas, transl, body, Y_UP_TO_CAMERA, camera, fps, fill=fill)
