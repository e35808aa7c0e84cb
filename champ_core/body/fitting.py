"""Fit SMPL to 2D keypoints: whole sequences optimised as one batch (also one image).

The problem is kept small: the loss reads only the 18 OpenPose points (13 from SMPL joints, 5 from
surface vertices), joints of the shaped rest body come from the joint regressor pre-applied to the
shape directions, and only those 5 vertices are skinned. Three stages, all Adam:

1. orientation and translation (pose held at the natural rest pose), from an initial guess that
   picks the heading per frame among 24 candidates (jointly over time) and the distance from the
   keypoints' spread;
2. everything (body pose, orientation, translation, betas), from three initial poses at once
   (natural; arms forward, elbows bent, hips flexed; arms back, hips extended) as independent
   copies of the sequence: 2D keypoints cannot tell a limb pointing towards the camera from one
   pointing away, and a single start stays on whichever side it began;
3. per frame the whole body, then each limb separately, taken from the copy that reprojects best
   (chosen jointly over time with a cost on switching), then everything refined from there.

Energy: robust (Geman-McClure) reprojection weighted by confidence; the priors of `priors.py`;
betas L2; temporal acceleration of the joints relative to the pelvis, of the pelvis's image position and
of its apparent size. Missing keypoints
(confidence 0) add nothing, so joints outside the image are left to the priors, and frames with
nobody in them are filled in by the temporal terms and flagged `valid = False`.
Camera: perspective, focal 5000/256 x max(W, H) px with a centred principal point by default (HMR2's).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..camera import Camera
from .keypoints import OPENPOSE18_VERTEX_IDS, KeypointError, PoseFrames, _openpose18_gather, neck_point
from .model import (
    LANDMARK_VERTICES,
    NUM_JOINTS,
    BodyModel,
    axis_angle_to_matrix,
    forward_kinematics,
    matrix_to_axis_angle,
)
from .motion import Motion, interpolate_invalid
from .priors import (
    limb_hypotheses,
    natural_pose,
    pose_prior,
    pose_prior_per_joint,
    pose_stiffness,
    range_of_motion,
)

# OpenPose-18 indices
_NECK, _RSH, _LSH, _RHIP, _LHIP = 1, 2, 5, 8, 11
# reprojection weight per OpenPose-18 point (face points are small and less reliable)
# limbs chosen separately among the hypotheses: (OpenPose-18 points, body_pose joints)
_LIMBS = (([3, 4], [16, 18, 20, 22]), ([6, 7], [15, 17, 19, 21]), ([9, 10], [1, 4, 7, 10]), ([12, 13], [0, 3, 6, 9]))
_KP_WEIGHT = torch.tensor([0.6, 1.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.4, 0.4, 0.4, 0.4])

# Whole-body extras (DWPose's 133 points carry them), appended after the 18 OpenPose points:
# 18-23 feet (left big toe, left small toe, left heel, right big toe, right small toe, right heel:
# COCO-WholeBody's / BODY_25's order), then per hand (left 24-30, right 31-37) the wrist, the middle
# finger's knuckle (hand keypoint 9, SMPL's hand joint) and the five fingertips (hand keypoints 4, 8,
# 12, 16, 20). SMPL has no finger joints: the tips are the surface landmarks smplx also uses.
FOOT_LANDMARKS = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
FINGERTIPS = ("thumb", "index", "middle", "ring", "pinky")
HAND_POINTS = (0, 9, 4, 8, 12, 16, 20)  # DWPose / OpenPose hand keypoint indices used, in that order
HAND_JOINTS = ((20, 22), (21, 23))  # (wrist, hand) SMPL joints of the left and right hand
NUM_EXTRA = len(FOOT_LANDMARKS) + 2 * len(HAND_POINTS)
_EXTRA_WEIGHT = torch.tensor([0.6] * 6 + [0.5, 0.6, 0.3, 0.3, 0.3, 0.3, 0.3] * 2)
_EXTRA_LIMBS = ([31, 32, 33, 34, 35, 36, 37], [24, 25, 26, 27, 28, 29, 30], [21, 22, 23], [18, 19, 20])


def extra_landmark_ids() -> torch.Tensor:
    """Vertex ids of the extras' surface landmarks: the 6 foot points, then 5 tips per hand (left, right)."""
    names = [*FOOT_LANDMARKS, *(f"{side}_{tip}" for side in ("left", "right") for tip in FINGERTIPS)]
    return torch.tensor([LANDMARK_VERTICES[n] for n in names])


