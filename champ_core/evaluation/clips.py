"""Video clips for the video metrics (FID-VID, FVD) and DisCo's GIF colour quantisation."""

from __future__ import annotations

import numpy as np

# DisCo's clip length: runs of 16 consecutive frames, one starting at every frame.
CLIP_LENGTH = 16
# The 3D networks' temporal input: a clip is cut into segments of this many frames.
SEGMENT_LENGTH = 16


def clip_starts(num_frames: int, length: int = CLIP_LENGTH) -> list[int]:
    """First frame of every clip: 0, 1, ..., num_frames - length (none when the video is shorter)."""
    return list(range(max(num_frames - length + 1, 0)))


def segments(clip: np.ndarray, length: int = SEGMENT_LENGTH) -> np.ndarray:
    """(T, ...) -> (S, length, ...): consecutive segments, the last one padded by repeating the last frame.

    As in DisCo's FID-VID data set: a clip of exactly `length` frames is one segment.
    """
    clip = np.asarray(clip)
    count = -(-clip.shape[0] // length)
    missing = count * length - clip.shape[0]
    if missing:
        clip = np.concatenate([clip, np.repeat(clip[-1:], missing, axis=0)], axis=0)
    return clip.reshape(count, length, *clip.shape[1:])


def gif_palette(frames: np.ndarray) -> np.ndarray:
    """Quantise each uint8 RGB frame to its own 256-colour adaptive palette, as Pillow's GIF writer does.

    DisCo wrote its generated and ground-truth clips as GIFs (through imageio, which writes them with
    Pillow) before computing FID-VID and FVD; this reproduces that loss of colour precision.
    """
    from PIL import Image

    out = np.empty_like(frames)
    for index, frame in enumerate(frames):
        image = Image.fromarray(np.ascontiguousarray(frame))
        out[index] = np.asarray(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).convert("RGB"))
    return out
