"""Training data layout: finding videos, the schema check (library and CLI), the atomic video writer."""

from __future__ import annotations

import json
import shutil
import stat

import numpy as np
import pytest
from PIL import Image
from train_data_helpers import frame_index, index_frames, write_index_video

from champ_core.cli import main
from champ_core.train.datasets import ImagePairDataset, VideoClipDataset
from champ_core.train.layout import DatasetError, VideoLayoutWriter, check_dataset, find_videos


@pytest.fixture
def good(tmp_path):
    """A two-level data folder: parts a (2 videos) and b (1 video), 5 frames each, 24 x 20 pixels."""
    root = tmp_path / "data"
    for part, name in (("a", "v1"), ("a", "v2"), ("b", "v3")):
        write_index_video(root / part / name, 5, width=24, height=20, bboxes="default")
    return root


def check_error(root, match, **kwargs):
    with pytest.raises(DatasetError, match=match) as info:
        check_dataset(root, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# -- layouts ----------------------------------------------------------------------------------

def test_two_level_layout_and_named_parts(good):
    summary = check_dataset(good, bbox_crop=True)
    assert (summary.videos, summary.frames, summary.parts) == (3, 15, ["a", "b"])
    assert summary.verified_files == 3 * 5 * 6
    assert [e.name for e in find_videos(good, ["b"])] == ["b/v3"]
    assert [e.name for e in find_videos(good, ["all"])] == ["a/v1", "a/v2", "b/v3"]
    check_error(good, r"data part 'c' listed in data_parts is not a folder", data_parts=["c"])


def test_one_level_layout_and_jpeg(tmp_path):
    root = tmp_path / "flat"
    write_index_video(root / "clip01", 6, width=32, height=32, image_format="jpg")
    write_index_video(root / "clip02", 6, width=32, height=32)
    (root / "clip01" / "depth" / "notes.txt").write_text("ignored")  # a stray file is not a frame
    summary = check_dataset(root)
    assert (summary.videos, summary.frames, summary.parts) == (2, 12, [""])
    assert sorted(p.suffix for p in (root / "clip01" / "images").iterdir()) == [".jpg"] * 6
    ds = ImagePairDataset(root, image_size=16, sample_margin=5, seed=0)
    for draw in range(4):
        item = ds[draw]
        assert item["tgt_img"].shape == (3, 16, 16) and item["tgt_guid"].shape == (12, 16, 16)
        red = (item["tgt_img"][0] + 1) / 2 * 255
        if ds.video_of(draw) == 0:  # JPEG: the index survives within the codec's error
            ref = (item["ref_img"][0] + 1) / 2 * 255
            assert abs(float(red.mean() - ref.mean())) > 3  # 5 frames apart
            assert float(red.max() - red.min()) < 4
        else:
            assert {frame_index(item["tgt_img"]), frame_index(item["ref_img"])} == {0, 5}


def test_staging_folders_are_ignored(good):
    (good / "a" / ".v9.x1y2.partial" / "images").mkdir(parents=True)
    assert [e.name for e in find_videos(good)] == ["a/v1", "a/v2", "b/v3"]


# -- malformed data: each case its own named error --------------------------------------------

def test_no_videos(tmp_path):
    check_error(tmp_path / "missing", r"does not exist")
    (tmp_path / "empty").mkdir()
    check_error(tmp_path / "empty", r"no videos found")
    (tmp_path / "empty" / "part").mkdir()
    check_error(tmp_path / "empty", r"no videos found")
    write_index_video(tmp_path / "one", 2, width=8, height=8)
    check_error(tmp_path / "one", r"is itself a video folder .*its parent")


def test_frame_counts_differ(good):
    (good / "a" / "v2" / "normal" / "0003.png").unlink()
    message = check_error(good, r"video a/v2 .*frame counts differ")
    assert "'images': 5" in message and "'normal': 4" in message


def test_frame_names_differ(good):
    folder = good / "b" / "v3" / "dwpose"
    (folder / "0005.png").rename(folder / "0009.png")
    check_error(good, r"video b/v3 .*different frame names")


def test_mask_missing_while_semantic_map_used(good):
    shutil.rmtree(good / "a" / "v1" / "mask")
    check_error(good, r"video a/v1 .*mask/ is missing while semantic_map is used")
    assert check_dataset(good, guids=["depth", "normal", "dwpose"]).videos == 3


def test_missing_guidance_folder(good):
    shutil.rmtree(good / "b" / "v3" / "depth")
    check_error(good, r"video b/v3 .*no depth/ folder")
    assert check_dataset(good, guids=["normal"]).videos == 3


def test_empty_folder(good):
    for path in (good / "a" / "v2" / "semantic_map").iterdir():
        path.unlink()
    check_error(good, r"video a/v2 .*empty folder semantic_map/")
    for path in (good / "a" / "v1" / "images").iterdir():
        path.unlink()
    check_error(good, r"video a/v1 .*empty folder images/")


def test_video_without_images(good):
    shutil.rmtree(good / "a" / "v1" / "images")
    check_error(good, r"video a/v1 .*no images/ folder")


@pytest.mark.parametrize("damage", ["garbage", "truncated_png", "truncated_jpeg"])
def test_unreadable_image(tmp_path, damage):
    root = tmp_path / "data"
    write_index_video(root / "v1", 4, width=40, height=40)
    write_index_video(root / "v2", 4, width=40, height=40, image_format="jpg" if damage == "truncated_jpeg" else "png")
    if damage == "garbage":
        bad = root / "v2" / "normal" / "0002.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    else:
        bad = root / "v2" / "images" / ("0003.jpg" if damage == "truncated_jpeg" else "0003.png")
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    relative = bad.relative_to(root / "v2")
    check_error(root, rf"video v2 .*unreadable image {relative}")
    assert check_dataset(root, verify_images=False).videos == 2  # the layout alone is fine


def test_frame_sizes_differ(good):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(good / "b" / "v3" / "dwpose" / "0002.png")
    check_error(good, r"video b/v3 .*frame sizes differ: .* dwpose/0002.png is 30x20")


def test_bbox_file_wrong_length_or_missing(good):
    path = good / "a" / "v2" / "human_bbox.json"
    path.write_text(json.dumps([[0, 0, 10, 10]] * 4))
    check_error(good, r"video a/v2 .*human_bbox.json has 4 boxes for 5 frames")
    path.write_text(json.dumps([[0, 0, 10]] * 5))
    check_error(good, r"video a/v2 .*box 0 is \[0, 0, 10\]")
    path.write_text("{not json")
    check_error(good, r"video a/v2 .*cannot read human_bbox.json")
    path.unlink()
    assert check_dataset(good).with_bbox == 2  # optional without bbox_crop
    check_error(good, r"video a/v2 .*bbox_crop is on but human_bbox.json is missing", bbox_crop=True)


def test_first_bad_video_is_named(good):
    (good / "b" / "v3" / "depth" / "0001.png").unlink()
    (good / "a" / "v2" / "depth" / "0001.png").unlink()
    check_error(good, r"^video a/v2 ")


def test_datasets_refuse_bad_layout_at_construction(good):
    shutil.rmtree(good / "a" / "v1" / "mask")
    with pytest.raises(DatasetError, match="mask/ is missing"):
        ImagePairDataset(good, image_size=16)
    with pytest.raises(DatasetError, match="aug_type 'Crop' is not supported"):
        VideoClipDataset(good, image_size=16, guids=["depth"], aug_type="Crop")


# -- the command --------------------------------------------------------------------------------

def test_check_data_command(good, capsys):
    assert main(["train", "check-data", str(good), "--bbox-crop"]) == 0
    out = capsys.readouterr().out
    assert "3 videos, 15 frames" in out and "parts: a, b" in out
    (good / "a" / "v1" / "depth" / "0002.png").unlink()
    assert main(["train", "check-data", str(good)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: video a/v1") and "frame counts differ" in err and "\n" not in err
    assert main(["train", "check-data", str(good), "--guids", "normal", "dwpose"]) == 0
    assert main(["train", "check-data", str(good / "nope")]) == 2
    assert "ROOT" in capsys.readouterr().err


# -- the writer ---------------------------------------------------------------------------------

def test_writer_layout_names_and_extras(tmp_path):
    frames = index_frames(3, 16, 12)
    target = tmp_path / "out" / "video"
    with VideoLayoutWriter(target) as writer:
        assert writer.add_frames(frames[:2], {"depth": frames[:2, ..., 1], "mask": frames[:2, ..., 0]},
                                 bboxes=[[1, 2, 3, 4], [2, 3, 4, 5]]) == ["0001", "0002"]
        assert writer.add_frames(frames[2:], {"depth": frames[2:, ..., 1], "mask": frames[2:, ..., 0]},
                                 bboxes=[[3, 4, 5, 6]]) == ["0003"]
        writer.add_image("background.png", frames[0])
        writer.add_npz("motion.npz", poses=np.zeros((3, 72), np.float32))
        assert not target.exists()  # nothing in place before the end
    assert sorted(p.name for p in target.iterdir()) == ["background.png", "depth", "human_bbox.json", "images",
                                                         "mask", "motion.npz"]
    assert json.loads((target / "human_bbox.json").read_text()) == [[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 6]]
    depth = Image.open(target / "depth" / "0003.png")
    assert depth.mode == "L" and np.array_equal(np.asarray(depth), frames[2, ..., 1])
    assert np.array_equal(np.asarray(Image.open(target / "images" / "0002.png")), frames[1])
    assert np.load(target / "motion.npz", allow_pickle=False)["poses"].shape == (3, 72)
    assert stat.S_IMODE(target.stat().st_mode) != 0o700  # not the private mode of a temporary folder
    assert [p.name for p in target.parent.iterdir()] == ["video"]
    assert check_dataset(tmp_path / "out", guids=["depth"]).frames == 3


def test_writer_leaves_nothing_on_error(tmp_path):
    frames = index_frames(4, 16, 16)
    target = tmp_path / "video"
    with pytest.raises(RuntimeError, match="boom"), VideoLayoutWriter(target) as writer:
        writer.add_frames(frames, {"normal": frames})
        writer.add_image("background.png", frames[0])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt), VideoLayoutWriter(target) as writer:
        writer.add_frames(frames[:2], {"normal": frames[:2]})
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writer_error_while_writing_frames(tmp_path, monkeypatch):
    """A failure in the middle of a chunk (here: the third PNG save) removes the partial folder."""
    frames = index_frames(4, 16, 16)
    calls = {"n": 0}
    real_save = Image.Image.save

    def failing_save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    writer = VideoLayoutWriter(tmp_path / "video").open()
    with pytest.raises(DatasetError, match="cannot write frames .*No space left"):
        writer.add_frames(frames, {"normal": frames})
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_input_and_keeps_existing(tmp_path):
    frames = index_frames(2, 16, 16)
    target = write_index_video(tmp_path / "video", 2, width=16, height=16)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    with pytest.raises(DatasetError, match="already exists and is not empty"):
        VideoLayoutWriter(target).open()
    with pytest.raises(RuntimeError), VideoLayoutWriter(target, overwrite=True) as writer:
        writer.add_frames(frames, {"normal": frames})
        raise RuntimeError("stop")
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["video"]
    with VideoLayoutWriter(target, overwrite=True) as writer:
        with pytest.raises(DatasetError, match="layer normal is 8x16 but images are 16x16"):
            writer.add_frames(frames, {"normal": frames[:, :, :8]})
        with pytest.raises(DatasetError, match="unknown layer"):
            writer.add_frames(frames, {"pose": frames})
        with pytest.raises(DatasetError, match="extra file name 'images'"):
            writer.add_bytes("images", b"")
        writer.add_frames(frames, {"dwpose": frames})
        with pytest.raises(DatasetError, match="same layers and size"):
            writer.add_frames(frames, {"normal": frames})
    assert sorted(p.name for p in target.iterdir()) == ["dwpose", "images"]
    with pytest.raises(DatasetError, match="no frames were written"), VideoLayoutWriter(tmp_path / "empty"):
        pass
    assert not (tmp_path / "empty").exists()
