"""2D keypoints: ComfyUI's POSE_KEYPOINT (OpenPose JSON) parsing, person tracking, body keypoints.

Internal layout: OpenPose-18 (what Champ's DWPose guidance and ComfyUI's pose nodes draw):
0 nose, 1 neck, 2 R shoulder, 3 R elbow, 4 R wrist, 5 L shoulder, 6 L elbow, 7 L wrist, 8 R hip,
9 R knee, 10 R ankle, 11 L hip, 12 L knee, 13 L ankle, 14 R eye, 15 L eye, 16 R ear, 17 L ear.
Each point is (x, y, confidence) in pixels of the canvas; confidence 0 means missing.
Accepted inputs per person (`pose_keypoints_2d` length): OpenPose-18 (54 values), COCO-17 (51),
BODY_25 (75) and DWPose/COCO-WholeBody-133 (399). Coordinates all inside [0, 1] are taken as
normalised to the canvas and scaled to pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..camera import Camera
from .model import LANDMARK_VERTICES

OPENPOSE18_NAMES: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# OpenPose-18 index -> SMPL joint index (-1: neck = mid-shoulders, -2: a surface landmark)
OPENPOSE18_FROM_SMPL = (-2, -1, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, -2, -2, -2, -2)
OPENPOSE18_LANDMARKS = {0: "nose", 14: "right_eye", 15: "left_eye", 16: "right_ear", 17: "left_ear"}

# COCO-17 order -> OpenPose-18 index
_COCO17_TO_OP18 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
# BODY_25 index -> OpenPose-18 index (8 = mid-hip and 19..24 = feet are dropped)
_BODY25_TO_OP18 = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 9: 8, 10: 9, 11: 10, 12: 11, 13: 12, 14: 13,
                   15: 14, 16: 15, 17: 16, 18: 17}
LAYOUTS = {54: "openpose18", 51: "coco17", 75: "body25", 399: "dwpose133"}


class KeypointError(ValueError):
    """Keypoints that cannot be used (unknown layout, empty, no person, NaN only, ...)."""


@dataclass
class PoseFrames:
    """One person's 2D keypoints over T frames, in canvas pixels; confidence 0 = missing."""

    body: np.ndarray  # (T, 18, 3)
    width: int
    height: int
    hands: np.ndarray | None = None  # (T, 2, 21, 3): left, right
    face: np.ndarray | None = None  # (T, 68, 3)
    present: np.ndarray | None = None  # (T,) bool: the tracked person was found in that frame

    def __post_init__(self) -> None:
        self.body = np.asarray(self.body, dtype=np.float64)
        if self.body.ndim != 3 or self.body.shape[1:] != (18, 3):
            raise KeypointError(f"body keypoints must be (T, 18, 3) OpenPose-18, got {self.body.shape}")
        if self.present is None:
            self.present = (self.body[..., 2] > 0).any(axis=1)

    @property
    def num_frames(self) -> int:
        return int(self.body.shape[0])


