"""POSE_KEYPOINT parsing, layouts, tracking, projection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from champ_core.body.keypoints import (
    KeypointError,
    PoseFrames,
    load_pose_keypoints,
    openpose18_from_body,
    parse_pose_keypoint,
    pose_frames_to_pose_keypoint,
    project,
)
from champ_core.body.model import open_body_model
from champ_core.camera import Camera


def _op18(x0=100.0, y0=50.0, scale=1.0):
    pts = np.zeros((18, 3))
    pts[:, 0] = x0 + np.arange(18) * 3 * scale
    pts[:, 1] = y0 + np.arange(18) * 10 * scale
    pts[:, 2] = 0.9
    return pts


def _frame(people, w=512, h=512):
    return {"people": [{"pose_keypoints_2d": p.reshape(-1).tolist()} for p in people], "canvas_width": w, "canvas_height": h}


def test_openpose18_roundtrip_and_normalised():
    pts = _op18()
    pose = parse_pose_keypoint([_frame([pts])])
    assert pose.body.shape == (1, 18, 3) and np.allclose(pose.body[0], pts)
    norm = pts.copy()
    norm[:, 0] /= 512
    norm[:, 1] /= 256
    pose = parse_pose_keypoint(_frame([norm], 512, 256))  # a single dict is one frame
    assert np.allclose(pose.body[0, :, :2], pts[:, :2])
    again = parse_pose_keypoint(pose_frames_to_pose_keypoint(pose))
    assert np.allclose(again.body, pose.body)


def test_coco17_and_dwpose133_layouts():
    coco = np.zeros((17, 3))
    coco[:, 0] = np.arange(17) * 10 + 5
    coco[:, 1] = 100
    coco[:, 2] = 1
    pose = parse_pose_keypoint([_frame([coco])])
    b = pose.body[0]
    assert b[0, 0] == 5 and b[2, 0] == 6 * 10 + 5 and b[5, 0] == 5 * 10 + 5  # nose, R/L shoulder
    assert b[1, 0] == pytest.approx((55 + 65) / 2) and b[1, 2] == 1  # neck = mid-shoulders
    assert b[8, 0] == 12 * 10 + 5 and b[11, 0] == 11 * 10 + 5  # R hip = COCO 12, L hip = COCO 11
    whole = np.zeros((133, 3))
    whole[:17] = coco
    whole[23:91] = [200, 200, 1]
    whole[91:112] = [300, 300, 1]
    whole[112:133] = [400, 400, 1]
    pose = parse_pose_keypoint([_frame([whole])])
    assert np.allclose(pose.body, parse_pose_keypoint([_frame([coco])]).body)
    assert pose.face.shape == (1, 68, 3) and pose.face[0, 0, 0] == 200
    assert pose.hands[0, 0, 0, 0] == 300 and pose.hands[0, 1, 0, 0] == 400


def test_bad_inputs():
    with pytest.raises(KeypointError, match="empty"):
        parse_pose_keypoint([])
    with pytest.raises(KeypointError, match="unknown keypoint layout"):
        parse_pose_keypoint([_frame([np.zeros((20, 3)) + 1])])
    nan = np.full((18, 3), np.nan)
    with pytest.raises(KeypointError, match="no person"):
        parse_pose_keypoint([_frame([nan]), _frame([])])
    with pytest.raises(KeypointError, match="canvas"):
        parse_pose_keypoint([{"people": [{"pose_keypoints_2d": _op18().reshape(-1).tolist()}]}])
    with pytest.raises(KeypointError, match="out of range"):
        parse_pose_keypoint([_frame([_op18()])], person=3)
    with pytest.raises(KeypointError):
        PoseFrames(np.zeros((2, 17, 3)), 10, 10)


def test_tracking_follows_one_person_and_flags_missing(tmp_path):
    small, big = _op18(20, 20, 0.5), _op18(300, 100, 1.2)
    frames = []
    for t in range(6):
        people = [small + [t, 0, 0], big + [2 * t, 0, 0]]
        if t % 2:
            people = people[::-1]  # order changes between frames
        if t == 3:
            people = [small + [t, 0, 0]]  # the big person is missing here
        frames.append(_frame(people))
    pose = parse_pose_keypoint(frames)
    assert pose.present.tolist() == [True, True, True, False, True, True]
    assert np.allclose(pose.body[5, 0, 0], big[0, 0] + 10)
    assert (pose.body[3, :, 2] == 0).all()
    chosen = parse_pose_keypoint(frames, person=0)
    assert chosen.present.all() and np.allclose(chosen.body[4, 0, 0], small[0, 0] + 4)
    path = tmp_path / "kp.json"
    path.write_text(json.dumps(frames))
    assert np.allclose(load_pose_keypoints(path).body, pose.body)
    with pytest.raises(KeypointError, match="does not exist"):
        load_pose_keypoints(tmp_path / "missing.json")


def test_openpose18_from_body_and_project():
    body = open_body_model()
    out = body(torch.tensor([[np.pi, 0, 0]]), None, None, torch.tensor([[0.0, 0.2, 5.0]]))
    pts = openpose18_from_body(out.vertices, out.joints)
    assert pts.shape == (1, 18, 3)
    cam = Camera.centred(500, 512, 512)
    uv = project(pts, cam)[0]
    # upright facing the camera: nose above neck above hips; person's left (5) on the image right
    assert uv[0, 1] < uv[1, 1] < uv[8, 1]
    assert uv[5, 0] > uv[2, 0] and uv[15, 0] > uv[14, 0]
    assert torch.allclose(pts[0, 1], 0.5 * (out.joints[0, 16] + out.joints[0, 17]))
    assert np.allclose(project(pts.numpy(), cam), uv.numpy()[None], atol=1e-4)
