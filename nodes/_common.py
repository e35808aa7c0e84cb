"""Shared pieces of the node groups: category, custom type names, ComfyUI bridges, conversions.

ComfyUI modules (comfy.*, folder_paths, server) are imported inside functions only, so the pack
imports without a host (tests, tooling) and stays cheap to load inside one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import torch

log = logging.getLogger("champ")

CATEGORY = "Champ"

# Custom socket types. The strings are global across all packs, hence the prefix.
CHAMP_MODEL = "CHAMP_MODEL"  # the Champ networks (reference UNet, denoising UNet, guidance encoders)
CHAMP_IMAGE_ENCODER = "CHAMP_IMAGE_ENCODER"  # CLIP image encoder (pack loader or core CLIP_VISION)
CHAMP_VAE = "CHAMP_VAE"  # the SD VAE (pack loader or core VAE)
CHAMP_REFERENCE = "CHAMP_REFERENCE"  # the encoded reference image
CHAMP_GUIDANCE = "CHAMP_GUIDANCE"  # guidance layers + strengths
CHAMP_CONTEXT_OPTIONS = "CHAMP_CONTEXT_OPTIONS"  # temporal window options
CHAMP_BODY_MODEL = "CHAMP_BODY_MODEL"  # an SMPL-compatible body model
CHAMP_MOTION = "CHAMP_MOTION"  # per-frame body parameters + camera

# Folder names registered with ComfyUI's folder_paths (under models/).
CHAMP_FOLDER = "champ"
SMPL_FOLDER = "smpl"


class ChampNodeError(ValueError):
    """A user-facing problem with a node's inputs; the message says what to change."""


def register_model_folders() -> None:
    """Register models/champ and models/smpl with ComfyUI, when running inside ComfyUI.

    folder_paths is only importable inside a host; outside one (tests, tooling) this does nothing.
    A folder name new to folder_paths gets an empty extension set, which means "every file": the
    loaders list folders and files themselves, so that is what we want.
    """
    try:
        import folder_paths
    except ImportError:
        return
    for name in (CHAMP_FOLDER, SMPL_FOLDER):
        path = os.path.join(folder_paths.models_dir, name)
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.folder_names_and_paths[name] = ([path], set())
        elif path not in folder_paths.folder_names_and_paths[name][0]:
            folder_paths.folder_names_and_paths[name][0].append(path)


def model_folder_paths(name: str) -> list[str]:
    """Every search path ComfyUI knows for a registered model folder name."""
    import folder_paths

    register_model_folders()
    return list(folder_paths.get_folder_paths(name))


def comfy_progress(total: int, node_id: str | None = None) -> Callable[[int, int], None]:
    """A progress callback for champ_core: updates ComfyUI's progress bar and honours Cancel.

    champ_core calls it as `callback(done, total)`; ComfyUI's interruption check raises
    InterruptProcessingException inside it, which unwinds the library loop cleanly.
    """
    import comfy.model_management
    import comfy.utils

    bar = comfy.utils.ProgressBar(total, node_id=node_id)

    def callback(done: int, total_now: int | None = None) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total_now)

    return callback


def check_interrupted() -> None:
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


# --- IMAGE / MASK conversions -----------------------------------------------------------------
# ComfyUI IMAGE: float32 (B, H, W, C) in [0, 1], C = 3; MASK: float32 (B, H, W) in [0, 1].


def image_to_uint8(image: torch.Tensor, name: str) -> np.ndarray:
    """An IMAGE batch as uint8 (B, H, W, 3). Documented fallbacks: alpha is dropped, gray repeated."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise ChampNodeError(f"{name}: expected an IMAGE batch (B, H, W, C), got {getattr(image, 'shape', type(image))}")
    if image.shape[0] == 0:
        raise ChampNodeError(f"{name}: the IMAGE batch is empty (0 frames)")
    channels = image.shape[-1]
    if channels == 4:
        image = image[..., :3]
    elif channels == 1:
        image = image.repeat(1, 1, 1, 3)
    elif channels != 3:
        raise ChampNodeError(f"{name}: expected 3 colour channels, got {channels}")
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return array


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) or (T, H, W) -> ComfyUI IMAGE (T, H, W, 3) float32."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div(255.0)


def mask_to_uint8(mask: torch.Tensor, name: str) -> np.ndarray:
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise ChampNodeError(f"{name}: expected a MASK (B, H, W), got {getattr(mask, 'shape', type(mask))}")
    if mask.ndim == 2:
        mask = mask[None]
    return mask.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def uint8_to_mask(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div(255.0)
