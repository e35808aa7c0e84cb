"""Mesh geometry shared by every back end: face orientation and Blender-style vertex normals."""

from __future__ import annotations

import torch

# Blender's camera clips at 5 cm; geometry nearer than this is not drawn.
NEAR_CLIP = 0.05


def orient_faces_outward(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Faces wound so their normals point out of the body (positive signed volume).

    Back-face culling and the normal map both rely on the winding; a mesh supplied with the opposite
    convention (or mirrored) is flipped here instead of silently showing its far side.
    `vertices` is one frame (V, 3) of finite values.
    """
    a, b, c = (vertices[faces[:, k]].double() for k in range(3))
    signed_volume = (a * torch.linalg.cross(b, c)).sum()
    if signed_volume < 0:
        return faces[:, [0, 2, 1]].contiguous()
    return faces


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (T, V, 3): corner-angle-weighted average of unit face normals.

    This is Blender's rule (the goldens were rendered with it); area weighting differs by up to
    17 levels on the normal map. Vertices used by no face get a zero normal.
    """
    num_frames, num_vertices = vertices.shape[:2]
    corners = vertices.index_select(1, faces.reshape(-1)).view(num_frames, -1, 3, 3)  # (T, F, corner, xyz)
    p0, p1, p2 = corners.unbind(2)
    e01, e12, e20 = p1 - p0, p2 - p1, p0 - p2
    ax, ay, az = e01.unbind(-1)
    bx, by, bz = (-e20).unbind(-1)
    cross = torch.stack((ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx), dim=-1)  # 2 x area x normal
    twice_area = cross.norm(dim=-1)
    unit = cross / twice_area.clamp_min(1e-20)[..., None]

    def dot(a, b):
        return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]

    # The two edges at each corner span the same parallelogram, so |cross| is shared by all three
    # corners and each corner angle is atan2(2 x area, edge . edge).
    dots = torch.stack((-dot(e01, e20), -dot(e12, e01), -dot(e20, e12)), dim=-1)  # (T, F, 3)
    angles = torch.atan2(twice_area[..., None].expand_as(dots), dots)
    contrib = angles[..., None] * unit[:, :, None, :]  # (T, F, 3, 3)
    normals = torch.zeros_like(vertices)
    normals.index_add_(1, faces.reshape(-1), contrib.reshape(num_frames, -1, 3))
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-20)
