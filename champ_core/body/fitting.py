"""Fit SMPL to 2D keypoints: whole sequences optimised as one batch (also one image).

The problem is kept small: the loss reads only the 18 OpenPose points (13 from SMPL joints, 5 from
surface vertices), joints of the shaped rest body come from the joint regressor pre-applied to the
shape directions, and only those 5 vertices are skinned. Two stages, both Adam:

1. orientation and translation (pose held at the natural rest pose), from an initial guess that
   picks the heading per frame among 24 candidates (jointly over time) and the distance from the
   keypoints' spread;
2. everything: body pose, orientation, translation and one set of betas for the sequence.

Energy: robust (Geman-McClure) reprojection weighted by confidence; the priors of `priors.py`;
betas L2; temporal acceleration of the 3D joints and of the translation. Missing keypoints
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
from .keypoints import OPENPOSE18_VERTEX_IDS, KeypointError, PoseFrames, openpose18_from_body
from .model import BodyModel, axis_angle_to_matrix, forward_kinematics, matrix_to_axis_angle
from .motion import Motion, interpolate_invalid
from .priors import natural_pose, pose_prior, pose_stiffness, range_of_motion

# OpenPose-18 indices
_NECK, _RSH, _LSH, _RHIP, _LHIP = 1, 2, 5, 8, 11
# reprojection weight per OpenPose-18 point (face points are small and less reliable)
_KP_WEIGHT = torch.tensor([0.6, 1.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.4, 0.4, 0.4, 0.4])


@dataclass
class FitConfig:
    stage1_iterations: int = 50
    iterations: int = 200
    lr: float = 0.04
    robust_sigma_px: float = 40.0  # Geman-McClure scale, in pixels of a 512 px image
    pose_weight: float = 0.04
    betas_weight: float = 0.02
    smooth_weight: float = 0.02  # on 3D joint acceleration, in pixels/frame^2
    fit_betas: bool = True
    device: str | torch.device = "cpu"


ProgressFn = Callable[[int, int], None]


def _rot_x(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _fill_missing(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Nearest-valid fill along time for frames where ok is False."""
    if ok.all() or not ok.any():
        return values
    idx = np.where(ok)[0]
    nearest = idx[np.abs(np.arange(len(ok))[:, None] - idx[None]).argmin(1)]
    return values[nearest]


