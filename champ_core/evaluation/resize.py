"""Image resizing as clean-fid's "clean" mode does it: Pillow bicubic on each channel as a float image."""

from __future__ import annotations

import numpy as np


def resize_float_bicubic(frame: np.ndarray, size: int, clip: bool = True) -> np.ndarray:
    """uint8 or float (H, W, 3) on 0-255 -> float32 (size, size, 3) on 0-255.

    Each channel becomes a Pillow "F" (32-bit float) image resized with the bicubic filter, so no
    quantisation happens after resizing. `clip=True` clips to [0, 255] as clean-fid does for FID;
    DisCo's copy of the resizer (used for its video metrics) does not clip, hence the flag.
    """
    from PIL import Image

    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got {frame.shape}")
    channels = []
    for index in range(3):
        image = Image.fromarray(np.ascontiguousarray(frame[:, :, index], dtype=np.float32))  # float32 -> mode "F"
        image = image.resize((size, size), resample=Image.Resampling.BICUBIC)
        channels.append(np.asarray(image, dtype=np.float32))
    out = np.stack(channels, axis=-1)
    if clip:
        out = np.clip(out, 0.0, 255.0)
    return out


def resize_frames(frames: np.ndarray, size: int, clip: bool = True) -> np.ndarray:
    """A stack of frames (T, H, W, 3) -> float32 (T, size, size, 3)."""
    return np.stack([resize_float_bicubic(frame, size, clip=clip) for frame in frames])