def _extra_gather(num_joints: int = 24) -> torch.Tensor:
    """Index of each extra point in the concatenation [SMPL joints (24) | the 16 extra landmarks]."""
    order = list(range(num_joints, num_joints + 6))  # the feet
    for side, (wrist, hand) in enumerate(HAND_JOINTS):
        order += [wrist, hand, *range(num_joints + 6 + 5 * side, num_joints + 11 + 5 * side)]
    with torch.inference_mode(False):  # a normal tensor even when imported inside inference mode (ComfyUI)
        return torch.tensor(order)


_EXTRA_GATHER = _extra_gather()


def extra_points_from_body(vertices, joints):
    """The extras' 3D points (T, 20, 3) from posed SMPL vertices (T, V, 3) (or the 16 landmark
    vertices (T, 16, 3)) and joints (T, 24, 3); numpy or torch."""
    is_np = isinstance(joints, np.ndarray)
    v, j = torch.as_tensor(vertices), torch.as_tensor(joints)
    lm = v if v.shape[1] == 16 else v[:, extra_landmark_ids().to(v.device)]
    out = torch.cat([j, lm.to(j.dtype)], dim=1)[:, _EXTRA_GATHER.to(j.device)]  # one gather (a fit step runs it)
    return out.numpy() if is_np else out


def extra_keypoints(pose: PoseFrames, feet: np.ndarray | None = None) -> np.ndarray | None:
    """(T, 20, 3) extras from a PoseFrames' hands and a feet array (T, 6, 3); None when neither has any point."""
    feet = feet if feet is not None else getattr(pose, "feet", None)
    T = pose.num_frames
    out = np.zeros((T, NUM_EXTRA, 3))
    if feet is not None:
        feet = np.asarray(feet, dtype=np.float64)
        if feet.shape != (T, 6, 3):
            raise KeypointError(f"foot keypoints must be (T, 6, 3) with T = {T}, got {feet.shape}")
        out[:, :6] = feet
    if pose.hands is not None:
        hands = np.asarray(pose.hands, dtype=np.float64)
        if hands.shape != (T, 2, 21, 3):
            raise KeypointError(f"hand keypoints must be (T, 2, 21, 3) with T = {T}, got {hands.shape}")
        out[:, 6:13] = hands[:, 0, list(HAND_POINTS)]
        out[:, 13:20] = hands[:, 1, list(HAND_POINTS)]
    out[~np.isfinite(out).all(-1)] = 0.0
    out[out[..., 2] <= 0] = 0.0
    return out if (out[..., 2] > 0).any() else None


@dataclass
class FitConfig:
    stage1_iterations: int = 50
    iterations: int = 120
    lr: float = 0.04
    robust_sigma_px: float = 40.0  # Geman-McClure scale, in pixels of a 512 px image
    pose_weight: float = 0.04
    betas_weight: float = 0.02
    smooth_weight: float = 0.02  # on joint acceleration, in pixels/frame^2 (see `energy_terms`)
    fit_betas: bool = True
    hypotheses: bool = True  # stage 2 from several initial limb poses, best per frame and limb, then refine
    refine_iterations: int = 60
    switch_cost: float = 200.0  # energy for changing hypothesis between neighbouring frames
    wholebody: bool = True  # also fit feet and hand keypoints when the input has them (DWPose's 133)
    limb_prior: float = 1.0  # weight of a limb's pose prior when choosing its hypothesis (0 = reprojection only)
    foot_weight: float = 1.0  # scales the foot points' reprojection weights (`_EXTRA_WEIGHT`)
    hand_weight: float = 0.3  # scales the hand points' reprojection weights (1.0 worsened 2 of 6 tuning sequences)
    device: str | torch.device = "cpu"


ProgressFn = Callable[[int, int], None]