def _person_body(values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise KeypointError(f"pose_keypoints_2d must be a flat list of numbers (x, y, confidence), got {values!r:.60}") from exc
    layout = LAYOUTS.get(arr.size)
    if layout is None:
        raise KeypointError(
            f"unknown keypoint layout with {arr.size} values per person; expected OpenPose-18 (54), COCO-17 (51), "
            "BODY_25 (75) or DWPose-133 (399) values of x, y, confidence"
        )
    pts = arr.reshape(-1, 3)
    out = np.zeros((18, 3))
    if layout == "openpose18":
        out[:] = pts
    elif layout in ("coco17", "dwpose133"):
        out[list(_COCO17_TO_OP18)] = pts[:17]
        sh = pts[[5, 6]]
        if (sh[:, 2] > 0).all():
            out[1] = [*(sh[:, :2].mean(0)), sh[:, 2].min()]
    else:
        for src, dst in _BODY25_TO_OP18.items():
            out[dst] = pts[src]
    return out


def _clean(points: np.ndarray) -> np.ndarray:
    points = np.array(points, dtype=np.float64)
    bad = ~np.isfinite(points).all(-1) | (points[..., 2] <= 0) | ((points[..., 0] == -1) & (points[..., 1] == -1))
    points[bad] = 0.0
    return points


def _bbox(body: np.ndarray) -> np.ndarray | None:
    ok = body[:, 2] > 0
    if ok.sum() < 2:
        return None
    xy = body[ok, :2]
    return np.array([*xy.min(0), *xy.max(0)])


def _hand_face(person: dict, key: str, count: int) -> np.ndarray | None:
    values = person.get(key)
    try:
        arr = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise KeypointError(f"{key} must be a flat list of numbers (x, y, confidence)") from exc
    if arr.size == 0 or arr.size != count * 3:
        return None
    return _clean(arr.reshape(count, 3))


def _canvas_size(frame: dict, index: int) -> tuple[int, int] | None:
    w, h = frame.get("canvas_width"), frame.get("canvas_height")
    if w is None and h is None:
        return None
    try:
        w, h = float(w), float(h)
    except (TypeError, ValueError):
        raise KeypointError(f"frame {index}: canvas_width/canvas_height must be numbers, got {w!r} x {h!r}") from None
    if not (np.isfinite(w) and np.isfinite(h) and w >= 1 and h >= 1):
        raise KeypointError(f"frame {index}: canvas size {w:g} x {h:g} is not a positive image size")
    return int(round(w)), int(round(h))


def _canvas_transform(size: tuple[int, int], target: tuple[int, int], normalised: bool):
    """(scale (2,), offset (2,)) taking a frame's coordinates to pixels of the `target` canvas."""
    (w, h), (tw, th) = size, target
    fit = min(tw / w, th / h)
    unit = np.array([w, h], dtype=np.float64) if normalised else np.ones(2)
    offset = np.array([(tw - w * fit) / 2, (th - h * fit) / 2])
    return unit * fit, offset


def _place(points: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    out = np.array(points, dtype=np.float64)
    ok = out[..., 2] > 0
    out[..., :2] = np.where(ok[..., None], out[..., :2] * scale + offset, 0.0)
    return out


def parse_pose_keypoint(data: Any, person: str | int = "largest") -> PoseFrames:
    """ComfyUI POSE_KEYPOINT (a list of per-frame OpenPose dicts, or one dict) -> one tracked person.

    `person`: "largest" (largest box in the first frame with anybody) or an index into that frame's
    people; later frames follow the same person by box position. Frames where they are missing have
    confidence 0 everywhere and `present` False. Every frame is read with its own canvas size; the
    result is in the first frame's canvas (other sizes scaled uniformly and centred into it).
    """
    if data is not None and not isinstance(data, (dict, list, tuple)):
        raise KeypointError(f"POSE_KEYPOINT must be a list of OpenPose frame dicts (or one dict), got {type(data).__name__}")
    frames = [data] if isinstance(data, dict) else list(data or [])
    if not frames:
        raise KeypointError("no keypoint frames given (empty POSE_KEYPOINT list)")
    sizes: list[tuple[int, int] | None] = []
    people_per_frame: list[list[dict]] = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise KeypointError(f"frame {i}: expected an OpenPose dict with 'people', got {type(frame).__name__}")
        sizes.append(_canvas_size(frame, i))
        people = []
        for p in frame.get("people") or []:
            if not isinstance(p, dict):
                raise KeypointError(f"frame {i}: a person entry is {type(p).__name__}, expected a dict with "
                                    "'pose_keypoints_2d'")
            body = _clean(_person_body(p.get("pose_keypoints_2d")))
            people.append({"body": body, "raw": p})
        people_per_frame.append(people)
    known = [s for s in sizes if s is not None]
    if not known:
        raise KeypointError("POSE_KEYPOINT frames carry no canvas_width/canvas_height; give the image size")
    # a frame without a canvas size uses the nearest earlier one (the first known one before it)
    filled, last = [], known[0]
    for size in sizes:
        last = size or last
        filled.append(last)
    width, height = filled[0]
    # normalised coordinates -> pixels
    all_xy = [pp["body"][pp["body"][:, 2] > 0, :2] for people in people_per_frame for pp in people]
    all_xy = np.concatenate(all_xy) if all_xy else np.zeros((0, 2))
    if len(all_xy) == 0:
        raise KeypointError("no person with any valid keypoint in any frame (all missing, zero confidence or NaN)")
    normalised = bool(all_xy.max() <= 1.0 + 1e-6 and max(width, height) > 2)
    # Each frame is read with its own canvas, then placed in the first frame's canvas (uniform scale,
    # centred), so frames of other sizes are neither squeezed nor moved off the canvas.
    transforms = [_canvas_transform(size, (width, height), normalised) for size in filled]
    for people, (scale, offset) in zip(people_per_frame, transforms):
        for pp in people:
            pp["body"] = _place(pp["body"], scale, offset)

    T = len(frames)
    body = np.zeros((T, 18, 3))
    hands = np.zeros((T, 2, 21, 3))
    face = np.zeros((T, 68, 3))
    has_hands = has_face = False
    present = np.zeros(T, dtype=bool)
    last_box = None
    for t, people in enumerate(people_per_frame):
        boxes = [_bbox(pp["body"]) for pp in people]
        candidates = [i for i, b in enumerate(boxes) if b is not None]
        if not candidates:
            continue
        if last_box is None:
            if person == "largest":
                chosen = max(candidates, key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
            else:
                idx = int(person)
                if idx < 0 or idx >= len(people):
                    raise KeypointError(f"person index {idx} out of range: frame {t} has {len(people)} people")
                if boxes[idx] is None:
                    raise KeypointError(f"person {idx} has fewer than 2 valid keypoints in frame {t}")
                chosen = idx
        else:
            centre = 0.5 * (last_box[:2] + last_box[2:])
            diag = max(float(np.linalg.norm(last_box[2:] - last_box[:2])), 1.0)
            dists = {i: float(np.linalg.norm(0.5 * (boxes[i][:2] + boxes[i][2:]) - centre)) / diag for i in candidates}
            chosen = min(dists, key=dists.get)
            if dists[chosen] > 1.0:  # nobody close to where the tracked person was: treat as missing
                continue
        pp = people[chosen]
        scale, offset = transforms[t]
        body[t] = pp["body"]
        last_box = boxes[chosen]  # in the input's own units, like the other boxes
        present[t] = True
        raw = pp["raw"]
        for k, key in enumerate(("hand_left_keypoints_2d", "hand_right_keypoints_2d")):
            h = _hand_face(raw, key, 21)
            if h is not None:
                hands[t, k] = _place(h, scale, offset)
                has_hands = True
        f = _hand_face(raw, "face_keypoints_2d", 68)
        if f is not None:
            face[t] = _place(f, scale, offset)
            has_face = True
        arr = np.asarray(raw.get("pose_keypoints_2d"), dtype=np.float64).reshape(-1)
        if arr.size == 399:  # whole-body layout: face and hands inside the body array
            whole = _place(_clean(arr.reshape(133, 3)), scale, offset)
            face[t], hands[t, 0], hands[t, 1] = whole[23:91], whole[91:112], whole[112:133]
            has_face = has_hands = True
    if not present.any():
        raise KeypointError("no person with at least two valid keypoints in any frame")
    return PoseFrames(body=body, width=width, height=height, hands=hands if has_hands else None,
                      face=face if has_face else None, present=present)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KeypointError(f"{path} is not valid JSON keypoints ({exc}); give the POSE_KEYPOINT / OpenPose "
                            "JSON a pose node wrote") from exc


def load_pose_keypoints(path: str | Path, person: str | int = "largest") -> PoseFrames:
    """POSE_KEYPOINT JSON from a file (a list of frames or one frame), or a folder of per-frame JSONs."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise KeypointError(f"{path} holds no .json keypoint files")
        data = [_read_json(f) for f in files]
    elif path.is_file():
        data = _read_json(path)
    else:
        raise KeypointError(f"keypoint file {path} does not exist")
    return parse_pose_keypoint(data, person=person)


def pose_frames_to_pose_keypoint(pose: PoseFrames) -> list[dict]:
    """PoseFrames -> ComfyUI POSE_KEYPOINT (pixel coordinates, OpenPose-18 body)."""
    out = []
    for t in range(pose.num_frames):
        people = []
        if pose.present is None or pose.present[t]:
            p = {"pose_keypoints_2d": pose.body[t].reshape(-1).tolist()}
            if pose.hands is not None:
                p["hand_left_keypoints_2d"] = pose.hands[t, 0].reshape(-1).tolist()
                p["hand_right_keypoints_2d"] = pose.hands[t, 1].reshape(-1).tolist()
            if pose.face is not None:
                p["face_keypoints_2d"] = pose.face[t].reshape(-1).tolist()
            people.append(p)
        out.append({"people": people, "canvas_width": pose.width, "canvas_height": pose.height})
    return out


# ---------------------------------------------------------------------------------- from a body

OPENPOSE18_VERTEX_IDS = torch.tensor([LANDMARK_VERTICES[OPENPOSE18_LANDMARKS[i]] for i in (0, 14, 15, 16, 17)])


def _openpose18_gather(num_joints: int = 24) -> torch.Tensor:
    """Index of each OpenPose-18 point in the concatenation [SMPL joints (24) | neck | 5 landmarks]."""
    landmark = iter(range(num_joints + 1, num_joints + 6))
    with torch.inference_mode(False):  # a normal tensor even when imported inside inference mode (ComfyUI)
        return torch.tensor([smpl if smpl >= 0 else num_joints if smpl == -1 else next(landmark)
                             for smpl in OPENPOSE18_FROM_SMPL])


_OPENPOSE18_GATHER = _openpose18_gather()


def neck_point(joints: torch.Tensor) -> torch.Tensor:
    """OpenPose's neck (T, 1, 3) from SMPL joints (T, 24, 3): the middle of the two shoulders."""
    return 0.5 * (joints[:, 16:17] + joints[:, 17:18])


def openpose18_from_body(vertices: torch.Tensor | np.ndarray, joints: torch.Tensor | np.ndarray):
    """3D OpenPose-18 points (T, 18, 3) from posed SMPL vertices (T, V, 3) and joints (T, 24, 3).

    `vertices` may also be just the 5 landmark vertices (nose, R eye, L eye, R ear, L ear) as
    (T, 5, 3), which is what the fitter computes. Neck = the middle of the two shoulders.
    """
    is_np = isinstance(joints, np.ndarray)
    v = torch.as_tensor(vertices)
    j = torch.as_tensor(joints)
    landmarks = v if v.shape[1] == 5 else v[:, OPENPOSE18_VERTEX_IDS.to(v.device)]
    neck = neck_point(j)
    # one gather from [joints | neck | landmarks]: the fitter runs this every step (few ops, not 18)
    out = torch.cat([j, neck, landmarks.to(j.dtype)], dim=1)[:, _OPENPOSE18_GATHER.to(j.device)]
    return out.numpy() if is_np else out


def project(points, camera: Camera):
    """Perspective projection of camera-frame points (T, N, 3) to pixels (T, N, 2); numpy or torch."""
    if isinstance(points, np.ndarray):
        z = points[..., 2]
        return np.stack([camera.fx * points[..., 0] / z + camera.cx, camera.fy * points[..., 1] / z + camera.cy], -1)
    z = points[..., 2]
    return torch.stack([camera.fx * points[..., 0] / z + camera.cx, camera.fy * points[..., 1] / z + camera.cy], -1)


# Points closer to the camera plane than this (metres) are treated as not visible.
NEAR_PLANE = 0.05


def skeleton_keypoints(vertices: torch.Tensor | np.ndarray, joints: torch.Tensor | np.ndarray,
                       camera: Camera) -> np.ndarray:
    """OpenPose-18 keypoints (T, 18, 3) as x, y in pixels and confidence from a posed body.

    What the skeleton layer is drawn from. Points behind or too near the camera, and frames without
    a body (NaN vertices), get confidence 0 so the drawing leaves them out.
    """
    points = openpose18_from_body(torch.as_tensor(vertices).detach().cpu().double(),
                                  torch.as_tensor(joints).detach().cpu().double()).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = project(points, camera)
    visible = (points[..., 2] > NEAR_PLANE) & np.isfinite(xy).all(-1)
    return np.concatenate([np.where(visible[..., None], xy, 0.0), visible[..., None].astype(np.float64)], axis=-1)
