"""Network inputs and features for the learned metrics, batch by batch under inference mode."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .clips import segments
from .i3d import INPUT_SIZE as I3D_SIZE
from .resize import resize_frames
from .resnet3d import INPUT_SIZE as RESNET_SIZE
from .resnet3d import KINETICS_MEAN

FID_SIZE = 299
Tick = Callable[[int], None]


def _noop(_: int) -> None:
    pass


def lpips_values(model: torch.nn.Module, pred: np.ndarray, gt: np.ndarray, device: torch.device, legacy: bool,
                 batch: int = 4, tick: Tick = _noop) -> np.ndarray:  # fmt: skip
    """Per-frame LPIPS of uint8 (T, H, W, 3) frames; legacy = DisCo's [0, 1] inputs, else [-1, 1]."""
    values = []
    with torch.inference_mode():
        for start in range(0, len(pred), batch):
            a = torch.from_numpy(pred[start:start + batch]).to(device).permute(0, 3, 1, 2).float() / 255.0
            b = torch.from_numpy(gt[start:start + batch]).to(device).permute(0, 3, 1, 2).float() / 255.0
            if not legacy:
                a, b = a * 2 - 1, b * 2 - 1
            values.append(model(a, b).flatten().double().cpu().numpy())
            tick(len(a))
    return np.concatenate(values)


def inception_features(model: torch.nn.Module, frames: np.ndarray, device: torch.device, batch: int = 8,
                       tick: Tick = _noop) -> np.ndarray:  # fmt: skip
    """(T, 2048) pool3 features of uint8 frames resized to 299 as clean-fid's "clean" mode does."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(frames), batch):
            chunk = resize_frames(frames[start:start + batch], FID_SIZE, clip=True)
            x = torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2)
            out.append(model(x).double().cpu().numpy())
            tick(len(chunk))
    return np.concatenate(out)


def resnet3d_inputs(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float32 (T, 112, 112, 3): bicubic float resize, Kinetics mean subtracted."""
    return resize_frames(frames, RESNET_SIZE, clip=False) - np.asarray(KINETICS_MEAN, np.float32)


def i3d_inputs(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float32 (T, 224, 224, 3): bicubic float resize, scaled to [-1, 1]."""
    return resize_frames(frames, I3D_SIZE, clip=False) / 127.5 - 1.0


def clip_features(model: torch.nn.Module, inputs: np.ndarray, starts: list[int], length: int, device: torch.device,
                  average_segments: bool, batch: int = 2, tick: Tick = _noop) -> np.ndarray:  # fmt: skip
    """One feature row per clip inputs[s : s + length] (network inputs (T, h, w, 3) already prepared).

    `average_segments`: the clip is cut into 16-frame segments (the last padded with its last frame)
    whose features are averaged (FID-VID); otherwise the whole clip is one network input (FVD).
    """
    rows = []
    with torch.inference_mode():
        for first in range(0, len(starts), batch):
            group = [inputs[s:s + length] for s in starts[first:first + batch]]
            if average_segments:
                parts = [segments(clip) for clip in group]
                stacked = np.concatenate(parts)
                x = torch.from_numpy(np.ascontiguousarray(stacked)).to(device).permute(0, 4, 1, 2, 3)
                feats = model(x).double().cpu().numpy()
                bounds = np.cumsum([0] + [len(p) for p in parts])
                rows.extend(feats[bounds[i]:bounds[i + 1]].mean(axis=0) for i in range(len(parts)))
            else:
                x = torch.from_numpy(np.ascontiguousarray(np.stack(group))).to(device).permute(0, 4, 1, 2, 3)
                rows.extend(model(x).double().cpu().numpy())
            tick(len(group))
    return np.stack(rows)
