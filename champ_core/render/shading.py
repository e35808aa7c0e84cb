"""Guidance maps from the visible face at each covered pixel: the part every back end shares.

For each covered pixel the camera ray through the pixel centre is intersected with the visible
triangle (ray tracing, so barycentrics are perspective-correct as in Cycles), and:
- depth: planar z (OpenCV Z, not ray length), normalised per frame over the covered pixels,
  255 * (1 - (z - z_min) / (z_max - z_min)) rounded: nearest 255, farthest 0, background 0;
- normal: Blender vertex normals interpolated and renormalised, RGB = 255 * (0.5 + 0.5 * (x, -y, -z));
- semantic_map: per-vertex palette colours interpolated in linear light, re-encoded to sRGB;
- mask: 255 where a face is hit.
Bytes are rounded half up, as Blender writes them; Blender's dither is not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .colors import linear_to_srgb

MAP_LAYERS = ("depth", "normal", "semantic_map", "mask")


def _to_byte(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)  # truncation of a positive value = floor


@dataclass
class RayHits:
    """Where the camera rays through covered pixel centres meet their visible triangles."""

    corners: torch.Tensor  # (N, 3) vertex indices of each pixel's face
    corner_index: list[torch.Tensor]  # 3 x (N,) flat indices t * V + vertex
    barycentrics: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # 3 x (N,), perspective-correct
    depth: torch.Tensor  # (N,) planar depth z of the hit


def ray_hits(vertices: torch.Tensor, faces: torch.Tensor, face: torch.Tensor, t: torch.Tensor, row: torch.Tensor,
             col: torch.Tensor, fx: float, fy: float, cx: float, cy: float) -> RayHits:
    """Ray-triangle intersection (Moller-Trumbore) for the pixels (t, row, col) showing `face`.

    The ray S(z) = z * (ray_x, ray_y, 1) leaves the camera centre through the pixel centre, so the
    hit parameter is the planar depth z and the barycentrics are perspective-correct as in Cycles.
    """
    corners = faces.index_select(0, face)  # (N, 3)
    frame_offset = t * vertices.shape[1]
    corner_index = [corners[:, k] + frame_offset for k in range(3)]
    planar = vertices.reshape(-1, 3).T.float()
    p0, p1, p2 = (planar.index_select(1, i) for i in corner_index)
    ray_x = ((col.float() + 0.5) - cx) / fx
    ray_y = ((row.float() + 0.5) - cy) / fy
    e1 = p1 - p0
    e2 = p2 - p0
    # p = ray x e2, q = s x e1 with s = -p0
    px = ray_y * e2[2] - e2[1]
    py = e2[0] - ray_x * e2[2]
    pz = ray_x * e2[1] - ray_y * e2[0]
    det = e1[0] * px + e1[1] * py + e1[2] * pz
    det = torch.where(det.abs() < 1e-30, torch.full_like(det, 1e-30), det)
    inv_det = 1.0 / det
    sx, sy, sz = -p0[0], -p0[1], -p0[2]
    qx = sy * e1[2] - sz * e1[1]
    qy = sz * e1[0] - sx * e1[2]
    qz = sx * e1[1] - sy * e1[0]
    b1 = (sx * px + sy * py + sz * pz) * inv_det
    b2 = (ray_x * qx + ray_y * qy + qz) * inv_det
    # Pixel centres on an edge may land a hair outside the triangle: clamp, renormalise.
    b0 = (1.0 - b1 - b2).clamp_min(0.0)
    b1 = b1.clamp_min(0.0)
    b2 = b2.clamp_min(0.0)
    norm = 1.0 / (b0 + b1 + b2).clamp_min(1e-30)
    depth = (e2[0] * qx + e2[1] * qy + e2[2] * qz) * inv_det
    return RayHits(corners, corner_index, (b0 * norm, b1 * norm, b2 * norm), depth)


def shade_maps(
    pixel: torch.Tensor,
    face: torch.Tensor,
    image_shape: tuple[int, int, int],
    vertices: torch.Tensor,
    faces: torch.Tensor,
    normals: torch.Tensor | None,
    linear_colors: torch.Tensor | None,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    layers: tuple[str, ...] = MAP_LAYERS,
    targets: dict[str, torch.Tensor] | None = None,
    coords: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """uint8 maps for covered pixels `pixel` (N,) (flat index t*H*W + row*W + col) showing `face` (N,).

    `image_shape` = (T, H, W); `vertices` (T, V, 3) camera frame; `normals` (T, V, 3) unit vertex
    normals (needed for "normal"); `linear_colors` (V, 3) linear-light vertex colours (needed for
    "semantic_map"). Returns mask (T, H, W) and depth/normal/semantic_map (T, H, W, 3) (depth grey).
    `coords` = the pixels' (frame, row, col), if known, saves recomputing them.

    `targets` may hold zero-filled uint8 tensors of those shapes to write into (on the CPU, views of
    the caller's output arrays: no extra copy). Per-pixel vectors are kept channel-planar ((3, N): one contiguous row per x/y/z or R/G/B), which
    is several times faster on the CPU than (N, 3) rows with broadcasting.
    """
    num_frames, height, width = image_shape
    device = vertices.device
    num_pixels = num_frames * height * width
    if coords is not None:  # (frame, row, col) of each pixel, when the back end has them
        t, row, col = coords
    else:
        t = pixel // (height * width)
        rem = pixel - t * (height * width)
        row = rem // width
        col = rem - row * width

    hit = ray_hits(vertices, faces, face, t, row, col, fx, fy, cx, cy)
    corners, corner_index, (b0, b1, b2) = hit.corners, hit.corner_index, hit.barycentrics

    def gather(planar: torch.Tensor, index: list[torch.Tensor]) -> list[torch.Tensor]:
        return [planar.index_select(1, i) for i in index]  # 3 corners of (C, N)

    def blend(v0: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        return v0 * b0 + v1 * b1 + v2 * b2

    def target(name: str, channels: int) -> torch.Tensor:
        if targets is not None and name in targets:
            return targets[name].view(num_pixels, channels)
        return torch.zeros(num_pixels, channels, dtype=torch.uint8, device=device)

    def scatter_rgb(name: str, values: torch.Tensor) -> torch.Tensor:
        rgb = target(name, 3)
        rgb[pixel] = _to_byte(values).T
        return rgb.view(num_frames, height, width, 3)

    out: dict[str, torch.Tensor] = {}
    if "mask" in layers:
        mask = target("mask", 1)
        mask[pixel] = 255
        out["mask"] = mask.view(num_frames, height, width)
    if "depth" in layers:
        z = hit.depth
        inf = torch.full((num_frames,), float("inf"), dtype=z.dtype, device=device)
        z_min = inf.scatter_reduce(0, t, z, reduce="amin", include_self=True)
        z_max = (-inf).scatter_reduce(0, t, z, reduce="amax", include_self=True)
        span = z_max - z_min
        scale = torch.where(span > 0, 1.0 / span.clamp_min(1e-30), torch.zeros_like(span))
        # Grey RGB in memory (the layer contract); written to disk as 8-bit grayscale like Blender.
        out["depth"] = scatter_rgb("depth", (1.0 - (z - z_min[t]) * scale[t]).expand(3, -1))
    if "normal" in layers:
        if normals is None:
            raise ValueError("the normal map needs vertex normals")
        n = blend(*gather(normals.reshape(-1, 3).T.float(), corner_index))  # (3, N)
        n = n * (0.5 / (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt().clamp_min(1e-30))
        n = n * torch.tensor([[1.0], [-1.0], [-1.0]], device=device) + 0.5
        out["normal"] = scatter_rgb("normal", n)
    if "semantic_map" in layers:
        if linear_colors is None:
            raise ValueError("the semantic map needs vertex colours")
        # Most faces lie inside one part: their pixels are exactly that part's colour (the blend of
        # three equal colours re-encodes to the same bytes), so only faces spanning two parts pay
        # for the linear-light blend and the sRGB curve.
        face_colors = linear_colors.float()[faces]  # (F, 3 corners, 3)
        uniform_face = (face_colors[:, 0] == face_colors[:, 1]).all(-1) & (face_colors[:, 1] == face_colors[:, 2]).all(-1)
        face_bytes = _to_byte(linear_to_srgb(face_colors[:, 0]))  # (F, 3), used where uniform
        semantic = target("semantic_map", 3)
        uniform = uniform_face.index_select(0, face)
        flat = uniform.nonzero(as_tuple=True)[0]
        semantic[pixel.index_select(0, flat)] = face_bytes.index_select(0, face.index_select(0, flat))
        mixed = (~uniform).nonzero(as_tuple=True)[0]
        if len(mixed):
            weights = [b.index_select(0, mixed) for b in (b0, b1, b2)]
            planar = linear_colors.T.float()
            lin = sum(planar.index_select(1, corners[mixed, k]) * weights[k] for k in range(3))
            semantic[pixel.index_select(0, mixed)] = _to_byte(linear_to_srgb(lin)).T
        out["semantic_map"] = semantic.view(num_frames, height, width, 3)
    return out