def _rot_x(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _flat_dirs(dirs: torch.Tensor) -> torch.Tensor:
    """Blend directions (P, 3, K) as a (K, P*3) matrix: `coeffs @ flat` is their (.., P*3) offsets."""
    return dirs.permute(2, 0, 1).reshape(dirs.shape[2], -1).contiguous()


def _fill_missing(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Nearest-valid fill along time for frames where ok is False."""
    if ok.all() or not ok.any():
        return values
    idx = np.where(ok)[0]
    nearest = idx[np.abs(np.arange(len(ok))[:, None] - idx[None]).argmin(1)]
    return values[nearest]


class _Fitter:
    def __init__(self, body: BodyModel, camera: Camera, config: FitConfig, extras: bool = False) -> None:
        self.body = body
        self.cam = camera
        self.cfg = config
        dev = torch.device(config.device)
        self.dev = dev
        self.dtype = torch.float32
        # copies of the few buffers the fit needs, on the fitting device (the model itself is left alone)
        j_reg, shapedirs = body.J_regressor.to(dev), body.shapedirs.to(dev)
        # blend shapes as (K, points x 3) matrices: one matmul per step instead of an einsum's reshapes
        self.j_template = (j_reg @ body.v_template.to(dev)).to(self.dtype)
        self.j_dirs = _flat_dirs(torch.einsum("jv,vck->jck", j_reg, shapedirs).to(self.dtype))
        self.extras = extras
        ids = OPENPOSE18_VERTEX_IDS
        if extras:
            ids = torch.cat([ids, extra_landmark_ids()])
        ids = ids.to(body.v_template.device)
        self.lm_template = body.v_template[ids].to(dev)
        self.lm_dirs = _flat_dirs(body.shapedirs[ids].to(dev))
        self.lm_posedirs = _flat_dirs(body.posedirs[ids].to(dev))
        self.lm_weights = body.lbs_weights[ids].to(dev)
        self.parents = body._parents_list
        self.mean_pose = natural_pose().to(dev)
        self.stiffness = pose_stiffness().to(dev)
        self.rom = tuple(r.to(dev) for r in range_of_motion())
        scale = torch.tensor([config.foot_weight] * 6 + [config.hand_weight] * 14)
        self.kp_weight = (torch.cat([_KP_WEIGHT, _EXTRA_WEIGHT * scale]) if extras else _KP_WEIGHT).to(dev)
        self.limbs = [(points + list(extra) if extras else points, joints)
                      for (points, joints), extra in zip(_LIMBS, _EXTRA_LIMBS)]
        gather = _openpose18_gather()  # into [joints | neck | 5 head landmarks]
        if extras:  # their landmarks come after the neck and the 5 head landmarks
            extra = _extra_gather()
            gather = torch.cat([gather, torch.where(extra >= NUM_JOINTS, extra + 6, extra)])
        self.point_gather = gather.to(dev)
        self.pix_scale = max(camera.width, camera.height) / 512.0
        self.focal = torch.tensor([camera.fx, camera.fy], dtype=self.dtype, device=dev)
        self.centre = torch.tensor([camera.cx, camera.cy], dtype=self.dtype, device=dev)
        torso = [0.3, 1, 1, 0.3, 0.1, 1, 0.3, 0.1, 1, 0.3, 0.1, 1, 0.3, 0.1, 0.2, 0.2, 0.2, 0.2]
        self.torso_weight = torch.tensor(torso + [0.1] * (len(self.kp_weight) - 18), device=dev)
        self.rigid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # see `freeze_body`

    def keypoints_3d(self, rot_global: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor,
                     transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """OpenPose-18 3D points (T,18,3) (then the 20 extras when fitting them) and SMPL joints (T,24,3)
        in the camera frame. `body_pose`: axis-angle (T,23,3) or rotation matrices (T,23,3,3)."""
        T = body_pose.shape[0]
        pose_rots = body_pose if body_pose.dim() == 4 else axis_angle_to_matrix(body_pose)
        rots = torch.cat([rot_global[:, None], pose_rots], dim=1)
        betas = betas.expand(T, -1)
        rest = self.j_template + (betas @ self.j_dirs).view(T, -1, 3)
        posed, transforms = forward_kinematics(rots, rest, self.parents)
        v_shaped = self.lm_template + (betas @ self.lm_dirs).view(T, -1, 3)
        pose_feature = (rots[:, 1:] - torch.eye(3, device=self.dev)).reshape(T, -1)
        v_posed = v_shaped + (pose_feature @ self.lm_posedirs).view(T, -1, 3)
        per_vertex = (self.lm_weights @ transforms.flatten(2)).view(T, -1, 3, 4)
        landmarks = (per_vertex[..., :3] @ v_posed[..., None])[..., 0] + per_vertex[..., 3]
        # `openpose18_from_body` (then `extra_points_from_body`) as one gather from [joints | neck | landmarks]
        source = torch.cat([posed, neck_point(posed), landmarks], 1) + transl[:, None]
        return source.index_select(1, self.point_gather), source[:, :NUM_JOINTS]

    def freeze_body(self, pose: torch.Tensor, betas: torch.Tensor) -> None:
        """Precompute the body of `pose` and `betas` for `rigid_keypoints` (stage 1 holds them fixed)."""
        T = pose.shape[0]
        with torch.no_grad():
            identity = torch.eye(3, device=self.dev).expand(T, 3, 3)
            pts, joints = self.keypoints_3d(identity, pose, betas, torch.zeros(T, 3, device=self.dev))
            root = joints[:, :1]  # unturned and unmoved, the root joint sits at its rest position
            self.rigid = (pts - root, joints - root, root)

    def rigid_keypoints(self, rot_global: torch.Tensor, transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`keypoints_3d` of the frozen body: with the body pose fixed, the global rotation turns the whole
        body rigidly about its rest root joint, so a step costs two small matmuls instead of the kinematic
        chain (the same numbers up to float rounding)."""
        pts, joints, root = self.rigid
        turn = rot_global.transpose(-1, -2)  # row vectors: p R^T
        offset = root + transl[:, None]
        return pts @ turn + offset, joints @ turn + offset

    def project(self, pts: torch.Tensor) -> torch.Tensor:
        return pts[..., :2] / pts[..., 2:].clamp_min(1e-3) * self.focal + self.centre

    # ------------------------------------------------------------------------------------ init
    def heading_guess(self, kp: np.ndarray, steps: int = 24) -> torch.Tensor:
        """Per-frame upright orientation (T,3,3): the best of `steps` headings, chosen jointly over
        time (Viterbi with a cost on turning) so the guess never flips between neighbouring frames."""
        T = kp.shape[0]
        upright = _rot_x(math.pi)  # SMPL's y-up body facing +z -> upright, facing the camera
        cands = torch.stack([_rot_y(2 * math.pi * k / steps) @ upright for k in range(steps)])
        with torch.no_grad():
            pts, _ = self.keypoints_3d(cands.to(self.dev), self.mean_pose.expand(steps, -1, -1),
                                       torch.zeros(1, self.body.num_betas, device=self.dev),
                                       torch.zeros(steps, 3, device=self.dev))
        model = pts[:, :18, :2].cpu().numpy().astype(np.float64)  # (K,18,2) orthographic view
        point_w = np.array([0.5, 1, 1, 0.2, 0.1, 1, 0.2, 0.1, 1, 0.2, 0.1, 1, 0.2, 0.1, 0.5, 0.5, 0.5, 0.5])
        cost = np.zeros((T, steps))
        for t in range(T):
            w = point_w * (kp[t, :, 2] > 0)
            if w.sum() <= 0 or (kp[t, :, 2] > 0).sum() < 3:
                continue
            x = kp[t, :, :2]
            xc = x - (w[:, None] * x).sum(0) / w.sum()
            norm = (w * (xc**2).sum(1)).sum() + 1e-9
            for k in range(steps):
                q = model[k] - (w[:, None] * model[k]).sum(0) / w.sum()
                scale = max((w * (q * xc).sum(1)).sum() / ((w * (q**2).sum(1)).sum() + 1e-12), 0.0)
                cost[t, k] = (w * ((scale * q - xc) ** 2).sum(1)).sum() / norm
        # Viterbi: turning by one step between frames costs a little
        ang = np.minimum(np.arange(steps), steps - np.arange(steps))
        trans = 0.02 * ang[(np.arange(steps)[:, None] - np.arange(steps)[None]) % steps] ** 2
        acc = cost[0].copy()
        back = np.zeros((T, steps), dtype=np.int64)
        for t in range(1, T):
            total = acc[:, None] + trans  # from i to j
            back[t] = total.argmin(0)
            acc = total.min(0) + cost[t]
        path = np.zeros(T, dtype=np.int64)
        path[-1] = int(acc.argmin())
        for t in range(T - 1, 0, -1):
            path[t - 1] = back[t, path[t]]
        return cands[path]

    def initial_guess(self, kp: np.ndarray):
        """Per-frame facing rotation and translation from the keypoints alone (the 18 body points)."""
        kp = kp[:, :18]
        T = kp.shape[0]
        conf = kp[..., 2] > 0
        rot0 = self.heading_guess(kp).to(self.dev)
        betas0 = torch.zeros(1, self.body.num_betas, device=self.dev)
        pose0 = self.mean_pose.expand(T, -1, -1)
        with torch.no_grad():
            pts, _ = self.keypoints_3d(rot0, pose0, betas0, torch.zeros(T, 3, device=self.dev))
        pts = pts[:, :18].cpu().numpy()
        transl = np.zeros((T, 3))
        ok_frames = conf.sum(1) >= 2
        for t in np.where(ok_frames)[0]:
            m = conf[t]
            w2 = kp[t, m, :2]
            w3 = pts[t, m]
            c2, c3 = w2.mean(0), w3.mean(0)
            s2 = np.sqrt(((w2 - c2) ** 2).sum(1).mean())
            s3 = np.sqrt(((w3[:, :2] - c3[:2]) ** 2).sum(1).mean())
            f = 0.5 * (self.cam.fx + self.cam.fy)
            z = f * s3 / max(s2, 1e-3)
            z = float(np.clip(z, 0.5, 1e4))
            target = np.array([(c2[0] - self.cam.cx) * z / self.cam.fx, (c2[1] - self.cam.cy) * z / self.cam.fy, z])
            transl[t] = target - c3
        transl = _fill_missing(transl, ok_frames)
        rot_np = _fill_missing(rot0.cpu().numpy(), ok_frames)
        return torch.as_tensor(rot_np, device=self.dev), torch.as_tensor(transl, dtype=self.dtype, device=self.dev)

    # ----------------------------------------------------------------------------------- energy
    def energy_terms(self, params, target, conf, stage: int, hyps: int = 1):
        """Per-point robust reprojection (N,P), per-frame pose prior (N,), betas and temporal terms.

        With `hyps` > 1 the N = hyps x T frames are independent copies of the sequence (one per
        initial pose), each with its own betas; the temporal term never links two copies."""
        rot0, delta, pose, betas, ab, logz, z0 = params
        z = z0 * torch.exp(logz)
        f = 0.5 * (self.cam.fx + self.cam.fy)
        transl = torch.cat([ab * (100.0 / f) * z[:, None], z[:, None]], -1)
        T = pose.shape[0] // hyps
        if stage == 1 and self.rigid is not None:
            rot = rot0 @ axis_angle_to_matrix(delta)
            pts, joints = self.rigid_keypoints(rot, transl)
        else:  # the global correction and the body pose through one Rodrigues call
            mats = axis_angle_to_matrix(torch.cat([delta[:, None], pose], 1))
            rot = rot0 @ mats[:, 0]
            pts, joints = self.keypoints_3d(rot, mats[:, 1:], betas.repeat_interleave(T, 0), transl)
        proj = self.project(pts)
        res = ((proj - target) / self.pix_scale).pow(2).sum(-1)
        sig2 = self.cfg.robust_sigma_px**2
        robust = sig2 * res / (res + sig2)
        w = conf * self.kp_weight
        if stage == 1:  # torso first: shoulders, hips, neck carry the orientation
            w = w * self.torso_weight
        e_proj = w * robust
        e_pose = self.cfg.pose_weight * 1000.0 * pose_prior(pose, self.mean_pose, self.stiffness, self.rom)
        e_betas = self.cfg.betas_weight * 1000.0 * betas.pow(2).sum() * T
        e_smooth = torch.zeros((), device=self.dev)
        if T >= 3:
            px_per_m = (0.5 * (self.cam.fx + self.cam.fy) / joints[..., 2].detach().clamp_min(1e-3)) / self.pix_scale
            # in pixels (of a 512 px image): the joints relative to the pelvis at each frame's distance, the
            # pelvis's image position, and its depth as the change of apparent size (a pelvis-to-head
            # length). Metric root depth would be scaled like lateral motion and far cameras (depth
            # drifting by metres) would then pin the body in place.
            # All three tracks go through one second difference, as columns of one (hyps, T, 3J + 3) tensor.
            jk, scale = joints.reshape(hyps, T, -1, 3), px_per_m.reshape(hyps, T, -1)
            root = jk[:, :, 0]
            image = root[..., :2] / root[..., 2:].clamp_min(1e-3) * (f / self.pix_scale)
            log_z = torch.log(root[..., 2:].clamp_min(1e-3))
            tracks = torch.cat([(jk - jk[:, :, :1]).flatten(2), image, log_z], -1)
            acc = tracks[:, 2:] - 2 * tracks[:, 1:-1] + tracks[:, :-2]
            weight = torch.cat([scale[..., None].expand(*scale.shape, 3).flatten(2), torch.ones_like(image),
                                0.85 * scale[..., :1]], -1)[:, 1:-1]  # no gradient: the scale is detached
            e_smooth = self.cfg.smooth_weight * (acc * weight).pow(2).sum()
        return e_proj, e_pose, e_betas, e_smooth, rot, transl

    def energy(self, params, target, conf, stage: int, hyps: int = 1):
        e_proj, e_pose, e_betas, e_smooth, rot, transl = self.energy_terms(params, target, conf, stage, hyps)
        return e_proj.sum() + e_pose.sum() + e_betas + e_smooth, rot, transl

    def _optimise(self, params, groups, target, conf, stage, iters, hyps, progress, counter):
        opt = _adam([dict(g) for g in groups])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1), eta_min=0.0)
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            loss, _, _ = self.energy(params, target, conf, stage, hyps)
            loss.backward()
            opt.step()
            sched.step()
            counter[0] += 1
            if progress is not None and (counter[0] % 20 == 0 or counter[0] == counter[1]):
                progress(counter[0], counter[1])

    def _select(self, cost: np.ndarray, switch: float) -> np.ndarray:
        """Per-frame hypothesis (T,) minimising cost (K,T) plus `switch` per change (Viterbi)."""
        K, T = cost.shape
        trans = switch * (1 - np.eye(K))
        acc = cost[:, 0].copy()
        back = np.zeros((T, K), dtype=np.int64)
        for t in range(1, T):
            total = acc[:, None] + trans
            back[t] = total.argmin(0)
            acc = total.min(0) + cost[:, t]
        path = np.zeros(T, dtype=np.int64)
        path[-1] = int(acc.argmin())
        for t in range(T - 1, 0, -1):
            path[t - 1] = back[t, path[t]]
        return path

    def run(self, kp_np: np.ndarray, progress: ProgressFn | None = None):
        T = kp_np.shape[0]
        target = torch.as_tensor(kp_np[..., :2], dtype=self.dtype, device=self.dev)
        conf = torch.as_tensor(kp_np[..., 2], dtype=self.dtype, device=self.dev).clamp(0, 1)
        rot0, transl0 = self.initial_guess(kp_np)
        f = 0.5 * (self.cam.fx + self.cam.fy)
        z0 = transl0[:, 2].clamp_min(0.5)
        ab = torch.stack([transl0[:, 0] / z0 * f / 100.0, transl0[:, 1] / z0 * f / 100.0], -1).clone().requires_grad_(True)
        logz = torch.zeros(T, device=self.dev, requires_grad=True)
        delta = torch.zeros(T, 3, device=self.dev, requires_grad=True)
        pose = self.mean_pose.expand(T, -1, -1).clone().requires_grad_(True)
        betas = torch.zeros(1, self.body.num_betas, device=self.dev, requires_grad=True)
        cfg = self.cfg
        inits = limb_hypotheses(self.mean_pose) if cfg.hypotheses else [self.mean_pose]
        K = len(inits)
        counter = [0, cfg.stage1_iterations + cfg.iterations + (cfg.refine_iterations if K > 1 and cfg.iterations > 0 else 0)]
        lr = cfg.lr

        def groups(d, a, lz, p, b):
            out = [{"params": [d], "lr": lr}, {"params": [a], "lr": lr * 0.5}, {"params": [lz], "lr": lr * 0.1}]
            if p is not None:
                out.append({"params": [p], "lr": lr})
                if cfg.fit_betas:
                    out.append({"params": [b], "lr": lr})
            return out

        if cfg.stage1_iterations > 0:
            self.freeze_body(pose.detach(), betas.detach())
            self._optimise((rot0, delta, pose, betas, ab, logz, z0), groups(delta, ab, logz, None, None), target, conf,
                           1, cfg.stage1_iterations, 1, progress, counter)
            self.rigid = None
        if cfg.iterations > 0:
            # stage 2: every initial pose optimised at once as K independent copies of the sequence
            def rep(x: torch.Tensor) -> torch.Tensor:
                return x.detach().repeat(K, *([1] * (x.dim() - 1)))

            params = [rep(rot0), rep(delta).requires_grad_(True), torch.cat([p.expand(T, -1, -1) for p in inits]).clone(),
                      betas.detach().repeat(K, 1), rep(ab).requires_grad_(True), rep(logz).requires_grad_(True), rep(z0)]
            params[2].requires_grad_(True)
            params[3].requires_grad_(True)
            tk, ck = target.repeat(K, 1, 1), conf.repeat(K, 1)
            self._optimise(tuple(params), groups(params[1], params[4], params[5], params[2], params[3]), tk, ck, 2,
                           cfg.iterations, K, progress, counter)
            if K == 1:
                delta, pose, betas, ab, logz = (params[i] for i in (1, 2, 3, 4, 5))
            else:
                delta, pose, betas, ab, logz = self._combine(params, tk, ck, K, T)
                self._optimise((rot0, delta, pose, betas, ab, logz, z0), groups(delta, ab, logz, pose, betas), target,
                               conf, 2, cfg.refine_iterations, 1, progress, counter)
        with torch.no_grad():
            _, rot, transl = self.energy((rot0, delta, pose, betas, ab, logz, z0), target, conf, 2)
        return rot.cpu(), pose.detach().cpu(), betas.detach().cpu(), transl.cpu()

    def _combine(self, params, target, conf, K: int, T: int):
        """Per frame and per limb, the hypothesis that reprojects best (chosen jointly over time)."""
        with torch.no_grad():
            e_proj, e_pose, _, _, _, _ = self.energy_terms(tuple(params), target, conf, 2, K)
        e_proj = e_proj.reshape(K, T, -1).cpu().numpy()
        e_pose = e_pose.reshape(K, T).cpu().numpy()
        _, delta, pose, betas, ab, logz, _ = (p.detach() for p in params)
        # the whole body (orientation, translation, torso) from the best hypothesis per frame
        whole = self._select(e_proj.sum(-1) + e_pose, self.cfg.switch_cost)
        frames = torch.arange(T, device=self.dev)
        pick = torch.as_tensor(whole, device=self.dev) * T + frames
        new_pose = pose[pick].clone()
        # each limb: its points' reprojection plus its joints' prior (2D cannot tell a limb bent towards the
        # camera from its mirror image; the range of motion can)
        with torch.no_grad():
            e_joint = (self.cfg.pose_weight * 1000.0 * pose_prior_per_joint(pose, self.mean_pose, self.stiffness, self.rom)
                       ).reshape(K, T, -1).cpu().numpy()
        for points, joints in self.limbs:
            cost = e_proj[..., points].sum(-1) + self.cfg.limb_prior * e_joint[..., joints].sum(-1)
            path = torch.as_tensor(self._select(cost, self.cfg.switch_cost), device=self.dev)
            new_pose[:, joints] = pose[path * T + frames][:, joints]
        counts = np.bincount(whole, minlength=K)
        best = int(counts.argmax())
        out = (delta[pick], new_pose, betas[best:best + 1], ab[pick], logz[pick])
        return tuple(x.clone().requires_grad_(True) for x in out)


