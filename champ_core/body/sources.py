"""Motion sources: AMASS files, the reference implementation's SMPL results, built-in clips.

- AMASS npz (`poses` (T,156|165|72), `trans` (T,3), `betas`, `mocap_framerate` or
  `mocap_frame_rate`): z-up world frame, resampled to a target fps (slerp for rotations, linear for
  translation), placed in front of the default camera (`motions.place_world_motion`). SMPL-H/X
  files' first 21 body joints are used; SMPL's two hand joints are set to zero.
- The reference implementation's per-frame HMR2 results (`smpl_results/<frame>.npy`: a pickled dict
  with `smpls` {global_orient (n,1,3,3), body_pose (n,23,3,3), betas (n,10)}, `cam_t`, `render_res`
  [W, H], `scaled_focal_length`) and its `smpls_group.npz` (`smpl` + `camera`). Both are read with
  the restricted unpickler. `transl` = cam_t (HMR2 poses the body without translation, then adds
  cam_t). The smoothed group file written by the reference's Blender script has cam_t's y negated:
  pass `negate_camera_y=True` for such files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..camera import Camera
from .model import BodyModel, axis_angle_to_matrix, matrix_to_axis_angle
from .motion import Motion, read_npz
from .motions import Z_UP_TO_CAMERA, MotionSourceError, default_camera, place_world_motion
from .safe_pickle import PickleFormatError, UnsafePickleError, safe_load_file


def _slerp_resample(aa: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Resample axis-angle rotations (T,J,3) along time with spherical interpolation."""
    T = aa.shape[0]
    n_out = max(1, int(np.floor((T - 1) * dst_fps / src_fps)) + 1)
    pos = np.arange(n_out) * src_fps / dst_fps
    i0 = np.clip(np.floor(pos).astype(int), 0, T - 1)
    i1 = np.clip(i0 + 1, 0, T - 1)
    w = torch.as_tensor((pos - i0)[:, None, None], dtype=torch.float64)
    r = axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float64))
    r0, r1 = r[i0], r[i1]
    delta = matrix_to_axis_angle(r0.transpose(-1, -2) @ r1)
    out = r0 @ axis_angle_to_matrix(delta * w)
    return matrix_to_axis_angle(out).numpy()


