"""Visibility by a batched pure-PyTorch z-buffer rasterizer (CPU or CUDA, no OpenGL).

Output is, for every pixel centre (i + 0.5, j + 0.5) that some front-facing triangle covers, the
nearest such triangle -- exactly what Blender's 1-sample Cycles render sees. Everything else (depth,
normals, colours) is computed from that face index by `shading`, shared by every back end.

The rasterizer works on spans, so no tensor ever holds a pixel a triangle does not cover:
1. per face (all frames of the batch at once): cull back faces and faces that cover no pixel centre,
   find the rows whose centre line crosses the face;
2. per (face, row): intersect the row's centre line with the three edges -> the covered run of
   pixel centres [x_left, x_right] and 1/z at its first pixel;
3. per covered pixel: 1/z (affine along the run), packed with the face index into one int64 key
   (1/z as ordered float bits in the high word, so nearer = smaller) and z-tested by a single
   `scatter_reduce(amin)` into a z-buffer spanning the batch's drawn rectangle.
The op count is fixed (no loop over triangle sizes), which keeps the CPU path fast and the GPU path
a handful of kernels. Shared edges are computed from the same two endpoints in the same order by
both neighbouring faces, so a pixel centre on an edge is covered by at least one of them: no cracks.
"""

from __future__ import annotations

import torch

from .geometry import NEAR_CLIP

_EMPTY_KEY = torch.iinfo(torch.int64).max
_FLOAT_INF_BITS = 0x7F800000
_FACE_BITS = 32


