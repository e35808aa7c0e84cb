"""The skeleton drawing equals controlnet_aux's DWPose drawing functions on the same keypoints.

controlnet_aux (test-only dependency) is the oracle: its `draw_pose` is the annotator that drew
Champ's training `dwpose/` maps. Keypoints are random, with missing points, several people, points
near the image border and points in the first pixel column (which the annotator skips for hands
and face).
"""

from __future__ import annotations

import numpy as np
import pytest

from champ_core.render import SkeletonInputError, draw_skeleton
from champ_core.render.skeleton import BODY_LIMBS, HAND_EDGES


@pytest.fixture(scope="module")
def dwpose_draw():
    from controlnet_aux.dwpose import draw_pose

    return draw_pose


def _random_pose(rng, people: int, width: int, height: int, missing: float = 0.15):
    """Normalised keypoints in DWPose's structures, and the same keypoints as our pixel arrays."""
    body_norm = rng.uniform(-0.05, 1.05, size=(people, 18, 2))
    body_seen = rng.random((people, 18)) > missing
    hands_norm = rng.uniform(0.0, 1.0, size=(people, 2, 21, 2))
    hands_seen = rng.random((people, 2, 21)) > missing
    face_norm = rng.uniform(0.0, 1.0, size=(people, 68, 2))
    face_seen = rng.random((people, 68)) > missing
    # a few hand / face points inside the first pixel column / row (skipped by the annotator)
    hands_norm[0, 0, 3, 0] = 0.5 / width
    face_norm[0, 5, 1] = 0.9 / height

    scale = np.array([width, height], dtype=np.float64)

    def pixels(norm, seen):
        conf = np.where(seen, rng.uniform(0.31, 1.0, size=seen.shape), rng.uniform(0.0, 0.3, size=seen.shape))
        return np.concatenate([norm * scale, conf[..., None]], axis=-1)

    ours = {
        "body": pixels(body_norm, body_seen),
        "hands": pixels(hands_norm, hands_seen),
        "face": pixels(face_norm, face_seen),
    }
    subset = np.where(body_seen, np.arange(people * 18).reshape(people, 18), -1).astype(float)
    hands = np.where(hands_seen[..., None], hands_norm, -1.0)
    theirs = {
        "bodies": {"candidate": body_norm.reshape(-1, 2), "subset": subset},
        # DWPose stacks all left hands, then all right hands
        "hands": np.concatenate([hands[:, 0], hands[:, 1]], axis=0),
        "faces": np.where(face_seen[..., None], face_norm, -1.0),
    }
    return ours, theirs


@pytest.mark.parametrize(("width", "height", "people", "seed"), [(512, 512, 1, 0), (640, 384, 2, 1), (320, 576, 3, 2)])
def test_equals_controlnet_aux(dwpose_draw, width, height, people, seed):
    rng = np.random.default_rng(seed)
    frames_ours, frames_theirs = [], []
    for _ in range(3):
        ours, theirs = _random_pose(rng, people, width, height)
        frames_ours.append(ours)
        frames_theirs.append(dwpose_draw(theirs, height, width))
    stack = {k: np.stack([f[k] for f in frames_ours]) for k in ("body", "hands", "face")}
    drawn = draw_skeleton(stack["body"], width, height, hands=stack["hands"], face=stack["face"])
    expected = np.stack(frames_theirs)
    assert drawn.shape == expected.shape == (3, height, width, 3)
    assert expected.any(-1).mean() > 0.01  # something was drawn
    mismatch = (drawn != expected).any(-1)
    assert not mismatch.any(), f"{mismatch.sum()} pixels differ from controlnet_aux"


def test_body_only_equals_controlnet_aux(dwpose_draw):
    rng = np.random.default_rng(7)
    ours, theirs = _random_pose(rng, 1, 512, 512, missing=0.0)
    theirs["hands"] = np.zeros((0, 21, 2))
    theirs["faces"] = np.zeros((0, 68, 2))
    drawn = draw_skeleton(ours["body"][None, 0], 512, 512)  # (T=1, 18, 3): no people axis
    assert (drawn[0] == dwpose_draw(theirs, 512, 512)).all()


def test_pose_frames_like_object_and_single_person_axis():
    class Pose:  # attributes as in the body package's PoseFrames
        body = np.array([[[100.0, 50.0, 1.0]] * 18])
        hands = None
        face = None

    pose = Pose()
    pose.body[0, 1] = (100.0, 120.0, 1.0)  # neck below the nose: one limb
    image = draw_skeleton(pose, 200, 200)
    assert image.shape == (1, 200, 200, 3)
    # the nose -> neck limb (index 12) is dimmed blue; the neck dot is full-colour orange
    assert tuple(image[0, 85, 100]) == tuple(int(c * 0.6) for c in (0, 0, 255))
    assert tuple(image[0, 120, 100]) == (255, 85, 0)


def test_missing_and_nan_points_are_not_drawn():
    body = np.zeros((2, 18, 3))
    body[1] = np.nan
    assert not draw_skeleton(body, 64, 64).any()


def test_limb_and_hand_tables():
    assert len(BODY_LIMBS) == 17 and len(HAND_EDGES) == 20
    assert {a for a, _ in HAND_EDGES} | {b for _, b in HAND_EDGES} == set(range(21))


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(SkeletonInputError, match="body keypoints must be"):
        draw_skeleton(np.zeros((2, 17, 3)), 64, 64)
    with pytest.raises(SkeletonInputError, match="hands keypoints have 1 frames"):
        draw_skeleton(np.zeros((2, 18, 3)), 64, 64, hands=np.zeros((1, 2, 21, 3)))
    with pytest.raises(SkeletonInputError, match="canvas size"):
        draw_skeleton(np.zeros((1, 18, 3)), 0, 64)