def _linear_resample(x: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    T = x.shape[0]
    n_out = max(1, int(np.floor((T - 1) * dst_fps / src_fps)) + 1)
    pos = np.arange(n_out) * src_fps / dst_fps
    return np.stack([np.interp(pos, np.arange(T), x[:, k]) for k in range(x.shape[1])], -1)


def load_amass(path: str | Path, body: BodyModel, fps: float = 30.0, camera: Camera | None = None,
               face_camera: bool = True, max_frames: int | None = None) -> Motion:
    """An AMASS npz as a camera-frame Motion at `fps` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise MotionSourceError(f"AMASS file {path} does not exist")
    data = read_npz(path, MotionSourceError, "an AMASS motion")
    if "poses" not in data or "trans" not in data:
        raise MotionSourceError(f"{path} is not an AMASS motion file (needs 'poses' and 'trans')")
    try:
        src_fps = float(np.asarray(data.get("mocap_framerate", data.get("mocap_frame_rate", 120.0))).reshape(()))
        poses = np.asarray(data["poses"], dtype=np.float64)
        trans = np.asarray(data["trans"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MotionSourceError(f"{path}: poses, trans and the frame rate must be numbers ({exc})") from exc
    if not np.isfinite(src_fps) or src_fps <= 0:
        raise MotionSourceError(f"{path}: the frame rate {src_fps} is not a positive number")
    if poses.ndim != 2 or poses.shape[1] < 66 or len(poses) == 0:
        raise MotionSourceError(f"{path}: 'poses' has shape {poses.shape}, expected (T, >=66)")
    if trans.shape != (len(poses), 3):
        raise MotionSourceError(f"{path}: 'trans' has shape {trans.shape}, expected ({len(poses)}, 3) like 'poses'")
    for name, array in (("poses", poses), ("trans", trans)):
        if not np.isfinite(array).all():
            raise MotionSourceError(f"{path}: '{name}' holds NaN or infinite values; the file is damaged")
    betas = np.zeros((1, 10))
    if "betas" in data:
        try:
            b = np.asarray(data["betas"], dtype=np.float64).reshape(-1)[:10]
        except (TypeError, ValueError) as exc:
            raise MotionSourceError(f"{path}: 'betas' must be numbers ({exc})") from exc
        betas[0, : len(b)] = b
    aa = np.zeros((len(poses), 24, 3))
    aa[:, :22] = poses[:, :66].reshape(-1, 22, 3)
    if poses.shape[1] == 72:  # a plain SMPL sequence: hands included
        aa[:, 22:] = poses[:, 66:72].reshape(-1, 2, 3)
    aa = _slerp_resample(aa, src_fps, fps)
    trans = _linear_resample(trans, src_fps, fps)
    if max_frames:
        aa, trans = aa[:max_frames], trans[:max_frames]
    return place_world_motion(aa[:, 0], aa[:, 1:], betas, trans, body, Z_UP_TO_CAMERA, camera, fps,
                              face_camera=face_camera)


def _first_person(x: Any, index: int = 0) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    return arr[index] if arr.ndim >= 1 and arr.shape[0] > index else arr


def _rotmats_to_aa(m: np.ndarray, joints: int) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64).reshape(joints, 3, 3)
    return matrix_to_axis_angle(torch.as_tensor(m)).numpy()


def _frame_key(path: Path):
    return (0, int(path.stem), "") if re.fullmatch(r"\d+", path.stem) else (1, 0, path.stem)


def load_hmr2_results(folder_or_files, fps: float = 30.0, person: int = 0) -> Motion:
    """The reference implementation's per-frame `smpl_results/*.npy` files as a Motion.

    Frames without a person are interpolated from their neighbours and flagged invalid.
    """
    if isinstance(folder_or_files, (str, Path)) and Path(folder_or_files).is_dir():
        files = sorted((p for p in Path(folder_or_files).glob("*.npy")), key=_frame_key)
    elif isinstance(folder_or_files, (str, Path)):
        files = [Path(folder_or_files)]
    else:
        files = [Path(p) for p in folder_or_files]
    if not files:
        raise MotionSourceError(f"no .npy SMPL result files in {folder_or_files}")
    rows, valid, width, height, focal = [], [], None, None, None
    for f in files:
        try:
            row, found = _hmr2_row(f, person)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            if isinstance(exc, (MotionSourceError, UnsafePickleError, PickleFormatError)):
                raise
            raise MotionSourceError(f"{f}: not a usable HMR2 result ({type(exc).__name__}: {exc}); expected "
                                    "the reference implementation's smpl_results/<frame>.npy") from exc
        width = width or found[0]
        height = height or found[1]
        focal = focal or found[2]
        rows.append(row)
        valid.append(row is not None)
    return _assemble(rows, valid, width, height, focal, fps, [f.stem for f in files])


def _hmr2_row(f: Path, person: int):
    """One result file -> ((go, bp, betas, cam_t) or None, (width, height, focal) found in it)."""
    width = height = focal = None
    obj = safe_load_file(str(f))
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict) or "smpls" not in obj:
        raise MotionSourceError(f"{f} is not an HMR2 result file of the reference implementation (no 'smpls')")
    smpls, cam_t = obj["smpls"], obj.get("cam_t")
    if width is None and obj.get("render_res") is not None:
        width, height = (int(v) for v in np.asarray(obj["render_res"]).reshape(-1)[:2])
    if focal is None and obj.get("scaled_focal_length") is not None:
        focal = float(np.asarray(obj["scaled_focal_length"]).reshape(-1)[0])
    n = 0 if cam_t is None else len(cam_t)
    if n <= person:
        return None, (width, height, focal)
    go = _rotmats_to_aa(_first_person(smpls["global_orient"], person), 1)[0]
    bp = _rotmats_to_aa(_first_person(smpls["body_pose"], person), 23)
    betas = _first_person(smpls["betas"], person).reshape(-1)[:10]
    row = (go, bp, betas, np.asarray(cam_t[person], dtype=np.float64).reshape(3))
    if not all(np.isfinite(a).all() for a in row):
        raise MotionSourceError(f"{f}: the SMPL parameters hold NaN or infinite values")
    return row, (width, height, focal)


def _assemble(rows, valid, width, height, focal, fps, names) -> Motion:
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        raise MotionSourceError("no frame holds a person")
    idx = np.where(valid)[0]
    filled = []
    for t in range(len(rows)):
        if rows[t] is not None:
            filled.append(rows[t])
        else:  # interpolate between the nearest valid neighbours
            before, after = idx[idx < t], idx[idx > t]
            a = rows[before[-1]] if len(before) else rows[after[0]]
            b = rows[after[0]] if len(after) else a
            w = 0.0 if not (len(before) and len(after)) else (t - before[-1]) / (after[0] - before[-1])
            ra = axis_angle_to_matrix(torch.as_tensor(np.concatenate([a[0][None], a[1]])))
            rb = axis_angle_to_matrix(torch.as_tensor(np.concatenate([b[0][None], b[1]])))
            d = matrix_to_axis_angle(ra.transpose(-1, -2) @ rb) * w
            r = matrix_to_axis_angle(ra @ axis_angle_to_matrix(d)).numpy()
            filled.append((r[0], r[1:], a[2] * (1 - w) + b[2] * w, a[3] * (1 - w) + b[3] * w))
    go = np.stack([r[0] for r in filled])
    bp = np.stack([r[1] for r in filled])
    betas = np.stack([r[2] for r in filled])
    transl = np.stack([r[3] for r in filled])
    if width is None:
        width = height = 512
    camera = Camera.centred(focal, width, height) if focal else Camera.hmr2_default(width, height)
    return Motion(go, bp, betas, transl, camera, fps, list(names), valid)


def load_smpls_group(path: str | Path, fps: float = 30.0, width: int | None = None, height: int | None = None,
                     focal: float | None = None, negate_camera_y: bool = False, frame_names=None) -> Motion:
    """The reference implementation's `smpls_group.npz` (`smpl` param dicts + `camera` cam_t).

    The file holds no focal length or image size: give them, or HMR2's default focal for the
    given size is used (512 x 512 when no size is given).
    """
    path = Path(path)
    if not path.is_file():
        raise MotionSourceError(f"{path} does not exist")
    data = safe_load_file(str(path))
    if not isinstance(data, dict) or "smpl" not in data or "camera" not in data:
        raise MotionSourceError(f"{path} is not a smpls_group.npz (needs 'smpl' and 'camera')")
    try:
        smpl, camera = data["smpl"], data["camera"]
        if isinstance(smpl, np.ndarray) and smpl.dtype == object:
            smpl = smpl.item() if smpl.shape == () else list(smpl)
        parts = smpl if isinstance(smpl, list) else [smpl]
        go = np.concatenate([np.asarray(p["global_orient"], dtype=np.float64).reshape(-1, 3, 3) for p in parts])
        bp = np.concatenate([np.asarray(p["body_pose"], dtype=np.float64).reshape(-1, 23, 3, 3) for p in parts])
        betas = np.concatenate([np.asarray(p["betas"], dtype=np.float64).reshape(-1, 10) for p in parts])
        cams = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in
                               (camera if isinstance(camera, (list, tuple)) or (isinstance(camera, np.ndarray)
                                                                               and camera.dtype == object) else [camera])])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MotionSourceError(f"{path}: not a usable smpls_group.npz ({type(exc).__name__}: {exc}); expected "
                                "'smpl' with global_orient (T,3,3), body_pose (T,23,3,3), betas (T,10) and "
                                "'camera' (T,3)") from exc
    T = min(len(go), len(bp), len(betas), len(cams))
    if T == 0:
        raise MotionSourceError(f"{path} holds no frames")
    if not all(np.isfinite(a[:T]).all() for a in (go, bp, betas, cams)):
        raise MotionSourceError(f"{path}: the SMPL parameters hold NaN or infinite values; the file is damaged")
    if negate_camera_y:
        cams = cams * np.array([1.0, -1.0, 1.0])
    aa_go = matrix_to_axis_angle(torch.as_tensor(go[:T])).numpy()
    aa_bp = matrix_to_axis_angle(torch.as_tensor(bp[:T])).numpy()
    width = width or 512
    height = height or width
    cam = Camera.centred(focal, width, height) if focal else Camera.hmr2_default(width, height)
    return Motion(aa_go, aa_bp, betas[:T], cams[:T], cam, fps, list(frame_names or [])[:T] or [])


def builtin_or_file(spec: str, body: BodyModel, fps: float = 30.0, seconds: float = 4.0,
                    camera: Camera | None = None) -> Motion:
    """A motion from a name (built-in clip), a champ motion npz, an AMASS npz or a results folder."""
    from .motions import BUILTIN_MOTIONS, builtin_motion

    if spec in BUILTIN_MOTIONS:
        return builtin_motion(spec, body, seconds=seconds, fps=fps, camera=camera or default_camera())
    path = Path(spec)
    if path.is_dir():
        return load_hmr2_results(path, fps=fps)
    if path.suffix == ".npz" and path.is_file():
        keys = set(read_npz(path, MotionSourceError, "a motion"))
        if "global_orient" in keys and "fx" in keys:
            return Motion.load(path)
        if "poses" in keys:
            return load_amass(path, body, fps=fps, camera=camera)
    raise MotionSourceError(
        f"cannot read motion '{spec}': give a built-in name ({', '.join(BUILTIN_MOTIONS)}), a champ motion .npz, "
        "an AMASS .npz or a folder of the reference implementation's smpl_results/*.npy"
    )
