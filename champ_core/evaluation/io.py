"""Reading evaluation inputs: mp4 (any video PyAV decodes) or folders of frames; pairing videos by name."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import EvaluationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".gif")


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Source:
    """One video: a video file or a folder of frames."""

    path: Path

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    def probe(self) -> tuple[int | None, tuple[int, int]]:
        """(frame count or None when the container does not say, (width, height)) without decoding all frames."""
        if self.is_folder:
            files = frame_files(self.path)
            if not files:
                raise EvaluationError(f"{self.path} holds no frames ({', '.join(IMAGE_SUFFIXES)})")
            return len(files), _image_size(files[0])
        import av

        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise EvaluationError(f"{self.path} has no video stream")
                stream = container.streams.video[0]
                count = stream.frames or None
                return count, (stream.codec_context.width, stream.codec_context.height)
        except EvaluationError:
            raise
        except (av.error.FFmpegError, OSError) as exc:
            raise EvaluationError(f"cannot open {self.path} as a video ({_first_line(exc)}); check the file") from exc

    def read(self) -> np.ndarray:
        """All frames as uint8 (T, H, W, 3) RGB."""
        if self.is_folder:
            return _read_folder(self.path)
        return _read_video(self.path)


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc).strip())
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise EvaluationError(f"cannot read image {path} ({_first_line(exc)})") from exc


def _read_folder(folder: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = frame_files(folder)
    if not files:
        raise EvaluationError(f"{folder} holds no frames ({', '.join(IMAGE_SUFFIXES)})")
    frames, size = [], None
    for path in files:
        try:
            with Image.open(path) as image:
                frame = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise EvaluationError(f"cannot read image {path} ({_first_line(exc)})") from exc
        if size is None:
            size = frame.shape
        elif frame.shape != size:
            raise EvaluationError(f"{path} is {frame.shape[1]}x{frame.shape[0]}, the first frame of {folder} is "
                                  f"{size[1]}x{size[0]}; all frames of a video must have one size")
        frames.append(frame)
    return np.stack(frames)


def _read_video(path: Path) -> np.ndarray:
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise EvaluationError(f"{path} has no video stream")
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
    except EvaluationError:
        raise
    except (av.error.FFmpegError, OSError) as exc:
        raise EvaluationError(f"cannot decode {path} as a video ({_first_line(exc)}); check the file") from exc
    if not frames:
        raise EvaluationError(f"{path} holds no decodable frames; check the file")
    return np.stack(frames)


# --- pairing ----------------------------------------------------------------------------------


def _videos_in(folder: Path) -> dict[str, Source]:
    """Videos of a folder of videos: video files (by stem) and sub-folders of frames (by name)."""
    found: dict[str, Source] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if is_video_file(entry) or (entry.is_dir() and frame_files(entry)):
            name = entry.stem if entry.is_file() else entry.name
            if name in found:
                raise EvaluationError(f"{folder} holds two videos named {name!r} ({found[name].path.name}, "
                                      f"{entry.name}); rename one")
            found[name] = Source(entry)
    return found


def _kind(path: Path, what: str) -> str:
    if not path.exists():
        raise EvaluationError(f"{what} {path} does not exist")
    if path.is_file():
        if not is_video_file(path):
            raise EvaluationError(f"{what} {path} is not a video ({', '.join(VIDEO_SUFFIXES)}) nor a folder")
        return "video"
    if frame_files(path):
        return "video"
    if _videos_in(path):
        return "collection"
    raise EvaluationError(f"{what} {path} holds neither frames nor videos")


def pair_sources(pred: str | os.PathLike, gt: str | os.PathLike) -> list[tuple[str, Source, Source]]:
    """(name, prediction, ground truth) for each video; several videos are matched by name."""
    pred, gt = Path(pred), Path(gt)
    kinds = _kind(pred, "PRED"), _kind(gt, "GT")
    if kinds == ("video", "video"):
        name = pred.stem if pred.is_file() else pred.name
        return [(name, Source(pred), Source(gt))]
    if kinds != ("collection", "collection"):
        one = "PRED" if kinds[0] == "video" else "GT"
        raise EvaluationError(f"{one} is a single video but the other side is a folder of videos; give two videos "
                              f"or two folders of videos")
    pred_videos, gt_videos = _videos_in(pred), _videos_in(gt)
    only_pred = [n for n in pred_videos if n not in gt_videos]
    only_gt = [n for n in gt_videos if n not in pred_videos]
    if only_pred or only_gt:
        parts = []
        if only_pred:
            parts.append(f"only in PRED: {', '.join(only_pred[:5])}" + (" ..." if len(only_pred) > 5 else ""))
        if only_gt:
            parts.append(f"only in GT: {', '.join(only_gt[:5])}" + (" ..." if len(only_gt) > 5 else ""))
        raise EvaluationError(f"videos are matched by name and {'; '.join(parts)}")
    return [(name, pred_videos[name], gt_videos[name]) for name in pred_videos]


def check_sources(pairs: list[tuple[str, Source, Source]]) -> None:
    """Cheap checks before any decoding: frame counts (where known) and sizes agree per pair."""
    for name, pred, gt in pairs:
        (count_p, size_p), (count_g, size_g) = pred.probe(), gt.probe()
        if count_p is not None and count_g is not None and count_p != count_g:
            raise EvaluationError(f"{name}: {pred.path} has {count_p} frames, {gt.path} has {count_g}; "
                                  f"evaluate videos of equal length")
        if size_p != size_g:
            raise EvaluationError(f"{name}: {pred.path} is {size_p[0]}x{size_p[1]}, {gt.path} is "
                                  f"{size_g[0]}x{size_g[1]}; resize one side first")
