"""Guidance layers: the condition maps Champ is driven by, and their folder layout on disk.

The reference implementation reads a "motion folder" with one sub-folder per layer
(`depth/ normal/ semantic_map/ dwpose/ mask/`), one 8-bit PNG per frame, same names in every
sub-folder, names sorted as strings. In memory a layer is a uint8 array (T, H, W, 3); `mask` is
(T, H, W) with values 0/255.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

# The order of the four guidance encoders in the released weights (and their channel groups).
GUIDANCE_TYPES: tuple[str, ...] = ("depth", "normal", "semantic_map", "dwpose")
MASK = "mask"
LAYER_NAMES: tuple[str, ...] = (*GUIDANCE_TYPES, MASK)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class GuidanceFolderError(ValueError):
    """A motion folder that cannot be read as guidance layers (says which folder and why)."""


def list_frames(folder: Path) -> list[Path]:
    """Image files of one layer folder, sorted by name; other files are ignored (not crashed on)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def layer_frame_names(root: Path, layers: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Frame file stems per layer present under `root` (only layers that exist as folders)."""
    root = Path(root)
    if not root.is_dir():
        raise GuidanceFolderError(f"guidance folder {root} does not exist")
    names = {}
    for layer in layers or LAYER_NAMES:
        folder = root / layer
        if folder.is_dir():
            names[layer] = [p.stem for p in list_frames(folder)]
    return names


def check_frame_lists(names: Mapping[str, list[str]], root: Path) -> list[str]:
    """The common frame list; a clear error if layers disagree or are empty."""
    if not names:
        raise GuidanceFolderError(
            f"{root} has none of the layer folders {', '.join(LAYER_NAMES)}; expected the reference's motion layout"
        )
    counts = {layer: len(frames) for layer, frames in names.items()}
    empty = [layer for layer, count in counts.items() if count == 0]
    if empty:
        raise GuidanceFolderError(f"{root}: layer folder(s) {', '.join(empty)} hold no image frames")
    first_layer, first = next(iter(names.items()))
    for layer, frames in names.items():
        if len(frames) != len(first):
            raise GuidanceFolderError(f"{root}: frame counts differ between layers: {counts}")
        if frames != first:
            missing = sorted(set(first) - set(frames))[:5]
            raise GuidanceFolderError(
                f"{root}: layer '{layer}' has different frame names from '{first_layer}' (e.g. missing {missing})"
            )
    return list(first)


def write_layer_frames(folder: Path, frames: np.ndarray, names: list[str]) -> None:
    """Write one layer as PNGs; (T, H, W) arrays become grayscale, (T, H, W, 3) RGB."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(frames) != len(names):
        raise ValueError(f"{len(frames)} frames but {len(names)} names for {folder}")
    for frame, name in zip(frames, names):
        Image.fromarray(np.ascontiguousarray(frame)).save(folder / f"{name}.png")
