"""The torch and pyrender back ends agree on SMPL-like bodies whose faces span part boundaries.

The golden mannequin's parts are separate meshes, so no triangle there blends two part colours. Here
a procedural body is built as ONE closed surface (marching cubes over a smooth union of capsules
along an SMPL-like 24-joint skeleton, arms crossing in front of the torso for self-occlusion); each
vertex is labelled with its nearest bone, so many triangles straddle two labels and the semantic map
has real colour gradients. The project's open body (separate parts, interpenetrating) is a second
scene. Both back ends must agree within 1 level on >= 99.9 % of the union of their foreground masks
for every map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from champ_core.camera import Camera
from champ_core.render import SEMANTIC_LUT_RGB, render_guidance

# SMPL joint order; a standing body with the left forearm across the chest and the right arm raised.
JOINTS = np.array([
    (0.0, 0.95, 0.0), (0.09, 0.88, 0.0), (-0.09, 0.88, 0.0), (0.0, 1.05, 0.0), (0.10, 0.50, 0.03),
    (-0.10, 0.50, 0.03), (0.0, 1.18, 0.0), (0.10, 0.08, 0.0), (-0.10, 0.08, 0.0), (0.0, 1.30, 0.0),
    (0.11, 0.03, 0.12), (-0.11, 0.03, 0.12), (0.0, 1.50, 0.0), (0.08, 1.42, 0.0), (-0.08, 1.42, 0.0),
    (0.0, 1.62, 0.02), (0.19, 1.42, 0.0), (-0.19, 1.42, 0.0), (0.24, 1.17, 0.14), (-0.30, 1.25, 0.10),
    (0.02, 1.12, 0.30), (-0.46, 1.38, 0.14), (-0.06, 1.10, 0.36), (-0.53, 1.43, 0.16),
])  # fmt: skip
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
RADII = {0: 0.12, 1: 0.075, 2: 0.075, 3: 0.12, 4: 0.055, 5: 0.055, 6: 0.13, 7: 0.045, 8: 0.045, 9: 0.13,
         12: 0.05, 13: 0.06, 14: 0.06, 16: 0.045, 17: 0.045, 18: 0.038, 19: 0.038, 20: 0.03, 21: 0.03}  # fmt: skip
BALLS = {15: 0.10, 10: 0.045, 11: 0.045, 22: 0.04, 23: 0.04}  # head, feet, hands


def _segment_distance(points, a, b):
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def procedural_body(spacing: float = 0.02):
    """(vertices (V, 3) body frame: x left->right, y up, z forward; faces (F, 3); labels (V,))."""
    from skimage.measure import marching_cubes

    lo, hi = np.array([-0.75, -0.06, -0.3]), np.array([0.75, 1.85, 0.6])
    axes = [np.arange(lo[i], hi[i], spacing) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)

    def field(points):
        shapes, labels = [], []
        for child, parent in enumerate(PARENTS):
            if parent >= 0 and parent in RADII:
                shapes.append(_segment_distance(points, JOINTS[parent], JOINTS[child]) - RADII[parent])
                labels.append(parent)
        for joint, radius in BALLS.items():
            shapes.append(np.linalg.norm(points - JOINTS[joint], axis=1) - radius)
            labels.append(joint)
        d = np.stack(shapes, 1)
        # smooth minimum (k = 3 cm) so limbs blend into one surface
        k = 0.03
        smooth = -k * np.log(np.exp(-d / k).sum(1))
        return smooth, np.array(labels)[d.argmin(1)]

    sdf, _ = field(grid)
    verts, faces, _, _ = marching_cubes(sdf.reshape([len(a) for a in axes]), level=0.0, spacing=(spacing,) * 3)
    verts = verts + lo
    _, labels = field(verts)
    return verts.astype(np.float32), faces.astype(np.int64), labels


def to_camera(verts_body: np.ndarray, yaw_deg: float, distance: float) -> np.ndarray:
    """Rotate about the vertical axis, then into OpenCV camera axes with the body facing the camera."""
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    x = c * verts_body[:, 0] + s * verts_body[:, 2]
    z = -s * verts_body[:, 0] + c * verts_body[:, 2]
    return np.stack([x, 0.9 - verts_body[:, 1], distance - z], axis=1).astype(np.float32)


def _assert_agree(a: dict, b: dict, where: str):
    for t in range(len(a["mask"])):
        union = (a["mask"][t] > 0) | (b["mask"][t] > 0)
        assert union.sum() > 1000, where
        for layer in ("depth", "normal", "semantic_map", "mask"):
            diff = np.abs(a[layer][t].astype(int) - b[layer][t].astype(int))
            if diff.ndim == 3:
                diff = diff.max(-1)
            agree = (diff[union] <= 1).mean()
            assert agree >= 0.999, f"{where} frame {t} {layer}: back ends agree on {agree:.4%} of the union"


@pytest.fixture(scope="module")
def body_scene():
    verts, faces, labels = procedural_body()
    frames = np.stack([to_camera(verts, yaw, 4.2) for yaw in (0.0, 40.0, 110.0, 250.0)])
    return frames, faces, labels


def test_procedural_body_spans_part_boundaries(body_scene):
    frames, faces, labels = body_scene
    spanning = labels[faces].min(1) != labels[faces].max(1)
    assert spanning.sum() > 500
    assert len(np.unique(labels)) >= 18


def test_backends_agree_on_connected_body(body_scene):
    frames, faces, labels = body_scene
    camera = Camera.centred(800.0, 416, 416)
    a = render_guidance(frames, faces, labels, camera, backend="torch")
    b = render_guidance(frames, faces, labels, camera, backend="pyrender")
    _assert_agree(a, b, "procedural body")
    # the scene exercises colour blending across part boundaries: off-table colours inside the body
    fg = a["mask"] > 0
    sem = a["semantic_map"][fg].astype(int)
    off_table = np.abs(sem[:, None, :] - SEMANTIC_LUT_RGB.astype(int)).max(-1).min(-1) > 1
    assert off_table.mean() > 0.01


def test_backends_agree_on_open_body_non_square():
    from champ_core.body.model import open_body_model

    body = open_body_model()
    frames = 4
    pose = torch.zeros(frames, 23, 3)
    pose[:, 15, 1] = torch.linspace(-0.5, 0.5, frames)  # head turn
    pose[:, 16, 1] = torch.linspace(-1.2, 0.2, frames)  # left arm swings forward
    pose[:, 0, 0] = torch.linspace(-0.6, 0.3, frames)  # hip flexion
    orient = torch.tensor([[np.pi, 0.0, 0.0]]).repeat(frames, 1)
    orient[:, 1] = torch.linspace(0.0, 2.0, frames)
    transl = torch.tensor([[0.1, 0.2, 30.0]]).repeat(frames, 1)
    with torch.no_grad():
        vertices = body(orient, pose, torch.zeros(1, 10), transl).vertices
    camera = Camera.centred(9000.0, 384, 576)
    a = render_guidance(vertices, body.faces, body.part_labels, camera, backend="torch")
    b = render_guidance(vertices, body.faces, body.part_labels, camera, backend="pyrender")
    _assert_agree(a, b, "open body")


def test_visible_face_ids_agree(body_scene):
    from champ_core.render.geometry import orient_faces_outward
    from champ_core.render.raster_gl import rasterize_face_ids_gl
    from champ_core.render.raster_torch import rasterize_face_ids

    frames, faces, _ = body_scene
    verts = torch.from_numpy(frames)
    oriented = orient_faces_outward(verts[0], torch.from_numpy(faces))
    args = (800.0, 800.0, 208.0, 208.0, 416, 416)
    a = rasterize_face_ids(verts, oriented, *args)
    b = rasterize_face_ids_gl(verts, oriented, *args)
    union = (a >= 0) | (b >= 0)
    same = (a == b)[union].float().mean().item()
    # they differ only where a pixel centre lies (within GL's 1/256 px) on an edge
    assert same > 0.995, same
