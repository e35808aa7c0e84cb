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


def _array(name: str, value, expected: str, *shape: int) -> np.ndarray:
    """`value` as float32 of `shape`, or a MotionError naming the array and the expected shape."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise MotionError(f"motion {name} is not numeric ({exc}); expected {expected} numbers") from exc
    try:
        return array.reshape(*shape)
    except ValueError:
        raise MotionError(f"motion {name} has shape {array.shape}; expected {expected}") from None


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
        self.global_orient = _array("global_orient", self.global_orient, "(T, 3)", -1, 3)
        T = self.global_orient.shape[0]
        if T == 0:
            raise MotionError("a motion needs at least one frame")
        self.body_pose = _array("body_pose", self.body_pose, f"({T}, 23, 3) or ({T}, 69)", T, 23, 3)
        betas = np.asarray(self.betas)
        if betas.ndim == 0 or betas.shape[-1] == 0:
            raise MotionError(f"motion betas have shape {betas.shape}; expected (1, 10) or ({T}, 10)")
        self.betas = _array("betas", betas, f"(1, N) or ({T}, N)", -1, betas.shape[-1])
        if self.betas.shape[0] not in (1, T):
            raise MotionError(f"betas must have 1 or {T} rows, got {self.betas.shape[0]}")
        self.transl = _array("transl", self.transl, f"({T}, 3)", T, 3)
        if not self.frame_names:
            self.frame_names = [f"{i + 1:04d}" for i in range(T)]
        if len(self.frame_names) != T:
            raise MotionError(f"{len(self.frame_names)} frame names for {T} frames")
        self.valid = np.ones(T, dtype=bool) if self.valid is None else _array("valid", self.valid, f"({T},)", T).astype(bool)
        for name in ("global_orient", "body_pose", "betas", "transl"):
            if not np.isfinite(getattr(self, name)).all():
                raise MotionError(f"motion {name} holds NaN or infinite values")
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise MotionError(f"fps must be a positive number, got {self.fps}")

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
        from ..atomic import atomic_file

        path = Path(path)
        if path.suffix != ".npz":
            raise MotionError(f"motion file {path} must end in .npz")
        cam = self.camera
        with atomic_file(path) as tmp:
            np.savez(tmp, global_orient=self.global_orient, body_pose=self.body_pose, betas=self.betas,
                     transl=self.transl, valid=self.valid, fps=np.float64(self.fps),
                     frame_names=np.array(self.frame_names, dtype=str), fx=cam.fx, fy=cam.fy, cx=cam.cx, cy=cam.cy,
                     width=cam.width, height=cam.height, format=np.array("champ-motion/1"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Motion:
        path = Path(path)
        if not path.is_file():
            raise MotionError(f"motion file {path} does not exist")
        d = read_npz(path, MotionError, "a motion")
        missing = [k for k in ("global_orient", "body_pose", "betas", "transl", "fx", "fy", "cx", "cy", "width", "height")
                   if k not in d]
        if missing:
            raise MotionError(f"{path} is not a champ motion file: missing {', '.join(missing)}; write motions "
                              "with Save Motion / Motion.save, or load AMASS files with the AMASS loader")
        try:
            intrinsics = [float(np.asarray(d[k]).reshape(())) for k in ("fx", "fy", "cx", "cy")]
            size = [int(np.asarray(d[k]).reshape(())) for k in ("width", "height")]
            fps = float(np.asarray(d["fps"]).reshape(())) if "fps" in d else 30.0
        except (TypeError, ValueError) as exc:
            raise MotionError(f"{path}: camera fx fy cx cy width height and fps must be single numbers ({exc})") from exc
        if not all(np.isfinite(intrinsics)) or min(intrinsics[:2]) <= 0 or min(size) < 1:
            raise MotionError(f"{path}: camera fx={intrinsics[0]:g} fy={intrinsics[1]:g} width={size[0]} "
                              f"height={size[1]} is not a usable camera (positive focal lengths and size needed)")
        cam = Camera(*intrinsics, *size)
        names = [str(n) for n in np.asarray(d["frame_names"]).reshape(-1)] if "frame_names" in d else []
        try:
            return cls(d["global_orient"], d["body_pose"], d["betas"], d["transl"], cam, fps, names, d.get("valid"))
        except MotionError as exc:
            raise MotionError(f"{path}: {exc}") from None


def read_npz(path: Path, error: type[Exception], what: str) -> dict[str, np.ndarray]:
    """Every array of a plain (pickle-free) npz, or `error` saying the file is damaged or not an npz."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise error(f"{path} holds a single array, not {what} npz")
            return {k: data[k] for k in data.files}
    except error:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise error(f"{path} is damaged or truncated ({exc}); copy or export the file again") from exc
    except ValueError as exc:  # a pickled object array, or not an npz at all
        raise error(f"{path} is not {what} npz of plain arrays ({exc})") from exc
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise error(f"{path} is not {what} npz ({exc})") from exc


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
