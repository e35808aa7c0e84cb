"""COCO-WholeBody-133 keypoints -> ComfyUI's POSE_KEYPOINT (comfyui_controlnet_aux's DWPose JSON).

Whole-body order: 0-16 COCO body, 17-22 feet (left big toe, left small toe, left heel, right big
toe, right small toe, right heel), 23-90 face (68), 91-111 left hand (21), 112-132 right hand (21).

POSE_KEYPOINT frame: {"people": [...], "canvas_width": W, "canvas_height": H}; each person holds
`pose_keypoints_2d` (OpenPose-18 body, neck = mid-shoulders), `face_keypoints_2d` (68),
`hand_left_keypoints_2d`, `hand_right_keypoints_2d` (21 each) as flat x, y, confidence lists in
image pixels, like controlnet_aux: points scoring at least the threshold get confidence 1.0, the
others (0, 0, 0). One addition that other readers ignore: `foot_keypoints_2d` (the 6 foot points,
BODY_25's foot order), which the fitter uses. controlnet_aux appends the two eyes to the face (70
points); this pack writes the 68 face points only (what `parse_pose_keypoint` reads).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# OpenPose-18 index -> COCO-17 index (-1: neck = the middle of the two shoulders)
OPENPOSE18_FROM_COCO = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
FEET = slice(17, 23)
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)
SCORE_THRESHOLD = 0.3


def _kept(points: np.ndarray, threshold: float) -> np.ndarray:
    """(N, 3) x, y, score -> x, y, 1 where score >= threshold, else 0, 0, 0."""
    out = np.zeros_like(points, dtype=np.float64)
    ok = (points[:, 2] >= threshold) & np.isfinite(points).all(-1)
    out[ok, :2] = points[ok, :2]
    out[ok, 2] = 1.0
    return out


def wholebody_to_openpose(points: np.ndarray, threshold: float = SCORE_THRESHOLD) -> dict[str, np.ndarray]:
    """One person's (133, 3) keypoints -> body (18, 3), feet (6, 3), face (68, 3), hands (2, 21, 3)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (133, 3):
        raise ValueError(f"expected COCO-WholeBody keypoints (133, 3), got {points.shape}")
    kept = _kept(points, threshold)
    body = np.zeros((18, 3))
    for op, coco in enumerate(OPENPOSE18_FROM_COCO):
        if coco >= 0:
            body[op] = kept[coco]
        elif kept[5, 2] > 0 and kept[6, 2] > 0:
            body[op] = [*(0.5 * (kept[5, :2] + kept[6, :2])), 1.0]
    return {"body": body, "feet": kept[FEET], "face": kept[FACE],
            "hands": np.stack([kept[LEFT_HAND], kept[RIGHT_HAND]])}


def person_dict(points: np.ndarray, threshold: float = SCORE_THRESHOLD) -> dict[str, list[float]]:
    """One person's (133, 3) keypoints as a POSE_KEYPOINT person dict."""
    parts = wholebody_to_openpose(points, threshold)
    return {
        "pose_keypoints_2d": parts["body"].reshape(-1).tolist(),
        "face_keypoints_2d": parts["face"].reshape(-1).tolist(),
        "hand_left_keypoints_2d": parts["hands"][0].reshape(-1).tolist(),
        "hand_right_keypoints_2d": parts["hands"][1].reshape(-1).tolist(),
        "foot_keypoints_2d": parts["feet"].reshape(-1).tolist(),
    }


def frame_dict(people: list[np.ndarray], width: int, height: int, threshold: float = SCORE_THRESHOLD) -> dict[str, Any]:
    """A POSE_KEYPOINT frame from the (133, 3) keypoints of its people."""
    return {"people": [person_dict(p, threshold) for p in people], "canvas_width": int(width),
            "canvas_height": int(height)}


def _foot_points(person: dict) -> np.ndarray | None:
    values = person.get("foot_keypoints_2d")
    if values is not None and len(values) == 18:
        return np.asarray(values, dtype=np.float64).reshape(6, 3)
    body = np.asarray(person.get("pose_keypoints_2d") or [], dtype=np.float64).reshape(-1)
    if body.size == 399:  # whole-body layout
        return body.reshape(133, 3)[FEET]
    if body.size == 75:  # BODY_25: feet are points 19-24 in the same order
        return body.reshape(25, 3)[19:25]
    return None


def feet_for_tracked(frames: list[dict] | dict, body: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Foot points (T, 6, 3) in pixels of the person `parse_pose_keypoint` tracked (its OpenPose-18
    `body` (T, 18, 3)), from `foot_keypoints_2d`, a whole-body or a BODY_25 body; None when no frame has any."""
    frames = [frames] if isinstance(frames, dict) else list(frames)
    feet = np.zeros((len(frames), 6, 3))
    found = False
    for t, frame in enumerate(frames):
        seen = body[t, :, 2] > 0
        if not seen.any():
            continue
        best, best_err = None, np.inf
        for person in frame.get("people") or []:
            pts = _foot_points(person)
            op = np.asarray(person.get("pose_keypoints_2d") or [], dtype=np.float64).reshape(-1)
            if pts is None or op.size < 54:
                continue
            xy = op.reshape(-1, 3)[:, :2]
            scale = np.array([width, height]) if np.nanmax(np.abs(xy)) <= 1.0 + 1e-6 else np.ones(2)
            # compare the nose / shoulders / hips, which every layout carries in its first points
            ref = body[t, seen, :2]
            cand = _body18(op.reshape(-1, 3))[seen, :2] * scale
            err = float(np.nanmean(np.abs(cand - ref)))
            if err < best_err:
                best, best_err = (pts, scale), err
        if best is not None and best_err < 2.0:
            pts, scale = best
            pts = np.where(np.isfinite(pts), pts, 0.0)
            pts[pts[:, 2] <= 0] = 0.0
            pts[:, :2] *= scale
            feet[t] = pts
            found = found or bool((pts[:, 2] > 0).any())
    return feet if found else None


def _body18(points: np.ndarray) -> np.ndarray:
    """Any supported layout's body points -> OpenPose-18 (for matching people only)."""
    if points.shape[0] == 18:
        return points
    if points.shape[0] == 25:
        return points[[0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]
    out = np.zeros((18, 3))
    for op, coco in enumerate(OPENPOSE18_FROM_COCO):
        if coco >= 0:
            out[op] = points[coco]
        else:
            out[op] = [*(0.5 * (points[5, :2] + points[6, :2])), min(points[5, 2], points[6, 2])]
    return out


def parse_with_feet(data: Any, person: str | int = "largest"):
    """`body.keypoints.parse_pose_keypoint` of POSE_KEYPOINT frames, and the foot points (T, 6, 3) of
    the person it tracked (None when the input has none): what the whole-body fit takes."""
    from ..body.keypoints import parse_pose_keypoint

    frames = [data] if isinstance(data, dict) else list(data)
    pose = parse_pose_keypoint(frames, person=person)
    return pose, feet_for_tracked(frames, pose.body, pose.width, pose.height)