def rasterize_spans(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Covered pixels and their visible face: pixel (N,) int64 = t*H*W + row*W + col (increasing),
    face (N,) int64, and the pixels' (frame, row, col).

    `vertices` (T, V, 3) in the camera frame (OpenCV axes), `faces` (F, 3) wound outward (see
    `orient_faces_outward`); back faces are culled. Faces touching a vertex that is not finite or
    nearer than the clip distance are skipped.
    """
    device = vertices.device
    num_frames = vertices.shape[0]
    empty = torch.empty(0, dtype=torch.int64, device=device)
    # Project each vertex once (float64: edge crossings must be computed identically by neighbours
    # and precisely enough that float rounding never decides coverage visibly).
    verts = vertices.double()
    vz = verts[..., 2]
    ok_vertex = (vz > NEAR_CLIP) & torch.isfinite(verts).all(-1)
    vz = torch.where(ok_vertex, vz, torch.ones_like(vz))
    vx = fx * verts[..., 0] / vz + cx
    vy = fy * verts[..., 1] / vz + cy
    corner = faces.reshape(-1)
    x = vx[:, corner].view(num_frames, -1, 3)
    y = vy[:, corner].view(num_frames, -1, 3)
    keep = ok_vertex[:, corner].view(num_frames, -1, 3).all(-1)
    # Front faces (outward normal towards the camera) have positive area in these y-down coordinates.
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x2 - x0) * (y1 - y0) - (x1 - x0) * (y2 - y0)
    keep &= area > 0
    # Rows whose centre line (j + 0.5) crosses the face, clipped to the image.
    row_first = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2) - 0.5).clamp_min(0)
    row_last = torch.floor(torch.maximum(torch.maximum(y0, y1), y2) - 0.5).clamp_max(height - 1)
    keep &= (row_last >= row_first) & (torch.maximum(torch.maximum(x0, x1), x2) >= 0.5)
    keep &= torch.minimum(torch.minimum(x0, x1), x2) <= width - 0.5
    t_idx, f_idx = keep.nonzero(as_tuple=True)
    if t_idx.numel() == 0:
        return empty, empty, (empty, empty, empty)

    # Per kept face, gathered with one flat index (much faster than 2-D advanced indexing), then
    # laid out channel-planar (3, N): one contiguous row per corner.
    flat = t_idx * faces.shape[0] + f_idx
    x = x.reshape(-1, 3).index_select(0, flat).T.contiguous()
    y = y.reshape(-1, 3).index_select(0, flat).T.contiguous()
    vertex_index = faces.index_select(0, f_idx) + (t_idx * vz.shape[1])[:, None]
    inv_z = (1.0 / vz.reshape(-1).index_select(0, vertex_index.reshape(-1))).view(-1, 3).T
    area = area.reshape(-1).index_select(0, flat)
    row_first = row_first.reshape(-1).index_select(0, flat).long()
    rows_per_face = row_last.reshape(-1).index_select(0, flat).long() - row_first + 1

    # Edge k runs from corner a = k+1 to corner b = k+2 (opposite corner k).
    nxt, nxt2 = [1, 2, 0], [2, 0, 1]
    xa, ya, xb, yb = x[nxt], y[nxt], x[nxt2], y[nxt2]
    # 1/z is affine in screen space: 1/z = sum_k w_k / z_k with w_k = -E_k / area, whose slopes are
    # (y_b - y_a, x_a - x_b) / area.
    w = inv_z / area
    invz_dx = ((yb - ya) * w).sum(0)
    invz_dy = ((xa - xb) * w).sum(0)
    # Edges with endpoints in a canonical order (lower y first, then lower x), so that the two
    # faces sharing an edge compute bit-identical crossings.
    swap = (ya < y) | ((ya == y) & (xa < x))
    ex0, ex1 = torch.where(swap, xa, x), torch.where(swap, x, xa)
    ey0, ey1 = torch.where(swap, ya, y), torch.where(swap, y, ya)
    slope = (ex1 - ex0) / torch.where(ey1 > ey0, ey1 - ey0, torch.ones_like(ey0))
    # Everything a row needs from its face, in one channel-planar float32 table (17, N): one gather
    # per row instead of twelve, and contiguous rows for the arithmetic below. float32 crossings
    # are exact to ~1e-4 px, finer than GL's 1/256 px sub-pixel grid.
    face_table = torch.cat((ex0, ey0, ey1, slope, x[:1], y[:1], inv_z[:1], invz_dx[None], invz_dy[None])).float()

    # -- one entry per (face, row) -----------------------------------------------------------
    face_of_row, row_in_face = _expand_runs(rows_per_face)
    row = row_first.index_select(0, face_of_row) + row_in_face
    rt = face_table.index_select(1, face_of_row)  # (17, R)
    sample_y = row.float() + 0.5
    left = torch.full_like(sample_y, float("inf"))
    right = torch.full_like(sample_y, float("-inf"))
    for k in range(3):
        edge_y0, edge_y1 = rt[3 + k], rt[6 + k]
        crosses = (edge_y0 <= sample_y) & (sample_y <= edge_y1) & (edge_y1 > edge_y0)
        cross_x = rt[k] + (sample_y - edge_y0) * rt[9 + k]
        left = torch.where(crosses, torch.minimum(left, cross_x), left)
        right = torch.where(crosses, torch.maximum(right, cross_x), right)
    col_first = torch.ceil(left - 0.5).clamp_min(0)
    col_last = torch.floor(right - 0.5).clamp_max(width - 1)
    run = (col_last - col_first + 1).clamp_min(0).long()
    # 1/z at the run's first pixel centre, from vertex 0 of the face (small offsets: precise)
    invz_row = rt[14] + rt[15] * (col_first + 0.5 - rt[12]) + rt[16] * (sample_y - rt[13])
    # The z-buffer only spans the batch's covered rectangle: fewer bytes to fill and scan.
    drawn = run > 0
    if not bool(drawn.any()):
        return empty, empty, (empty, empty, empty)
    row_lo, row_hi = int(row[drawn].min()), int(row[drawn].max())
    col_lo, col_hi = int(col_first[drawn].min()), int(col_last[drawn].max())
    crop_h, crop_w = row_hi - row_lo + 1, col_hi - col_lo + 1
    face_t = t_idx.index_select(0, face_of_row)
    row_base = face_t * (crop_h * crop_w) + (row - row_lo) * crop_w + (col_first.long() - col_lo)
    row_face = f_idx.index_select(0, face_of_row)
    row_slope = rt[15]

    # -- one entry per covered pixel -----------------------------------------------------------
    pixel_row, offset = _expand_runs(run)
    pixel = row_base.index_select(0, pixel_row) + offset
    pixel_invz = invz_row.index_select(0, pixel_row) + row_slope.index_select(0, pixel_row) * offset.float()
    # Positive float32 bit patterns sort like the floats: nearer (larger 1/z) -> smaller key.
    depth_key = _FLOAT_INF_BITS - pixel_invz.clamp_min(0).view(torch.int32).to(torch.int64)
    key = (depth_key << _FACE_BITS) | row_face.index_select(0, pixel_row)

    buffer = torch.full((num_frames * crop_h * crop_w,), _EMPTY_KEY, dtype=torch.int64, device=device)
    buffer.scatter_reduce_(0, pixel, key, reduce="amin", include_self=True)
    # nonzero on the 3-D view gives (frame, row, col) directly: no integer division per pixel
    t, r, c = (buffer.view(num_frames, crop_h, crop_w) != _EMPTY_KEY).nonzero(as_tuple=True)
    face = buffer.index_select(0, (t * crop_h + r) * crop_w + c) & ((1 << _FACE_BITS) - 1)
    row, col = r + row_lo, c + col_lo
    return (t * height + row) * width + col, face, (t, row, col)


def _expand_runs(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For runs of `lengths` (R,) >= 0: the run of every element (sum(lengths),) and its offset in it."""
    run = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    return run, torch.arange(len(run), device=lengths.device) - starts.index_select(0, run)


def rasterize_face_ids(
    vertices: torch.Tensor, faces: torch.Tensor, fx: float, fy: float, cx: float, cy: float, width: int, height: int
) -> torch.Tensor:
    """Dense form of `rasterize_spans`: (T, H, W) int64 face index, -1 where no face is hit."""
    pixel, face, _ = rasterize_spans(vertices, faces, fx, fy, cx, cy, width, height)
    out = torch.full((vertices.shape[0] * height * width,), -1, dtype=torch.int64, device=vertices.device)
    out[pixel] = face
    return out.view(vertices.shape[0], height, width)
