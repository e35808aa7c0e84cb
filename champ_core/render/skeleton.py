"""Skeleton guidance maps in the DWPose / OpenPose (ControlNet annotator) drawing convention.

Champ's `dwpose/` layer is the picture DWPose's annotator draws on black: body limbs as filled
ellipses 4 px wide in the 17 OpenPose limb colours, dimmed to 60 %, joints as dots of radius 4 in
full colour, hand bones as 2 px lines coloured round the hue circle with blue joint dots, and face
landmarks as white dots of radius 3. The released weights were trained on exactly that look, so
the primitives, sizes, colours, drawing order and integer truncations are reproduced here
(`tests/test_render_skeleton.py` checks it pixel for pixel against controlnet_aux's functions).

Keypoints are in pixels of the output image: body (T, 18, 3) (x, y, confidence) in OpenPose-18
order, optionally hands (T, 2, 21, 3) (left, right) and face (T, 68, 3); a leading people axis
(T, P, ...) is accepted too. A point is drawn when its confidence exceeds `threshold` (DWPose uses
0.3) and it is finite. As in the annotator, hand and face points lying in the first pixel row or
column (integer coordinate 0 or less) are not drawn.
"""

from __future__ import annotations

import math

import numpy as np

# OpenPose-18 keypoint order: nose, neck, r_shoulder, r_elbow, r_wrist, l_shoulder, l_elbow,
# l_wrist, r_hip, r_knee, r_ankle, l_hip, l_knee, l_ankle, r_eye, l_eye, r_ear, l_ear.
OPENPOSE18_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
# The 17 limbs the annotator draws, as pairs of OpenPose-18 indices, in drawing order.
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# Colour of limb i and of joint i (RGB as stored in the image).
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
LIMB_HALF_WIDTH = 4
JOINT_RADIUS = 4
LIMB_DIMMING = 0.6
# Hand bones: wrist (0) to each finger's four joints.
HAND_EDGES = tuple((0 if j == 0 else 4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4))
HAND_LINE_WIDTH = 2
HAND_JOINT_RADIUS = 4
HAND_JOINT_COLOR = (0, 0, 255)
FACE_RADIUS = 3
FACE_COLOR = (255, 255, 255)
DEFAULT_THRESHOLD = 0.3
# The annotator skips hand / face points whose integer pixel coordinate is not above this.
_EDGE_EPS = 0.01


class SkeletonInputError(ValueError):
    """Keypoint arrays of the wrong shape (the message names the array and the expected shape)."""


def _hue_color(hue: float) -> tuple[float, float, float]:
    """Fully saturated, full-value colour at `hue` in [0, 1) scaled to 0..255 (floats, like the annotator)."""
    sector = int(hue * 6.0)
    f = hue * 6.0 - sector
    rising, falling = f, 1.0 - f
    rgb = (
        (1.0, rising, 0.0), (falling, 1.0, 0.0), (0.0, 1.0, rising),
        (0.0, falling, 1.0), (rising, 0.0, 1.0), (1.0, 0.0, falling),
    )[sector % 6]  # fmt: skip
    return tuple(255.0 * c for c in rgb)


HAND_EDGE_COLORS = tuple(_hue_color(i / len(HAND_EDGES)) for i in range(len(HAND_EDGES)))


def _with_people_axis(array, name: str, points: int, frames: int | None, extra: tuple[int, ...] = ()):
    if array is None:
        return None
    a = np.asarray(array, dtype=np.float64)
    core = (*extra, points, 3)
    if a.ndim == len(core) + 1:
        a = a[:, None]
    if a.ndim != len(core) + 2 or a.shape[2:] != core:
        raise SkeletonInputError(
            f"{name} keypoints must be (T, {', '.join(map(str, core))}) or (T, P, {', '.join(map(str, core))}); got {a.shape}"
        )
    if frames is not None and a.shape[0] != frames:
        raise SkeletonInputError(f"{name} keypoints have {a.shape[0]} frames but the body has {frames}")
    return a


