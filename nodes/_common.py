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


# --- input files: ComfyUI's input folder plus the pack's own example inputs --------------------
# The pack ships example inputs (reference photo, motion, keypoints) in PACK/example_inputs. Loaders
# list them after the input folder's files as "NAME [champ example]" (ComfyUI's own annotation style,
# like "x.png [output]"), and read them from the pack folder: nothing is copied into the user's folders.

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_INPUTS_DIR = os.path.join(PACK_DIR, "example_inputs")
EXAMPLE_TAG = " [champ example]"
NO_INPUT_FILE = "(no file in ComfyUI's input folder)"


def example_files(suffixes: tuple[str, ...]) -> list[str]:
    """The pack's example inputs with one of `suffixes`, as combo entries ("NAME [champ example]")."""
    if not os.path.isdir(EXAMPLE_INPUTS_DIR):
        return []
    return [name + EXAMPLE_TAG for name in sorted(os.listdir(EXAMPLE_INPUTS_DIR))
            if name.lower().endswith(suffixes) and os.path.isfile(os.path.join(EXAMPLE_INPUTS_DIR, name))]


def input_files(suffixes: tuple[str, ...]) -> list[str]:
    """Files in ComfyUI's input folder (recursively, '/'-separated) with one of `suffixes`, then the
    pack's example inputs; a placeholder when there is neither."""
    import folder_paths

    root = folder_paths.get_input_directory()
    found = []
    for current, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(suffixes):
                found.append(os.path.relpath(os.path.join(current, name), root).replace(os.sep, "/"))
    return found + example_files(suffixes) or [NO_INPUT_FILE]


def inside(path: str, root: str) -> bool:
    """Whether `path` (symlinks resolved) lies in `root`."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def resolve_input_file(name: str, what: str, suffixes: tuple[str, ...]) -> str:
    """The file a loader's combo value names: in ComfyUI's input folder, or a pack example input.

    Raises ChampNodeError naming the file, the folder and what to do; paths leaving the input folder
    (absolute paths, '..') are refused."""
    import folder_paths

    input_dir = folder_paths.get_input_directory()
    kinds = "/".join(suffixes)
    if name.endswith(EXAMPLE_TAG):
        stem = name[: -len(EXAMPLE_TAG)]
        path = os.path.join(EXAMPLE_INPUTS_DIR, stem)
        if os.path.basename(stem) != stem or not os.path.isfile(path):
            raise ChampNodeError(f"{what} '{name}' is not one of the pack's example inputs "
                                 f"({', '.join(example_files(suffixes)) or 'none'}); pick another file")
        return path
    if name == NO_INPUT_FILE:
        raise ChampNodeError(f"no {what} in {input_dir}: put a {kinds} file there (or upload one with the "
                             "node's upload button), then press R to refresh")
    path = os.path.join(input_dir, name)
    if os.path.isabs(name) or not inside(path, input_dir):
        raise ChampNodeError(f"{what} '{name}' is outside ComfyUI's input folder {input_dir}; put the file "
                             "into that folder and pick it by its name there")
    if not name.lower().endswith(suffixes):
        raise ChampNodeError(f"{what} '{name}' is not a {kinds} file; pick a {kinds} file")
    if not os.path.isfile(path):
        raise ChampNodeError(f"{what} '{name}' not found in {input_dir}: put the {kinds} file there (or "
                             "upload it with the node's upload button), then press R to refresh")
    return path


def resolve_input_folder(name: str, what: str) -> str:
    """A folder inside ComfyUI's input folder (relative name); absolute paths and '..' that leave
    the input folder are refused."""
    import folder_paths

    input_dir = folder_paths.get_input_directory()
    path = os.path.join(input_dir, name)
    if not name.strip() or os.path.isabs(name) or not inside(path, input_dir):
        raise ChampNodeError(f"{what} '{name}' is not inside ComfyUI's input folder {input_dir}; put the "
                             "folder there and give its name relative to it (e.g. motion-01)")
    if not os.path.isdir(path):
        raise ChampNodeError(f"{what} '{name}' not found in {input_dir}: put the folder (depth/ normal/ "
                             "semantic_map/ dwpose/ mask/ sub-folders of PNG frames) there")
    return path


def file_fingerprint(path: str) -> str:
    """What IS_CHANGED returns for a file: its resolved path, size and modification time, so a file
    replaced under the same name is read again."""
    try:
        info = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{os.path.realpath(path)}:{info.st_size}:{info.st_mtime_ns}"


def folder_fingerprint(path: str) -> str:
    """IS_CHANGED for a folder tree: every file's relative name, size and modification time."""
    entries = []
    for current, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(current, name)
            try:
                info = os.stat(full)
            except OSError:
                continue
            entries.append(f"{os.path.relpath(full, path)}:{info.st_size}:{info.st_mtime_ns}")
    import hashlib

    return hashlib.sha256("\n".join([os.path.realpath(path), *entries]).encode()).hexdigest()


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
    return _to_uint8(image)


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded, in few passes (video batches are hundreds of MB as float)."""
    scaled = values.detach().to(torch.float32).mul(255.0)  # a new tensor: the input is never modified
    return scaled.round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) or (T, H, W) -> ComfyUI IMAGE (T, H, W, 3) float32."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)


def mask_to_uint8(mask: torch.Tensor, name: str) -> np.ndarray:
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise ChampNodeError(f"{name}: expected a MASK (B, H, W), got {getattr(mask, 'shape', type(mask))}")
    if mask.ndim == 2:
        mask = mask[None]
    return _to_uint8(mask)


def temp_preview(pixels: np.ndarray, prefix: str) -> dict:
    """An (H, W, 3) uint8 picture as a PNG in ComfyUI's temp folder, in the `ui.images` entry format
    (what Preview Image does), for a node's own preview."""
    import uuid

    import folder_paths
    from PIL import Image

    folder = os.path.join(folder_paths.get_temp_directory(), "champ_preview")
    os.makedirs(folder, exist_ok=True)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}.png"
    Image.fromarray(pixels).save(os.path.join(folder, name), compress_level=1)
    return {"filename": name, "subfolder": "champ_preview", "type": "temp"}


def uint8_to_mask(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)


def guidance_arrays(guidance: dict) -> dict[str, np.ndarray]:
    """A CHAMP_GUIDANCE's layers as uint8 arrays (converted once by Champ Guidance Layers)."""
    return guidance.get("uint8") or {name: image_to_uint8(img, name) for name, img in guidance["layers"].items()}
