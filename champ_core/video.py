"""Small PyAV video writer and reader.

`VideoWriter` streams uint8 RGB frames into an H.264 mp4 (or any container PyAV knows). It writes
to a temporary name next to the target and renames it into place only when the `with` block
ends without an exception; on an exception (a cancelled run included) the partial file is
deleted, so a half-written video never appears under the requested name.

    with VideoWriter("out.mp4", fps=24) as writer:
        for chunk in chunks:            # uint8 (N, H, W, 3) or (H, W, 3)
            writer.write(chunk)

The size is taken from the first frame unless given. yuv420p (what every player plays) needs
even sizes, so odd widths/heights are padded by repeating the last column/row.

PyAV is imported lazily (inside the functions), so importing this module is cheap.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from .atomic import blame_target


class VideoError(ValueError):
    """Frames that cannot be written, or a file that cannot be read as a video."""


def _as_fraction(fps: float) -> Fraction:
    if not fps or fps <= 0 or not np.isfinite(fps):
        raise VideoError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Streaming video writer (context manager); see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int | None = None,
        height: int | None = None,
        codec: str = "libx264",
        crf: int = 18,
        pix_fmt: str = "yuv420p",
    ) -> None:
        self.path = Path(path)
        self.fps = _as_fraction(fps)
        self.width = width
        self.height = height
        self.codec = codec
        self.crf = crf
        self.pix_fmt = pix_fmt
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._tmp_path: Path | None = None

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=f".partial{self.path.suffix or '.mp4'}",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp_path = Path(tmp)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            named = blame_target(exc, self.path, self._tmp_path) if isinstance(exc, OSError) else exc
            self.abort()
            if named is not exc:  # name the video asked for, not its temporary name
                raise named from exc

    # -- writing ---------------------------------------------------------------------------
    def _open(self, height: int, width: int) -> None:
        import av

        if self._tmp_path is None:
            raise VideoError("use VideoWriter as a context manager: `with VideoWriter(...) as w:`")
        fmt = "mp4" if self.path.suffix.lower() in ("", ".mp4", ".m4v") else None
        self._container = av.open(str(self._tmp_path), mode="w", format=fmt)
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width = width + (width % 2 if self.pix_fmt == "yuv420p" else 0)
        stream.height = height + (height % 2 if self.pix_fmt == "yuv420p" else 0)
        stream.pix_fmt = self.pix_fmt
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf)}
        self._stream = stream
        self.width, self.height = width, height

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames: (N, H, W, 3) or a single (H, W, 3)."""
        import av

        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise VideoError(f"expected uint8 frames of shape (N, H, W, 3), got {frames.shape}")
        if frames.dtype != np.uint8:
            raise VideoError(f"expected uint8 frames, got {frames.dtype}; convert with (x * 255).round()")
        n, h, w, _ = frames.shape
        if self._container is None:
            self._open(h, w) if self.width is None or self.height is None else self._open(self.height, self.width)
        if (h, w) != (self.height, self.width):
            raise VideoError(f"frame size {w}x{h} differs from the video's {self.width}x{self.height}")
        pad_h = self._stream.height - h
        pad_w = self._stream.width - w
        for frame in frames:
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
        self.frames_written += n

    def close(self) -> None:
        """Flush the encoder and move the finished file to its final name."""
        if self._tmp_path is None:
            return
        try:
            if self._container is None:
                raise VideoError(f"no frames were written to {self.path}")
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp_path, 0o666 & ~umask)  # mkstemp made it private; give it normal permissions
            os.replace(self._tmp_path, self.path)
            self._tmp_path = None
        except BaseException as exc:
            named = blame_target(exc, self.path, self._tmp_path) if isinstance(exc, OSError) else exc
            self.abort()
            if named is not exc:
                raise named from exc
            raise

    def abort(self) -> None:
        """Drop the partial file (called on errors and cancellation)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the container may be in any state after an error
                pass
            self._container = None
        if self._tmp_path is not None:
            self._tmp_path.unlink(missing_ok=True)
            self._tmp_path = None


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, **kwargs) -> Path:
    """Write a whole uint8 (T, H, W, 3) array as a video; returns the path."""
    with VideoWriter(path, fps, **kwargs) as writer:
        writer.write(frames)
    return Path(path)


def iter_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video frame by frame as uint8 (H, W, 3) RGB arrays."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FileNotFoundError, av.error.InvalidDataError) as exc:
        raise VideoError(f"cannot open {path} as a video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a whole video: uint8 (T, H, W, 3) RGB frames and the frame rate."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.base_rate or 0)
    except (av.error.FileNotFoundError, av.error.InvalidDataError, IndexError) as exc:
        raise VideoError(f"cannot open {path} as a video: {exc}") from exc
    frames = list(iter_video_frames(path))
    if not frames:
        raise VideoError(f"{path} holds no frames")
    return np.stack(frames), fps