def _visible(points: np.ndarray, threshold: float) -> np.ndarray:
    return np.isfinite(points).all(-1) & (points[..., 2] > threshold)


def draw_skeleton(
    body,
    width: int,
    height: int,
    hands=None,
    face=None,
    threshold: float = DEFAULT_THRESHOLD,
) -> np.ndarray:
    """(T, H, W, 3) uint8 skeleton images on black. `body` may also be an object with `body`, `hands`
    and `face` attributes (e.g. the body package's PoseFrames); keypoints are in output pixels."""
    import cv2

    if hasattr(body, "body"):
        pose = body
        body, hands, face = pose.body, getattr(pose, "hands", None), getattr(pose, "face", None)
    body = _with_people_axis(body, "body", 18, None)
    frames = body.shape[0]
    hands = _with_people_axis(hands, "hands", 21, frames, extra=(2,))
    face = _with_people_axis(face, "face", 68, frames)
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise SkeletonInputError(f"canvas size must be positive; got {width}x{height}")

    out = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        canvas = out[t]
        people = body[t]
        visible = _visible(people, threshold)
        for limb, (a, b) in enumerate(BODY_LIMBS):
            for person, seen in zip(people, visible):
                if not (seen[a] and seen[b]):
                    continue
                xa, ya, xb, yb = person[a, 0], person[a, 1], person[b, 0], person[b, 1]
                centre = (int((xa + xb) / 2), int((ya + yb) / 2))
                length = math.hypot(ya - yb, xa - xb)
                angle = math.degrees(math.atan2(ya - yb, xa - xb))
                polygon = cv2.ellipse2Poly(centre, (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
                cv2.fillConvexPoly(canvas, polygon, BODY_COLORS[limb])
        canvas[:] = (canvas * LIMB_DIMMING).astype(np.uint8)
        for joint in range(18):
            for person, seen in zip(people, visible):
                if seen[joint]:
                    centre = (int(person[joint, 0]), int(person[joint, 1]))
                    cv2.circle(canvas, centre, JOINT_RADIUS, BODY_COLORS[joint], thickness=-1)
        if hands is not None:
            # DWPose draws every person's left hand, then every right hand
            for hand in hands[t].transpose(1, 0, 2, 3).reshape(-1, 21, 3):
                _draw_hand(cv2, canvas, hand, threshold)
        if face is not None:
            for landmarks in face[t]:
                for point, seen in zip(landmarks, _visible(landmarks, threshold)):
                    x, y = _int_point(point, seen)
                    if x > _EDGE_EPS and y > _EDGE_EPS:
                        cv2.circle(canvas, (x, y), FACE_RADIUS, FACE_COLOR, thickness=-1)
    return out


def _int_point(point: np.ndarray, seen: bool) -> tuple[int, int]:
    # Missing points get a position the eps test rejects (the annotator stores them as -1).
    return (int(point[0]), int(point[1])) if seen else (-1, -1)


def _draw_hand(cv2, canvas: np.ndarray, hand: np.ndarray, threshold: float) -> None:
    seen = _visible(hand, threshold)
    points = [_int_point(p, s) for p, s in zip(hand, seen)]
    for edge, (a, b) in enumerate(HAND_EDGES):
        (x1, y1), (x2, y2) = points[a], points[b]
        if x1 > _EDGE_EPS and y1 > _EDGE_EPS and x2 > _EDGE_EPS and y2 > _EDGE_EPS:
            cv2.line(canvas, (x1, y1), (x2, y2), HAND_EDGE_COLORS[edge], thickness=HAND_LINE_WIDTH)
    for x, y in points:
        if x > _EDGE_EPS and y > _EDGE_EPS:
            cv2.circle(canvas, (x, y), HAND_JOINT_RADIUS, HAND_JOINT_COLOR, thickness=-1)
