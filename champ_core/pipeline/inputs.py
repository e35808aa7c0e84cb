"""Input handling: the reference image and the guidance frames, brought to the generation size.

Images. Anything PIL opens, or arrays: uint8 or float in [0, 1], (H, W), (H, W, 1), (H, W, 3) or
(H, W, 4). Grayscale is expanded to RGB; an alpha channel is composited over a solid background
(white for the reference, black for guidance maps, whose background is black by construction).

Size rule (`fit`), applied the same way to the reference and to every guidance frame, each from its
own size to the generation size (width x height):
- "squash" (default, the reference's behaviour): plain resize, aspect ratio not kept;
- "crop": scale to cover the target, then cut the centre;
- "pad": scale to fit inside the target, then pad equally on both sides (reference: background
  colour; guidance: black).
Guidance maps rendered at the reference's own size therefore stay aligned with it under every rule.
Resampling follows the reference: Lanczos for the reference image (the VAE path), PIL's default
bicubic for guidance maps; the CLIP input is the reference squashed to 224x224 (bicubic) whatever
`fit` says, as in the reference.

Guidance sources hand out frames per window, so a long clip is never held in memory whole:
`ArrayGuidance` (arrays already in memory, e.g. from ComfyUI) and `FolderGuidance` (the reference's
motion folder `depth/ normal/ semantic_map/ dwpose/ mask/`, read on demand). Semantic maps are
multiplied by the mask where one is given, as the reference does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..guidance import GUIDANCE_TYPES, MASK, check_frame_lists, layer_frame_names, list_frames

FITS = ("squash", "crop", "pad")
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


class InputError(ValueError):
    """A reference image or guidance input the pipeline cannot use (says what to change)."""


def check_finite(values, what: str) -> None:
    """An InputError naming `what` when a float array/tensor holds NaN or infinite values.

    Such values come from a broken upstream step (a node that divided by zero, a damaged file);
    passed on they give black or noisy frames far from their cause, so they stop here.
    """
    if hasattr(values, "detach"):  # torch
        import torch

        if values.is_floating_point() and values.numel() and not bool(torch.isfinite(values).all()):
            bad = int((~torch.isfinite(values)).sum())
            raise InputError(f"{what} holds {bad} NaN or infinite value(s) out of {values.numel()}; "
                             "check the step that produced it")
        return
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.floating) and array.size and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"{what} holds {bad} NaN or infinite value(s) out of {array.size}; "
                         "check the step that produced it")


def images_to_uint8(batch, what: str = "image") -> np.ndarray:
    """A ComfyUI IMAGE batch (B, H, W, C) float in [0, 1] (C = 1, 3 or 4) -> uint8 (B, H, W, 3).

    NaN/inf refused (InputError naming `what`); values outside [0, 1] are clipped; alpha is dropped
    and gray repeated (the documented fallbacks for IMAGE inputs).
    """
    if not hasattr(batch, "shape") or len(batch.shape) != 4:
        raise InputError(f"{what}: expected an IMAGE batch (B, H, W, C), got {getattr(batch, 'shape', type(batch))}")
    if batch.shape[0] == 0:
        raise InputError(f"{what}: the IMAGE batch is empty (0 frames)")
    channels = batch.shape[-1]
    if channels not in (1, 3, 4):
        raise InputError(f"{what}: expected 1, 3 or 4 colour channels, got {channels}")
    check_finite(batch, what)
    if hasattr(batch, "detach"):
        batch = batch.detach().float().cpu().numpy()
    array = np.asarray(batch)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if channels == 4:
        array = array[..., :3]
    elif channels == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


# -- single images ---------------------------------------------------------------------------

def to_rgb_uint8(image, background: tuple[int, int, int] = WHITE) -> np.ndarray:
    """Any supported image (path, PIL image, array) -> uint8 (H, W, 3) RGB."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image file {path} does not exist")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except OSError as exc:
            raise InputError(f"cannot read {path} as an image: {exc}") from exc
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        elif image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: keep the range
            image = Image.fromarray((np.asarray(image, dtype=np.float64) / 65535.0 * 255).round().astype(np.uint8))
        elif image.mode != "RGB":
            image = image.convert("RGB")
        array = np.asarray(image)
    elif hasattr(image, "detach"):  # a torch tensor (ComfyUI IMAGE frames are (H, W, C) float)
        array = image.detach().float().cpu().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    else:
        array = np.asarray(image)
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"image arrays must be uint8 or float in [0, 1], got {array.dtype}")
        if not np.isfinite(array).all():
            raise InputError("image array holds NaN or infinite values")
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or min(array.shape[:2]) < 1:
        raise InputError(f"expected an image of shape (H, W), (H, W, 1|3|4), got {array.shape}")
    channels = array.shape[-1]
    if channels in (2, 4):  # gray+alpha or RGBA: composite over the background
        color, alpha = array[..., :-1], array[..., -1:].astype(np.float32) / 255.0
        if color.shape[-1] == 1:
            color = np.repeat(color, 3, axis=-1)
        bg = np.asarray(background, dtype=np.float32)
        array = (color.astype(np.float32) * alpha + bg * (1.0 - alpha)).round().astype(np.uint8)
    elif channels == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def fit_image(
    image: np.ndarray, width: int, height: int, fit: str = "squash", resample: str = "bicubic",
    fill: tuple[int, int, int] = BLACK,
) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (height, width, 3) by the `fit` rule (see the module docstring)."""
    from PIL import Image

    if fit not in FITS:
        raise InputError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    filters = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
               "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    pil = Image.fromarray(image)
    if fit == "squash":
        return np.asarray(pil.resize((width, height), filters[resample]))
    scale = max(width / w, height / h) if fit == "crop" else min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(pil.resize((new_w, new_h), filters[resample]))
    if fit == "crop":
        top, left = (new_h - height) // 2, (new_w - width) // 2
        return np.ascontiguousarray(resized[top:top + height, left:left + width])
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = np.asarray(fill, dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def prepare_reference(
    image, width: int, height: int, fit: str = "squash", background: tuple[int, int, int] = WHITE
) -> tuple[np.ndarray, np.ndarray]:
    """The reference as (VAE input (height, width, 3), CLIP input (224, 224, 3)), both uint8."""
    from PIL import Image

    rgb = to_rgb_uint8(image, background)
    vae_input = fit_image(rgb, width, height, fit, resample="lanczos", fill=background)
    clip_input = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.Resampling.BICUBIC))
    return vae_input, clip_input


# -- guidance --------------------------------------------------------------------------------

class GuidanceSource(Protocol):
    """Guidance frames handed out by index (a window at a time)."""

    types: tuple[str, ...]
    num_frames: int

    def read(self, indices: Sequence[int], width: int, height: int, fit: str) -> dict[str, np.ndarray]:
        """type -> uint8 (len(indices), height, width, 3) for every type in `types`."""
        ...


def _check_types(types: Sequence[str], where: str) -> tuple[str, ...]:
    unknown = [t for t in types if t not in GUIDANCE_TYPES]
    if unknown:
        raise InputError(f"{where}: unknown guidance type(s) {unknown}; known types: {', '.join(GUIDANCE_TYPES)}")
    ordered = tuple(t for t in GUIDANCE_TYPES if t in types)
    if not ordered:
        raise InputError(f"{where}: no guidance given; provide at least one of {', '.join(GUIDANCE_TYPES)}")
    return ordered


def _apply_mask(semantic: np.ndarray, mask) -> np.ndarray:
    mask = to_rgb_uint8(mask, BLACK)
    if mask.shape[:2] != semantic.shape[:2]:
        raise InputError(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from the semantic map's "
                         f"{semantic.shape[1]}x{semantic.shape[0]}")
    return np.where(mask > 0, semantic, 0).astype(np.uint8)


class ArrayGuidance:
    """Guidance layers already in memory: type -> frames (T, H, W[, C]) uint8 or float in [0, 1]."""

    def __init__(self, layers: Mapping[str, object], mask=None) -> None:
        layers = {k: v for k, v in layers.items() if v is not None}
        self.types = _check_types(list(layers), "guidance")
        self._layers = {t: layers[t] for t in self.types}
        counts = {t: len(v) for t, v in self._layers.items()}
        if mask is not None:
            counts[MASK] = len(mask)
        if len(set(counts.values())) != 1:
            raise InputError(f"guidance layers have different frame counts: {counts}; give every layer "
                             "the same number of frames (trim the longer ones)")
        self.num_frames = next(iter(counts.values()))
        if self.num_frames == 0:
            raise InputError("guidance has no frames; give at least one frame per layer")
        self._mask = mask

    def read(self, indices: Sequence[int], width: int, height: int, fit: str) -> dict[str, np.ndarray]:
        out = {}
        for kind, frames in self._layers.items():
            batch = []
            for i in indices:
                frame = to_rgb_uint8(frames[i], BLACK)
                if kind == "semantic_map" and self._mask is not None:
                    frame = _apply_mask(frame, self._mask[i])
                batch.append(fit_image(frame, width, height, fit))
            out[kind] = np.stack(batch)
        return out


class FolderGuidance:
    """The reference's motion folder, read on demand; `frames` selects a slice of the sorted frames."""

    def __init__(self, root, types: Sequence[str] | None = None, frames: slice | None = None) -> None:
        self.root = Path(root)
        try:
            names = layer_frame_names(self.root)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        present = [t for t in (types or GUIDANCE_TYPES) if t in names]
        if types is not None:
            missing = [t for t in types if t not in names]
            if missing:
                raise InputError(f"{self.root} has no folder for guidance type(s) {missing}")
        self.types = _check_types(present, str(self.root))
        layers = {t: names[t] for t in self.types}
        self.use_mask = "semantic_map" in self.types and MASK in names
        if self.use_mask:
            layers[MASK] = names[MASK]
        try:
            common = check_frame_lists(layers, self.root)
        except ValueError as exc:
            raise InputError(f"{exc}; every layer folder needs the same frame files") from exc
        self._files = {t: {p.stem: p for p in list_frames(self.root / t)} for t in layers}
        selected = common[frames] if frames is not None else common
        if not selected:
            raise InputError(f"{self.root}: the frame range {frames} selects no frames out of {len(common)}")
        self.frame_names = list(selected)
        self.num_frames = len(self.frame_names)

    def load_frame(self, kind: str, index: int) -> np.ndarray:
        """One frame of one type at its own size, uint8 (H, W, 3); semantic maps masked (training reads this)."""
        name = self.frame_names[index]
        frame = to_rgb_uint8(self._files[kind][name], BLACK)
        if kind == "semantic_map" and self.use_mask:
            frame = _apply_mask(frame, self._files[MASK][name])
        return frame

    def _load(self, kind: str, index: int, width: int, height: int, fit: str) -> np.ndarray:
        return fit_image(self.load_frame(kind, index), width, height, fit)

    def read(self, indices: Sequence[int], width: int, height: int, fit: str) -> dict[str, np.ndarray]:
        from concurrent.futures import ThreadPoolExecutor

        # PNG decoding and resizing release the GIL: a few threads hide most of the disk/decode time
        jobs = [(kind, i) for kind in self.types for i in indices]
        workers = max(1, min(8, (os.cpu_count() or 1), len(jobs)))
        with ThreadPoolExecutor(workers) as pool:
            frames = list(pool.map(lambda job: self._load(job[0], job[1], width, height, fit), jobs))
        n = len(indices)
        return {kind: np.stack(frames[k * n:(k + 1) * n]) for k, kind in enumerate(self.types)}


def parse_frame_range(text: str | None) -> slice | None:
    """'A:B' (Python slice, end exclusive; either side may be empty) -> slice."""
    if not text:
        return None
    parts = text.split(":")
    if len(parts) != 2:
        raise InputError(f"frame range {text!r} must look like A:B (e.g. 0:100)")
    try:
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError as exc:
        raise InputError(f"frame range {text!r} must hold integers, like 0:100") from exc
    return slice(start, stop)
