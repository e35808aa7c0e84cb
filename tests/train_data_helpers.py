"""Small training videos whose frames carry their index, written through the one layout writer.

Frame t of a video: red = t (so the index survives any crop and resize of a constant channel),
green = a left-to-right ramp, blue = a top-to-bottom ramp (so any difference between two crops
shows). The guidance maps equal the frame (normal, semantic_map, dwpose; the mask is all 255 so
the masked semantic map is unchanged) and depth is the green ramp, written as 8-bit gray.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from champ_core.train.layout import VideoLayoutWriter


def index_frames(num_frames: int, width: int, height: int) -> np.ndarray:
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 0] = np.arange(num_frames, dtype=np.uint8)[:, None, None]
    frames[..., 1] = np.linspace(0, 255, width).round().astype(np.uint8)[None, None, :]
    frames[..., 2] = np.linspace(0, 255, height).round().astype(np.uint8)[None, :, None]
    return frames


def guidance_like(frames: np.ndarray, layers=("depth", "normal", "semantic_map", "dwpose", "mask")) -> dict:
    maps = {"depth": frames[..., 1], "normal": frames, "semantic_map": frames, "dwpose": frames,
            "mask": np.full(frames.shape[:3], 255, np.uint8)}
    return {name: maps[name] for name in layers}


def write_index_video(folder: Path, num_frames: int, width: int = 48, height: int = 48, bboxes=None,
                      image_format: str = "png", layers=("depth", "normal", "semantic_map", "dwpose", "mask")) -> Path:
    frames = index_frames(num_frames, width, height)
    if bboxes == "default":
        bboxes = [[width * 0.25, height * 0.2, width * 0.7, height * 0.9]] * num_frames
    with VideoLayoutWriter(folder, image_format=image_format) as writer:
        writer.add_frames(frames, guidance_like(frames, layers), bboxes=bboxes)
    return folder


def to_uint8(tensor) -> np.ndarray:
    """[0, 1] float tensor -> uint8 values (exact for what the datasets produce)."""
    return np.round(tensor.numpy() * 255).astype(np.int64)


def signed_to_uint8(tensor) -> np.ndarray:
    return to_uint8((tensor + 1) / 2)


def frame_index(image) -> int:
    """The index a (3, H, W) [-1, 1] frame carries in its red channel (which must be constant)."""
    red = signed_to_uint8(image)[0]
    assert red.min() == red.max(), "the index channel is not constant"
    return int(red[0, 0])