class _Fitter:
    def __init__(self, body: BodyModel, camera: Camera, config: FitConfig) -> None:
        self.body = body
        self.cam = camera
        self.cfg = config
        dev = torch.device(config.device)
        self.dev = dev
        self.dtype = torch.float32
        # copies of the few buffers the fit needs, on the fitting device (the model itself is left alone)
        j_reg, shapedirs = body.J_regressor.to(dev), body.shapedirs.to(dev)
        self.j_template = (j_reg @ body.v_template.to(dev)).to(self.dtype)
        self.j_dirs = torch.einsum("jv,vck->jck", j_reg, shapedirs).to(self.dtype)
        ids = OPENPOSE18_VERTEX_IDS.to(body.v_template.device)
        self.lm_template = body.v_template[ids].to(dev)
        self.lm_dirs = body.shapedirs[ids].to(dev)
        self.lm_posedirs = body.posedirs[ids].to(dev)
        self.lm_weights = body.lbs_weights[ids].to(dev)
        self.parents = body._parents_list
        self.mean_pose = natural_pose().to(dev)
        self.stiffness = pose_stiffness().to(dev)
        self.rom = tuple(r.to(dev) for r in range_of_motion())
        self.kp_weight = _KP_WEIGHT.to(dev)
        self.pix_scale = max(camera.width, camera.height) / 512.0

    def keypoints_3d(self, rot_global: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor,
                     transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """OpenPose-18 3D points (T,18,3) and SMPL joints (T,24,3) in the camera frame."""
        T = body_pose.shape[0]
        rots = torch.cat([rot_global[:, None], axis_angle_to_matrix(body_pose)], dim=1)
        betas = betas.expand(T, -1)
        rest = self.j_template + torch.einsum("bk,jck->bjc", betas, self.j_dirs)
        posed, transforms = forward_kinematics(rots, rest, self.parents)
        v_shaped = self.lm_template + torch.einsum("bk,vck->bvc", betas, self.lm_dirs)
        pose_feature = (rots[:, 1:] - torch.eye(3, device=self.dev)).reshape(T, -1)
        v_posed = v_shaped + torch.einsum("bp,vcp->bvc", pose_feature, self.lm_posedirs)
        per_vertex = torch.einsum("vj,bjrc->bvrc", self.lm_weights, transforms)
        landmarks = (per_vertex[..., :3] @ v_posed[..., None])[..., 0] + per_vertex[..., 3]
        joints = posed + transl[:, None]
        return openpose18_from_body(landmarks + transl[:, None], joints), joints

    def project(self, pts: torch.Tensor) -> torch.Tensor:
        z = pts[..., 2].clamp_min(1e-3)
        c = self.cam
        return torch.stack([c.fx * pts[..., 0] / z + c.cx, c.fy * pts[..., 1] / z + c.cy], -1)

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
        model = pts[..., :2].cpu().numpy().astype(np.float64)  # (K,18,2) orthographic view
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
        """Per-frame facing rotation and translation from the keypoints alone."""
        T = kp.shape[0]
        conf = kp[..., 2] > 0
        rot0 = self.heading_guess(kp).to(self.dev)
        betas0 = torch.zeros(1, self.body.num_betas, device=self.dev)
        pose0 = self.mean_pose.expand(T, -1, -1)
        with torch.no_grad():
            pts, _ = self.keypoints_3d(rot0, pose0, betas0, torch.zeros(T, 3, device=self.dev))
        pts = pts.cpu().numpy()
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
    def energy(self, params, target, conf, stage: int):
        rot0, delta, pose, betas, ab, logz, z0 = params
        rot = rot0 @ axis_angle_to_matrix(delta)
        z = z0 * torch.exp(logz)
        f = 0.5 * (self.cam.fx + self.cam.fy)
        transl = torch.stack([ab[:, 0] * 100.0 / f * z, ab[:, 1] * 100.0 / f * z, z], -1)
        pts, joints = self.keypoints_3d(rot, pose, betas, transl)
        proj = self.project(pts)
        res = ((proj - target) / self.pix_scale).pow(2).sum(-1)
        sig2 = self.cfg.robust_sigma_px**2
        robust = sig2 * res / (res + sig2)
        w = conf * self.kp_weight
        if stage == 1:  # torso first: shoulders, hips, neck carry the orientation
            w = w * torch.tensor([0.3, 1, 1, 0.3, 0.1, 1, 0.3, 0.1, 1, 0.3, 0.1, 1, 0.3, 0.1, 0.2, 0.2, 0.2, 0.2],
                                 device=self.dev)
        e_proj = (w * robust).sum()
        e_pose = self.cfg.pose_weight * 1000.0 * pose_prior(pose, self.mean_pose, self.stiffness, self.rom).sum()
        e_betas = self.cfg.betas_weight * 1000.0 * betas.pow(2).sum() * pose.shape[0]
        e_smooth = torch.zeros((), device=self.dev)
        if pose.shape[0] >= 3:
            # joint acceleration converted to pixels (of a 512 px image) at each frame's distance
            px_per_m = (0.5 * (self.cam.fx + self.cam.fy) / joints[..., 2].detach().clamp_min(1e-3)) / self.pix_scale
            acc = (joints[2:] - 2 * joints[1:-1] + joints[:-2]) * px_per_m[1:-1, :, None]
            e_smooth = self.cfg.smooth_weight * acc.pow(2).sum()
        return e_proj + e_pose + e_betas + e_smooth, rot, transl

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
        total = self.cfg.stage1_iterations + self.cfg.iterations
        step = 0
        lr = self.cfg.lr
        groups1 = [{"params": [delta], "lr": lr}, {"params": [ab], "lr": lr * 0.5}, {"params": [logz], "lr": lr * 0.1}]
        groups2 = groups1 + [{"params": [pose], "lr": lr}] + ([{"params": [betas], "lr": lr}] if self.cfg.fit_betas else [])
        for stage, iters, groups in ((1, self.cfg.stage1_iterations, groups1), (2, self.cfg.iterations, groups2)):
            if iters <= 0:
                continue
            params = (rot0, delta, pose, betas, ab, logz, z0)
            opt = torch.optim.Adam([dict(g) for g in groups])
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1), eta_min=0.0)
            for _ in range(iters):
                opt.zero_grad(set_to_none=True)
                loss, _, _ = self.energy(params, target, conf, stage)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if progress is not None and (step % 20 == 0 or step == total):
                    progress(step, total)
        with torch.no_grad():
            _, rot, transl = self.energy((rot0, delta, pose, betas, ab, logz, z0), target, conf, 2)
        return rot.cpu(), pose.detach().cpu(), betas.detach().cpu(), transl.cpu()


def fit_keypoints(pose: PoseFrames, body: BodyModel, camera: Camera | None = None, fps: float = 30.0,
                  config: FitConfig | None = None, frame_names: list[str] | None = None,
                  progress: ProgressFn | None = None) -> Motion:
    """Fit one SMPL sequence (shared betas) to a tracked person's keypoints. Returns a `Motion`.

    `camera` defaults to HMR2's for the keypoints' canvas. A single frame works too (that is how
    the reference image is fitted): it gives pose, distance/position and body proportions.
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
    fitter = _Fitter(body, camera, config)
    threads = torch.get_num_threads()
    if torch.device(config.device).type == "cpu":
        # the fit is thousands of tiny ops: extra threads only add synchronisation (10x slower measured)
        torch.set_num_threads(1)
    try:
        rot, body_pose, betas, transl = fitter.run(kp, progress)
    finally:
        torch.set_num_threads(threads)
    global_orient = matrix_to_axis_angle(rot)
    present = pose.present if pose.present is not None else (kp[..., 2] > 0).any(1)
    valid = np.asarray(present, dtype=bool) & ((kp[..., 2] > 0).sum(1) >= 3)
    motion = Motion(global_orient.numpy(), body_pose.numpy(), betas.numpy(), transl.numpy(), camera, fps,
                    frame_names or [], valid)
    return interpolate_invalid(motion)  # frames without the person: slerp between the nearest seen ones


def fit_reference(pose: PoseFrames, body: BodyModel, camera: Camera | None = None,
                  config: FitConfig | None = None) -> Motion:
    """Fit the reference image's person (first frame of `pose`): a one-frame `Motion`."""
    if pose.num_frames != 1:
        pose = PoseFrames(pose.body[:1], pose.width, pose.height,
                          None if pose.hands is None else pose.hands[:1], None if pose.face is None else pose.face[:1])
    config = config or FitConfig(stage1_iterations=100, iterations=300)
    return fit_keypoints(pose, body, camera, fps=30.0, config=config)
