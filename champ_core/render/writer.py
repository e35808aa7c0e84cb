"""Writing rendered guidance: a motion folder in the reference's layout, plus mp4 previews.

Layout (what the reference's data scripts produce and its loaders read):
    OUT/depth/0001.png       8-bit grayscale, as Blender writes it
    OUT/normal/0001.png      RGB
    OUT/semantic_map/0001.png RGB
    OUT/dwpose/0001.png      RGB
    OUT/mask/0001.png        8-bit grayscale, 0/255
    OUT/preview.mp4          the layers side by side (kept out of the layer folders: a stray video
                             inside one crashed the reference's loader)
    OUT/overlay.mp4          normal map and skeleton blended over the reference image
Everything is written into a temporary folder next to OUT and renamed into place at the end, so an
error or a cancelled run never leaves a half-written motion folder.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..atomic import blame_target, normal_dir_mode
from ..guidance import LAYER_NAMES, MASK, write_layer_frames

PREVIEW_NAME = "preview.mp4"
OVERLAY_NAME = "overlay.mp4"
OVERLAY_OPACITY = 0.7


class MotionFolderError(ValueError):
    """The output folder cannot be written (exists, or layers disagree in size or frame count)."""


def default_frame_names(num_frames: int) -> list[str]:
    """0001, 0002, ... (ffmpeg's numbering; never 0000, which the reference's Blender step loses)."""
    return [f"{i + 1:04d}" for i in range(num_frames)]


def _check_layers(layers: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[int, int]:
    sizes = set()
    for layer, frames in layers.items():
        if layer not in LAYER_NAMES:
            raise MotionFolderError(f"unknown guidance layer {layer!r}; expected one of {LAYER_NAMES}")
        if frames.dtype != np.uint8:
            raise MotionFolderError(f"layer {layer} must be uint8, got {frames.dtype}")
        if len(frames) != len(names):
            raise MotionFolderError(f"layer {layer} has {len(frames)} frames but there are {len(names)} frame names")
        sizes.add(frames.shape[1:3])
    if len(sizes) != 1:
        raise MotionFolderError(f"layers have different image sizes: {sorted(sizes)}")
    return next(iter(sizes))


def side_by_side(layers: Mapping[str, np.ndarray], t: int) -> np.ndarray:
    """One preview frame: the RGB layers in GUIDANCE order next to each other."""
    tiles = []
    for layer in LAYER_NAMES:
        if layer in layers:
            frame = layers[layer][t]
            tiles.append(np.repeat(frame[..., None], 3, -1) if frame.ndim == 2 else frame)
    return np.concatenate(tiles, axis=1)


def overlay_frame(reference: np.ndarray, layers: Mapping[str, np.ndarray], t: int) -> np.ndarray:
    """The normal map (inside the mask) and the skeleton (where drawn) blended over the reference."""
    out = reference.astype(np.float32)
    if "normal" in layers:
        mask = layers[MASK][t] > 0 if MASK in layers else layers["normal"][t].any(-1)
        out[mask] = (1 - OVERLAY_OPACITY) * out[mask] + OVERLAY_OPACITY * layers["normal"][t][mask]
    if "dwpose" in layers:
        drawn = layers["dwpose"][t].any(-1)
        out[drawn] = layers["dwpose"][t][drawn]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fit_reference(reference: np.ndarray, width: int, height: int) -> np.ndarray:
    """The reference image as uint8 RGB at the render size (resized if needed, for the preview only)."""
    from PIL import Image

    image = np.asarray(reference)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise MotionFolderError(f"reference image must be (H, W, 3) RGB; got shape {image.shape}")
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    if image.shape[:2] != (height, width):
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
    return image


class MotionFolderWriter:
    """Streams guidance frames, chunk by chunk, into a motion folder with its previews.

        with MotionFolderWriter("motion/", fps=24, reference=ref) as writer:
            for names, layers in chunks:          # layers: name -> uint8 frames of this chunk
                writer.write(layers, names)

    Files go to a temporary sibling folder that replaces OUT only when the block ends without an
    exception, so a long render never needs all frames in memory and never leaves half a folder.
    """

    def __init__(
        self,
        out_dir: str | Path,
        fps: float = 24.0,
        reference: np.ndarray | None = None,
        previews: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.fps = float(fps)
        self.reference = reference
        self.previews = previews
        self.overwrite = overwrite
        self.frames_written = 0
        self._layers: tuple[str, ...] | None = None
        self._size: tuple[int, int] | None = None
        self._videos: list = []
        self._background: np.ndarray | None = None
        self._staging: Path | None = None

    def __enter__(self) -> MotionFolderWriter:
        if self.out_dir.exists() and any(self.out_dir.iterdir()) and not self.overwrite:
            raise MotionFolderError(f"{self.out_dir} already exists and is not empty; choose another folder or overwrite")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", suffix=".partial", dir=self.out_dir.parent))
        normal_dir_mode(self._staging)  # mkdtemp makes it private (0700); a motion folder gets the usual mode
        return self

    def write(self, layers: Mapping[str, np.ndarray], names: Sequence[str]) -> None:
        """Append frames: `layers` name -> uint8 (N, H, W, 3) (mask (N, H, W)), `names` (N,) file stems."""
        if self._staging is None:
            raise MotionFolderError("use MotionFolderWriter in a `with` block")
        if not layers:
            raise MotionFolderError("no guidance layers to write")
        names = list(names)
        size = _check_layers(layers, names)
        if self._layers is None:
            self._layers, self._size = tuple(layers), size
        elif set(layers) != set(self._layers) or size != self._size:
            raise MotionFolderError(
                f"every chunk must hold the same layers and size: first {self._layers} {self._size}, now {tuple(layers)} {size}"
            )
        for layer, frames in layers.items():
            # depth is grey RGB in memory; on disk it is 8-bit grayscale as Blender writes it
            data = frames[..., 0] if layer == "depth" and frames.ndim == 4 else frames
            write_layer_frames(self._staging / layer, data, names)
        if self.previews:
            self._write_previews(layers, len(names))
        self.frames_written += len(names)

    def _write_previews(self, layers: Mapping[str, np.ndarray], count: int) -> None:
        if not self._videos:
            from ..video import VideoWriter

            height, width = self._size
            self._background = (
                fit_reference(self.reference, width, height)
                if self.reference is not None
                else np.zeros((height, width, 3), np.uint8)
            )
            for name in (PREVIEW_NAME, OVERLAY_NAME):
                video = VideoWriter(self._staging / name, fps=self.fps)
                video.__enter__()
                self._videos.append(video)
        preview, overlay = self._videos
        for t in range(count):
            preview.write(side_by_side(layers, t))
            overlay.write(overlay_frame(self._background, layers, t))

    def __exit__(self, exc_type, exc, tb) -> None:
        staging, self._staging = self._staging, None
        # name the folder asked for, not the temporary one
        named = blame_target(exc, self.out_dir, staging) if isinstance(exc, OSError) else exc
        try:
            for video in self._videos:
                if exc_type is None:
                    video.close()
                else:
                    video.abort()
            if exc_type is None and self.frames_written > 0:
                if self.out_dir.exists():
                    shutil.rmtree(self.out_dir)
                staging.rename(self.out_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        if exc_type is None and self.frames_written == 0:
            raise MotionFolderError(f"no frames were written to {self.out_dir}")
        if named is not exc:
            raise named from exc


def write_motion_folder(
    out_dir: str | Path,
    layers: Mapping[str, np.ndarray],
    frame_names: Sequence[str] | None = None,
    fps: float = 24.0,
    reference: np.ndarray | None = None,
    previews: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunk_frames: int = 16,
) -> Path:
    """Write `layers` (name -> uint8 (T, H, W, 3), mask (T, H, W)) as a motion folder; returns it.

    `progress(frames_done, total)` is called after each chunk of frames and may raise to cancel (the
    partial folder is removed).
    """
    if not layers:
        raise MotionFolderError("no guidance layers to write")
    num_frames = len(next(iter(layers.values())))
    names = list(frame_names) if frame_names is not None else default_frame_names(num_frames)
    _check_layers(layers, names)
    with MotionFolderWriter(out_dir, fps=fps, reference=reference, previews=previews, overwrite=overwrite) as writer:
        for start in range(0, num_frames, chunk_frames):
            stop = min(start + chunk_frames, num_frames)
            writer.write({name: frames[start:stop] for name, frames in layers.items()}, names[start:stop])
            if progress is not None:
                progress(stop, num_frames)
    return Path(out_dir)