def _adam(groups: list[dict]) -> torch.optim.Adam:
    """Adam in one fused kernel per step where torch has it for the device (CPU since torch 2.4), else
    the per-parameter loop: the fit's five small parameter groups make the loop's op count matter."""
    try:
        return torch.optim.Adam(groups, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(groups)


def flushing_denormals() -> bool:
    """Whether this thread's CPU float math flushes denormals to zero (torch has a setter, no getter)."""
    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0 == 0).item())


def fit_keypoints(pose: PoseFrames, body: BodyModel, camera: Camera | None = None, fps: float = 30.0,
                  config: FitConfig | None = None, frame_names: list[str] | None = None,
                  progress: ProgressFn | None = None, feet: np.ndarray | None = None) -> Motion:
    """Fit one SMPL sequence (shared betas) to a tracked person's keypoints. Returns a `Motion`.

    `camera` defaults to HMR2's for the keypoints' canvas. A single frame works too (that is how
    the reference image is fitted): it gives pose, distance/position and body proportions. Feet
    (`feet` (T, 6, 3), or a `feet` attribute of `pose`) and hand keypoints (`pose.hands`) are fitted
    too when present (`FitConfig.wholebody`); see `extra_keypoints`.
    """
    config = config or FitConfig()
    kp = np.asarray(pose.body, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (18, 3) or kp.shape[0] == 0:
        raise KeypointError(f"expected keypoints (T, 18, 3) with T >= 1, got {kp.shape}")
    kp = kp.copy()
    bad = ~np.isfinite(kp).all(-1)
    kp[bad] = 0.0
    if not (kp[..., 2] > 0).any():
        raise KeypointError("all keypoints are missing or NaN: nothing to fit")
    if (kp[..., 2] > 0).sum(1).max() < 3:
        raise KeypointError("every frame has fewer than 3 valid keypoints: not enough to fit a body")
    camera = camera or Camera.hmr2_default(pose.width, pose.height)
    extra = extra_keypoints(pose, feet) if config.wholebody else None
    fitter = _Fitter(body, camera, config, extras=extra is not None)
    body_kp = kp
    if extra is not None:
        kp = np.concatenate([kp, extra], axis=1)
    threads, flushing = torch.get_num_threads(), flushing_denormals()
    on_cpu = torch.device(config.device).type == "cpu"
    if on_cpu:
        # the fit is thousands of tiny ops: extra threads only add synchronisation (10x slower measured);
        # and Adam's moments decay into denormal floats, which the CPU computes far slower (the whole fit
        # ran ~17 % faster with them flushed to zero; values below 1e-38 change nothing here)
        torch.set_num_threads(1)
        torch.set_flush_denormal(True)
    try:
        rot, body_pose, betas, transl = fitter.run(kp, progress)
    finally:
        if on_cpu:
            torch.set_num_threads(threads)
            torch.set_flush_denormal(flushing)
    global_orient = matrix_to_axis_angle(rot)
    present = pose.present if pose.present is not None else (body_kp[..., 2] > 0).any(1)
    valid = np.asarray(present, dtype=bool) & ((body_kp[..., 2] > 0).sum(1) >= 3)
    motion = Motion(global_orient.numpy(), body_pose.numpy(), betas.numpy(), transl.numpy(), camera, fps,
                    frame_names or [], valid)
    return interpolate_invalid(motion)  # frames without the person: slerp between the nearest seen ones


def fit_reference(pose: PoseFrames, body: BodyModel, camera: Camera | None = None,
                  config: FitConfig | None = None) -> Motion:
    """Fit the reference image's person (first frame of `pose`): a one-frame `Motion`."""
    if pose.num_frames != 1:
        pose = PoseFrames(pose.body[:1], pose.width, pose.height,
                          None if pose.hands is None else pose.hands[:1], None if pose.face is None else pose.face[:1])
    config = config or REFERENCE_FIT_CONFIG
    return fit_keypoints(pose, body, camera, fps=30.0, config=config)


# Defaults for the one-frame reference fit (more iterations: one frame is cheap and the shape matters).
REFERENCE_FIT_CONFIG = FitConfig(stage1_iterations=100, iterations=300)
