"""The PyAV video writer: round trip, odd sizes, and no half-written file on errors."""

from __future__ import annotations

import numpy as np
import pytest

from champ_core.video import VideoError, VideoWriter, read_video, write_video


def _frames(n=12, h=32, w=48):
    t = np.linspace(0, 1, n)[:, None, None, None]
    y = np.linspace(0, 1, h)[None, :, None, None]
    x = np.linspace(0, 1, w)[None, None, :, None]
    rgb = np.concatenate([np.broadcast_to(x, (n, h, w, 1)), np.broadcast_to(y, (n, h, w, 1)),
                          np.broadcast_to(t, (n, h, w, 1))], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def test_round_trip_streamed_in_chunks(tmp_path):
    frames = _frames()
    path = tmp_path / "v.mp4"
    with VideoWriter(path, fps=12.5) as writer:
        for start in range(0, len(frames), 5):
            writer.write(frames[start:start + 5])
    assert writer.frames_written == 12
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape
    assert fps == pytest.approx(12.5)
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 3.0  # lossy codec, smooth content


def test_odd_size_is_padded(tmp_path):
    frames = _frames(3, 31, 45)
    decoded, _ = read_video(write_video(tmp_path / "odd.mp4", frames, 24))
    assert decoded.shape == (3, 32, 46, 3)


def test_error_inside_block_leaves_no_file(tmp_path):
    path = tmp_path / "cancelled.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, fps=24) as writer:
            writer.write(_frames(4))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_rewrite(tmp_path):
    path = write_video(tmp_path / "keep.mp4", _frames(3), 24)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=24) as writer:
            writer.write(_frames(2))
            raise RuntimeError("cancel")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_bad_frames_and_empty_video_are_clear_errors(tmp_path):
    with pytest.raises(VideoError, match="uint8"):
        with VideoWriter(tmp_path / "a.mp4", 24) as writer:
            writer.write(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(VideoError, match="frame size"):
        with VideoWriter(tmp_path / "b.mp4", 24) as writer:
            writer.write(np.zeros((1, 8, 8, 3), dtype=np.uint8))
            writer.write(np.zeros((1, 16, 8, 3), dtype=np.uint8))
    with pytest.raises(VideoError, match="no frames"):
        with VideoWriter(tmp_path / "c.mp4", 24):
            pass
    with pytest.raises(VideoError, match="fps"):
        VideoWriter(tmp_path / "d.mp4", 0)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match="cannot open"):
        read_video(tmp_path / "junk.mp4")
