"""`Motion`: an SMPL parameter sequence in a camera frame, with the camera that views it.

Conventions (the same as HMR2's results, which the reference implementation uses):
- `global_orient` (T,3) and `body_pose` (T,23,3) are axis-angle; `betas` (T or 1, 10);
- `transl` (T,3) is added to the posed body, whose root rotation turns it about the pelvis joint;
- everything is in the OpenCV camera frame of `camera` (x right, y down, z forward, metres): an
  upright person facing the camera has global_orient = (pi, 0, 0);
- `valid[t]` is False where the frame had no observation and was interpolated.

Saved as a plain npz (no pickles): the arrays, fx fy cx cy width height, fps and frame_names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..camera import Camera
from .model import BodyModel, BodyOutput


class MotionError(ValueError):
    """A motion file or array set that is not a valid SMPL motion."""


@dataclass
class Motion:
    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    camera: Camera
    fps: float = 30.0
    frame_names: list[str] = field(default_factory=list)
    valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.global_orient = np.asarray(self.global_orient, dtype=np.float32).reshape(-1, 3)
        T = self.global_orient.shape[0]
        if T == 0:
            raise MotionError("a motion needs at least one frame")
        self.body_pose = np.asarray(self.body_pose, dtype=np.float32).reshape(T, 23, 3)
        self.betas = np.asarray(self.betas, dtype=np.float32).reshape(-1, np.asarray(self.betas).shape[-1])
        if self.betas.shape[0] not in (1, T):
            raise MotionError(f"betas must have 1 or {T} rows, got {self.betas.shape[0]}")
        self.transl = np.asarray(self.transl, dtype=np.float32).reshape(T, 3)
        if not self.frame_names:
            self.frame_names = [f"{i + 1:04d}" for i in range(T)]
        if len(self.frame_names) != T:
            raise MotionError(f"{len(self.frame_names)} frame names for {T} frames")
        self.valid = np.ones(T, dtype=bool) if self.valid is None else np.asarray(self.valid, dtype=bool).reshape(T)
        for name in ("global_orient", "body_pose", "betas", "transl"):
            if not np.isfinite(getattr(self, name)).all():
                raise MotionError(f"motion {name} holds NaN or infinite values")
        if self.fps <= 0:
            raise MotionError(f"fps must be positive, got {self.fps}")

    @property
    def num_frames(self) -> int:
        return int(self.global_orient.shape[0])

    def betas_per_frame(self) -> np.ndarray:
        return np.broadcast_to(self.betas, (self.num_frames, self.betas.shape[1])).copy()

    def slice(self, start: int, stop: int | None = None) -> Motion:
        s = slice(start, stop)
        betas = self.betas if self.betas.shape[0] == 1 else self.betas[s]
        return replace(self, global_orient=self.global_orient[s], body_pose=self.body_pose[s], betas=betas,
                       transl=self.transl[s], frame_names=self.frame_names[s], valid=self.valid[s])

    def pose(self, body: BodyModel, batch: int = 256) -> BodyOutput:
        """Posed vertices and joints (torch, on the model's device), in the camera frame."""
        dev, dt = body.v_template.device, body.v_template.dtype
        outs = []
        betas = self.betas_per_frame()[:, : body.num_betas]
        with torch.no_grad():
            for s in range(0, self.num_frames, batch):
                go, bp, be, tr = (torch.as_tensor(a[s:s + batch], device=dev, dtype=dt)
                                  for a in (self.global_orient, self.body_pose, betas, self.transl))
                outs.append(body(go, bp, be, tr))
        return BodyOutput(torch.cat([o.vertices for o in outs]), torch.cat([o.joints for o in outs]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        cam = self.camera
        np.savez(tmp, global_orient=self.global_orient, body_pose=self.body_pose, betas=self.betas,
                 transl=self.transl, valid=self.valid, fps=np.float64(self.fps),
                 frame_names=np.array(self.frame_names, dtype=str), fx=cam.fx, fy=cam.fy, cx=cam.cx, cy=cam.cy,
                 width=cam.width, height=cam.height, format=np.array("champ-motion/1"))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Motion:
        path = Path(path)
        if not path.is_file():
            raise MotionError(f"motion file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                d = {k: data[k] for k in data.files}
        except (ValueError, OSError) as exc:
            raise MotionError(f"{path} is not a motion npz ({exc})") from exc
        missing = [k for k in ("global_orient", "body_pose", "betas", "transl", "fx", "fy", "cx", "cy", "width", "height")
                   if k not in d]
        if missing:
            raise MotionError(f"{path} is not a champ motion file: missing {', '.join(missing)}")
        cam = Camera(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]), int(d["width"]), int(d["height"]))
        names = [str(n) for n in d["frame_names"]] if "frame_names" in d else []
        return cls(d["global_orient"], d["body_pose"], d["betas"], d["transl"], cam, float(d.get("fps", 30.0)),
                   names, d.get("valid"))


def interpolate_invalid(motion: Motion) -> Motion:
    """Fill frames with `valid == False` from their nearest valid neighbours: rotations by slerp,
    translation and betas linearly; before the first / after the last valid frame, hold it."""
    from .model import axis_angle_to_matrix, matrix_to_axis_angle

    valid = motion.valid
    if valid.all() or not valid.any():
        return motion
    idx = np.where(valid)[0]
    T = motion.num_frames
    frames = np.arange(T)
    after = np.searchsorted(idx, frames)  # first valid index >= t
    lo = idx[np.clip(after - 1, 0, len(idx) - 1)]
    hi = idx[np.clip(after, 0, len(idx) - 1)]
    lo = np.where(frames < idx[0], idx[0], lo)
    hi = np.where(frames > idx[-1], idx[-1], hi)
    w = np.where(hi > lo, (frames - lo) / np.maximum(hi - lo, 1), 0.0)
    aa = np.concatenate([motion.global_orient[:, None], motion.body_pose], 1).astype(np.float64)
    rot = axis_angle_to_matrix(torch.as_tensor(aa))
    r_lo, r_hi = rot[lo], rot[hi]
    delta = matrix_to_axis_angle(r_lo.transpose(-1, -2) @ r_hi) * torch.as_tensor(w)[:, None, None]
    filled = matrix_to_axis_angle(r_lo @ axis_angle_to_matrix(delta)).numpy()
    keep = valid[:, None, None]
    filled = np.where(keep, aa, filled)
    transl = np.where(valid[:, None], motion.transl, (1 - w[:, None]) * motion.transl[lo] + w[:, None] * motion.transl[hi])
    betas = motion.betas
    if betas.shape[0] == T:
        betas = np.where(valid[:, None], betas, (1 - w[:, None]) * betas[lo] + w[:, None] * betas[hi])
    return replace(motion, global_orient=filled[:, 0].astype(np.float32), body_pose=filled[:, 1:].astype(np.float32),
                   transl=transl.astype(np.float32), betas=betas.astype(np.float32))
