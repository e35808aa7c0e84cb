"""Downscaled preview frames for the web extension (web/champ_guidance_preview.js).

Budget: per layer at most MAX_PREVIEW_FRAMES frames (sampled evenly over the video), each scaled
so that its longer side is at most PREVIEW_TILE_SIZE px, packed into one PNG "sprite" (a grid of
SPRITE_COLUMNS tiles per row). So a layer costs at most 48 x 128 x 128 px (~0.8 Mpx, typically a
few hundred kB as PNG) however long the video is; the browser then shows any of those frames,
for any toggled set of layers, without asking the server again.
"""

from __future__ import annotations

import os
import uuid

import numpy as np

MAX_PREVIEW_FRAMES = 48
PREVIEW_TILE_SIZE = 128
SPRITE_COLUMNS = 8
PREVIEW_SUBFOLDER = "champ_preview"


def preview_frame_indices(frame_count: int, limit: int = MAX_PREVIEW_FRAMES) -> list[int]:
    """Evenly spread frame indices, first and last included, at most `limit` of them."""
    if frame_count <= limit:
        return list(range(frame_count))
    return sorted({round(i * (frame_count - 1) / (limit - 1)) for i in range(limit)})


def tile_size(width: int, height: int, limit: int = PREVIEW_TILE_SIZE) -> tuple[int, int]:
    scale = min(1.0, limit / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def make_sprite(frames: np.ndarray, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    """uint8 frames (T, H, W, 3) -> one uint8 sprite holding the chosen frames, resized, in a grid."""
    from PIL import Image

    tile_w, tile_h = size
    columns = min(SPRITE_COLUMNS, len(indices))
    rows = (len(indices) + columns - 1) // columns
    sprite = np.zeros((rows * tile_h, columns * tile_w, 3), dtype=np.uint8)
    for slot, index in enumerate(indices):
        tile = Image.fromarray(frames[index]).resize((tile_w, tile_h), Image.BILINEAR)
        row, col = divmod(slot, columns)
        sprite[row * tile_h : (row + 1) * tile_h, col * tile_w : (col + 1) * tile_w] = np.asarray(tile)
    return sprite


def write_layer_previews(layers: dict[str, np.ndarray], strengths: dict[str, float]) -> list[dict]:
    """Write one sprite per layer into ComfyUI's temp folder; returns the UI records the JS reads."""
    import folder_paths
    from PIL import Image

    folder = os.path.join(folder_paths.get_temp_directory(), PREVIEW_SUBFOLDER)
    os.makedirs(folder, exist_ok=True)
    records = []
    token = uuid.uuid4().hex[:12]
    for name, frames in layers.items():
        frame_count, height, width = frames.shape[:3]
        indices = preview_frame_indices(frame_count)
        tile_w, tile_h = tile_size(width, height)
        sprite = make_sprite(frames, indices, (tile_w, tile_h))
        filename = f"champ_{token}_{name}.png"
        Image.fromarray(sprite).save(os.path.join(folder, filename), compress_level=4)
        records.append(
            {
                "layer": name,
                "filename": filename,
                "subfolder": PREVIEW_SUBFOLDER,
                "type": "temp",
                "frame_count": int(frame_count),
                "frame_indices": indices,
                "tile_width": tile_w,
                "tile_height": tile_h,
                "columns": min(SPRITE_COLUMNS, len(indices)),
                "strength": float(strengths.get(name, 1.0)),
            }
        )
    return records
