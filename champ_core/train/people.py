"""The generated people of `synth-data`: motion, body shape, appearance, camera and background of one
video, rendered to RGB frames and guidance maps (see `synth.py` for the data set around it)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..body.evaluation import random_body_pose
from ..body.keypoints import skeleton_keypoints
from ..body.model import BodyModel, axis_angle_to_matrix, matrix_to_axis_angle, open_body_model
from ..body.motion import Motion
from ..body.motions import BUILTIN_MOTIONS, Y_UP_TO_CAMERA, builtin_motion, default_camera, place_world_motion
from ..render import draw_skeleton, render_guidance
from ..render.appearance import random_appearance, random_background, render_appearance, vertex_regions
from .synth import SynthOptions

HEAD_JOINT = 15


@dataclass
class SynthVideo:
    """One generated video: frames, guidance layers, boxes, background and what generated it."""

    images: np.ndarray  # (T, S, S, 3) uint8
    layers: dict[str, np.ndarray]  # depth, normal, semantic_map, dwpose (T, S, S, 3), mask (T, S, S)
    bboxes: np.ndarray  # (T, 4) x0, y0, x1, y1
    background: np.ndarray  # (S, S, 3) uint8
    motion: Motion
    description: dict


def video_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of video `index` of a data set with `seed` (independent of every other video)."""
    return np.random.default_rng([int(seed), int(index)])


def _yaw_about_pelvis(motion: Motion, body: BodyModel, yaw: float) -> Motion:
    """Turn the whole sequence by `yaw` about the vertical (camera y) through the first pelvis."""
    c, s = math.cos(yaw), math.sin(yaw)
    turn = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    with torch.no_grad():
        betas = torch.as_tensor(motion.betas[:1, : body.num_betas], dtype=body.v_template.dtype)
        j0 = body.rest_joints(betas)[0, 0].cpu().numpy().astype(np.float64)
    rot = axis_angle_to_matrix(torch.as_tensor(motion.global_orient, dtype=torch.float64)).numpy()
    pelvis = motion.transl.astype(np.float64) + j0[None]
    pelvis = (turn @ (pelvis - pelvis[0]).T).T + pelvis[0]
    orient = matrix_to_axis_angle(torch.as_tensor(turn[None] @ rot)).numpy()
    return Motion(orient.astype(np.float32), motion.body_pose, motion.betas, (pelvis - j0[None]).astype(np.float32),
                  motion.camera, motion.fps)  # fmt: skip


def _random_motion(rng: np.random.Generator, options: SynthOptions, body: BodyModel, source: str) -> tuple[Motion, str]:
    camera = default_camera(options.size, options.size)
    betas = np.clip(rng.normal(0.0, options.betas_std, size=(1, 10)), -2.5, 2.5)
    fill = float(rng.uniform(*options.height_range))
    if source == "builtin":
        name = str(rng.choice(BUILTIN_MOTIONS))  # drawn even when fixed, so the rest of the video stays the same
        name = options.builtin_motion or name
        motion = builtin_motion(name, body, seconds=options.frames / options.fps, fps=options.fps, camera=camera,
                                betas=betas, fill=fill, start=float(rng.uniform(0.0, 4.0)))  # fmt: skip
    else:
        name = "random"
        pose = random_body_pose(rng, options.frames, options.fps)
        t = np.arange(options.frames) / options.fps
        drift = np.stack([rng.uniform(-0.1, 0.1) * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t),
                          np.zeros_like(t), np.zeros_like(t)], -1)  # fmt: skip
        motion = place_world_motion(np.zeros((options.frames, 3)), pose, betas, drift, body, Y_UP_TO_CAMERA, camera,
                                    options.fps, fill=fill)  # fmt: skip
    yaw = math.radians(float(rng.uniform(*options.yaw_range_deg)))
    return _yaw_about_pelvis(motion, body, yaw), name


def _boxes(mask: np.ndarray) -> np.ndarray:
    """(T, 4) x0, y0, x1, y1 of each frame's mask (the whole frame where the mask is empty)."""
    boxes = np.zeros((len(mask), 4), dtype=np.float64)
    height, width = mask.shape[1:3]
    for t, frame in enumerate(mask):
        rows, cols = np.flatnonzero(frame.any(1)), np.flatnonzero(frame.any(0))
        boxes[t] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) if len(rows) else (0, 0, width, height)
    return boxes


def generate_video(options: SynthOptions, index: int, body: BodyModel | None = None) -> SynthVideo:
    """Video `index` of the data set `options` describes (depends only on options and index)."""
    options.validate()
    body = body or open_body_model()
    rng = video_rng(options.seed, index)
    source = options.motions if options.motions != "all" else ("builtin" if rng.random() < 0.5 else "random")
    motion, motion_name = _random_motion(rng, options, body, source)
    appearance = random_appearance(rng)
    background = random_background(rng, options.size, options.size)
    camera = motion.camera
    posed = motion.pose(body)
    layers = render_guidance(posed.vertices, body.faces, body.part_labels, camera, backend="torch")
    layers["dwpose"] = draw_skeleton(skeleton_keypoints(posed.vertices, posed.joints, camera), camera.width,
                                     camera.height)  # fmt: skip
    with torch.no_grad():
        betas = torch.as_tensor(motion.betas[:1, : body.num_betas], dtype=body.v_template.dtype)
        rest = (body.v_template + torch.einsum("bk,vck->bvc", betas, body.shapedirs)[0]).cpu().numpy()
        head = body.rest_joints(betas)[0, HEAD_JOINT].cpu().numpy()
    labels = np.asarray(body.part_labels.cpu() if isinstance(body.part_labels, torch.Tensor) else body.part_labels)
    regions = vertex_regions(labels, rest, head, appearance)
    images = render_appearance(posed.vertices.cpu().numpy(), np.asarray(body.faces.cpu()), regions, rest, camera,
                               appearance, background)  # fmt: skip
    description = {
        "seed": options.seed, "index": index, "motion": motion_name, "frames": options.frames, "size": options.size,
        "fps": options.fps, "appearance": asdict(appearance),
    }  # fmt: skip
    return SynthVideo(images, layers, _boxes(layers["mask"]), background, motion, description)


