"""Training datasets: sampling, shared crops, item layouts, determinism, skipping unreadable files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from train_data_helpers import frame_index, signed_to_uint8, to_uint8, write_index_video

from champ_core.train.augment import clip_pixels, random_resized_crop_box
from champ_core.train.datasets import (
    DataSkipLimitError,
    DrawSampler,
    ImagePairDataset,
    VideoClipDataset,
    build_dataset,
    pair_indices,
)

FIXTURE = Path(os.environ.get("CHAMP_TRAINING_DIR", Path(__file__).parent / "fixtures" / "champ_training"))
SIZE = 32


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Index-carrying videos of 1, 20, 100 frames (stage 1) and 10, 50, 93, 200 frames (stage 2)."""
    root = tmp_path_factory.mktemp("train-data")
    for n in (1, 20, 100):
        write_index_video(root / "pairs" / f"v{n:03d}", n, bboxes="default")
    for n in (10, 50, 93, 200):
        write_index_video(root / "clips" / f"v{n:03d}", n, bboxes="default")
    return root


def decoded_video(ds, draw: int) -> int:
    return ds.videos[ds.video_of(draw)].num_frames


# -- stage 1 ----------------------------------------------------------------------------------

def test_pair_indices_rule():
    rng = np.random.default_rng(0)
    for n, margin in ((100, 30), (31, 30), (61, 30), (5, 0)):
        pairs = [pair_indices(n, margin, rng) for _ in range(300)]
        assert all(abs(r - t) >= margin for r, t in pairs)
        assert all(0 <= r < n and 0 <= t < n for r, t in pairs)
        if n > margin + 1:  # targets on both sides of the reference occur
            assert any(t < r for r, t in pairs) and any(t > r for r, t in pairs)
    # shorter than the margin: the target is a frame farthest from the reference
    for r, t in (pair_indices(20, 30, rng) for _ in range(100)):
        assert abs(r - t) == max(r, 19 - r)
    assert pair_indices(1, 30, rng) == (0, 0)


def test_stage1_pairs_are_margin_apart(videos):
    ds = ImagePairDataset(videos / "pairs", image_size=SIZE, sample_margin=30, seed=5)
    assert len(ds) == 3
    seen = {1: [], 20: [], 100: []}
    for draw in range(45):
        item = ds[draw]
        seen[decoded_video(ds, draw)].append((frame_index(item["ref_img"]), frame_index(item["tgt_img"])))
    assert all(len(pairs) == 15 for pairs in seen.values())  # every epoch visits every video once
    assert all(abs(r - t) >= 30 for r, t in seen[100])
    assert len(set(seen[100])) > 10
    assert all(abs(r - t) == max(r, 19 - r) for r, t in seen[20])
    assert seen[1] == [(0, 0)] * 15


@pytest.mark.parametrize("bbox_crop", [False, True])
def test_stage1_guidance_stays_aligned(videos, bbox_crop):
    ds = ImagePairDataset(videos / "pairs", image_size=SIZE, sample_margin=30, seed=11, bbox_crop=bbox_crop,
                          guids=("normal", "depth", "semantic_map", "dwpose"))
    crops = set()
    for draw in range(6):
        item = ds[draw]
        assert item["tgt_img"].shape == (3, SIZE, SIZE) and item["ref_img"].shape == (3, SIZE, SIZE)
        assert item["tgt_guid"].shape == (12, SIZE, SIZE) and item["clip_img"].shape == (3, 224, 224)
        assert all(v.dtype == torch.float32 for v in item.values())
        target, guid = signed_to_uint8(item["tgt_img"]), to_uint8(item["tgt_guid"])
        np.testing.assert_array_equal(guid[0:3], target)               # normal, in guids order
        np.testing.assert_array_equal(guid[3:6], np.stack([target[1]] * 3))  # depth = green ramp, gray x3
        np.testing.assert_array_equal(guid[6:9], target)               # semantic map (mask all 255)
        np.testing.assert_array_equal(guid[9:12], target)              # dwpose
        # the reference went through the same crop (the boxes are equal in every frame)
        np.testing.assert_array_equal(signed_to_uint8(item["ref_img"])[1:], target[1:])
        crops.add(target[1:].tobytes())
    assert len(crops) > 1, "the crop is not random"


# -- stage 2 ----------------------------------------------------------------------------------

def expected_clip(start: int, span: int, frames: int = 24) -> list[int]:
    """The reference's indices: numpy linspace over the span, truncated to integers."""
    return np.linspace(start, start + span - 1, frames).astype(int).tolist()


def test_stage2_indices_equal_reference_linspace(videos):
    ds = VideoClipDataset(videos / "clips", image_size=SIZE, sample_frames=24, sample_rate=4, seed=2)
    starts = {10: set(), 50: set(), 93: set(), 200: set()}
    for draw in range(16):
        item = ds[draw]
        assert item["tgt_vid"].shape == (24, 3, SIZE, SIZE)
        assert item["tgt_guid_vid"].shape == (24, 12, SIZE, SIZE)
        n = decoded_video(ds, draw)
        indices = [frame_index(frame) for frame in item["tgt_vid"]]
        span = min(n, 93)
        start = indices[0]
        assert 0 <= start <= n - span
        assert indices == expected_clip(start, span)
        # the same by exact integer arithmetic (23 is prime, so no float rounding can differ)
        assert indices == [start + k * (span - 1) // 23 for k in range(24)]
        starts[n].add(start)
    assert starts[10] == {0} and starts[50] == {0} and starts[93] == {0}
    assert len(starts[200]) > 1
    # a 10-frame video repeats indices exactly as the linspace does
    assert expected_clip(0, 10) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 7, 8, 8, 9]


@pytest.mark.parametrize("bbox_crop", [False, True])
def test_stage2_one_crop_for_every_frame(videos, bbox_crop):
    ds = VideoClipDataset(videos / "clips", image_size=SIZE, sample_frames=24, sample_rate=4, seed=7,
                          bbox_crop=bbox_crop, guids=("dwpose", "semantic_map", "depth", "normal"))
    crops = set()
    for draw in range(4):
        item = ds[draw]
        frames, guid = signed_to_uint8(item["tgt_vid"]), to_uint8(item["tgt_guid_vid"])
        for k in range(24):
            np.testing.assert_array_equal(guid[k, 0:3], frames[k])
            np.testing.assert_array_equal(guid[k, 3:6], frames[k])
            np.testing.assert_array_equal(guid[k, 6:9], np.stack([frames[k, 1]] * 3))
            np.testing.assert_array_equal(guid[k, 9:12], frames[k])
            np.testing.assert_array_equal(frames[k, 1:], frames[0, 1:])  # every frame: the same crop
        np.testing.assert_array_equal(signed_to_uint8(item["ref_img"])[1:], frames[0, 1:])
        crops.add(frames[0, 1:].tobytes())
    assert len(crops) > 1, "the crop is not random"


def test_bbox_crop_frames_the_person(tmp_path):
    """With bbox_crop the square around the person box is what is resized (checked on the ramps)."""
    write_index_video(tmp_path / "v", 4, width=64, height=48, bboxes=[[20, 10, 40, 40]] * 4)
    ds = ImagePairDataset(tmp_path, image_size=SIZE, sample_margin=1, bbox_crop=True, bbox_resize_ratio=(1.0, 1.0))
    target = signed_to_uint8(ds[0]["tgt_img"])
    # side 30 around the centre (30, 25): x 15..45, y 10..40 of ramps 0..255 over 64 and 48 pixels
    assert abs(target[1, :, 0].mean() - 15 * 255 / 63) < 6 and abs(target[1, :, -1].mean() - 44 * 255 / 63) < 6
    assert abs(target[2, 0].mean() - 10 * 255 / 47) < 6 and abs(target[2, -1].mean() - 39 * 255 / 47) < 6
    padded = ImagePairDataset(tmp_path, image_size=SIZE, sample_margin=1, bbox_crop=True, aug_type="Padding",
                              bbox_resize_ratio=(1.5, 1.5))
    item = padded[0]  # box 45 wide, clipped to 45 x 45 within 64 x 48 -> no padding needed; still aligned
    np.testing.assert_array_equal(to_uint8(item["tgt_guid"])[3:6], signed_to_uint8(item["tgt_img"]))


def test_random_resized_crop_box_rule():
    rng = np.random.default_rng(0)
    boxes = [random_resized_crop_box(rng, 100, 100) for _ in range(200)]
    assert all(b.width == b.height and 94 <= b.width <= 100 for b in boxes)  # sqrt(0.9) * 100 = 94.9
    assert all(0 <= b.left and b.right <= 100 and 0 <= b.top and b.bottom <= 100 for b in boxes)
    wide = random_resized_crop_box(rng, 160, 90)  # never fits: the centred square of the short side
    assert (wide.left, wide.top, wide.width, wide.height) == (35, 0, 90, 90)


# -- layouts, determinism, data order ---------------------------------------------------------

def test_item_layout_equals_training_fixture(videos):
    for stage, keys in ((1, ("tgt_img", "tgt_guid", "ref_img", "clip_img")),
                        (2, ("tgt_vid", "tgt_guid_vid", "ref_img", "clip_img"))):
        inputs = load_file(str(FIXTURE / f"stage{stage}" / "inputs.safetensors"))
        config = {"video_folder": str(videos / ("pairs" if stage == 1 else "clips")), "image_size": SIZE,
                  "guids": ["depth", "normal", "semantic_map", "dwpose"], "train_bs": 4, "sample_margin": 30,
                  "sample_frames": inputs["tgt_vid"].shape[1] if stage == 2 else 24, "sample_rate": 4}
        item = build_dataset(stage, config, seed=0)[0]
        assert tuple(item) == keys
        for key in keys:  # the fixture's batch minus the batch axis; spatial sizes are the fixture's own
            expected = inputs[key].shape[1:]
            got = tuple(item[key].shape)
            assert len(got) == len(expected) and got[:-2] == expected[:-2], key
            assert str(item[key].dtype).endswith(str(inputs[key].dtype))
        assert item["clip_img"].shape[-2:] == inputs["clip_img"].shape[-2:]


def test_clip_pixels_equal_training_fixture():
    """The fixture's clip_img was made by the reference's CLIPImageProcessor() from the ref_img pixels."""
    for stage in (1, 2):
        inputs = load_file(str(FIXTURE / f"stage{stage}" / "inputs.safetensors"))
        refs = np.round((inputs["ref_img"] + 1) / 2 * 255).astype(np.uint8).transpose(0, 2, 3, 1)
        for ref, expected in zip(refs, inputs["clip_img"]):
            np.testing.assert_allclose(clip_pixels(ref), expected, rtol=0, atol=1e-6)


def test_items_depend_only_on_seed_and_draw(videos):
    a = VideoClipDataset(videos / "clips", image_size=SIZE, seed=3)
    b = VideoClipDataset(videos / "clips", image_size=SIZE, seed=3)
    c = VideoClipDataset(videos / "clips", image_size=SIZE, seed=4)
    first, again = a[5], b[5]
    a[0]  # drawing other items first changes nothing
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert all(torch.equal(first[key], a[5][key]) for key in first)
    other = c[5]
    assert not all(torch.equal(first[key], other[key]) for key in ("tgt_vid", "ref_img"))
    # each epoch is a permutation of the videos
    assert sorted(a.video_of(g) for g in range(4)) == [0, 1, 2, 3] == sorted(a.video_of(g) for g in range(4, 8))


def test_draw_sampler_resumes_the_data_order(videos):
    ds = ImagePairDataset(videos / "pairs", image_size=SIZE, sample_margin=30, seed=9)
    full = list(torch.utils.data.DataLoader(ds, batch_size=2, sampler=DrawSampler(0, 8)))
    sampler = DrawSampler(0, 8)
    state = {"start": 4, "num_draws": 4}
    assert sampler.state_dict() == {"start": 0, "num_draws": 8}
    sampler.load_state_dict(state)
    resumed = list(torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2))
    assert len(full) == 4 and len(resumed) == 2
    for got, expected in zip(resumed, full[2:]):
        for key in expected:
            assert torch.equal(got[key], expected[key]), key


# -- unreadable files during training -----------------------------------------------------------

def test_unreadable_image_is_skipped_then_training_stops(tmp_path, caplog):
    for name in ("a", "b"):
        write_index_video(tmp_path / name, 8, width=24, height=24)
    ds = ImagePairDataset(tmp_path, image_size=16, sample_margin=2, seed=1, max_skip_fraction=0.01)
    broken = ds.videos[0].files["images"]
    for path in broken:
        path.write_bytes(b"not a png")
    caplog.set_level(logging.WARNING, logger="champ_core.train.datasets")
    bad_draw = next(g for g in range(4) if ds.video_of(g) == 0)
    item = ds[bad_draw]  # replaced by the other (readable) video
    assert item["tgt_img"].shape == (3, 16, 16)
    assert ds.skips.skipped == 1 and ds.skips.samples == 1
    assert any("skipping a training sample" in r.message and "video a" in r.message for r in caplog.records)
    for g in range(bad_draw + 1, 20):  # good draws keep the ratio down ...
        if ds.video_of(g) == 1:
            ds[g]
    with pytest.raises(DataSkipLimitError, match=r"2 of \d+ training samples were skipped .*check-data"):
        ds[next(g for g in range(20, 40) if ds.video_of(g) == 0)]  # ... until skips pass max(1, 1%)


def test_skip_limit_error_is_one_line_through_workers(tmp_path):
    write_index_video(tmp_path / "a", 4, width=16, height=16)
    ds = ImagePairDataset(tmp_path, image_size=8, sample_margin=1, seed=0, max_skip_fraction=0.0)
    for path in ds.videos[0].files["images"]:
        path.write_bytes(b"broken")
    loader = torch.utils.data.DataLoader(ds, batch_size=1, sampler=DrawSampler(0, 4), num_workers=1)
    with pytest.raises(DataSkipLimitError) as info:
        next(iter(loader))
    message = str(info.value)
    assert "\n" not in message and message.startswith("item 0: all 1 video(s) tried had unreadable images")


def test_dataset_copies_keep_counts():
    import copy
    import pickle

    from champ_core.train.datasets import SkipCounter

    counter = SkipCounter(0.5)
    counter.count_sample()
    clone = pickle.loads(pickle.dumps(copy.deepcopy(counter)))
    assert (clone.samples, clone.skipped, clone.max_fraction) == (1, 0, 0.5)


def test_crop_resize_and_tensors_equal_torchvision():
    """The reference's transforms (torchvision on PIL images) as the oracle of the crop and the scaling."""
    from PIL import Image
    from torchvision import transforms
    from torchvision.transforms import functional as TF

    from champ_core.train.augment import Box, CropPlan, apply_plan
    from champ_core.train.datasets import _signed, _unit

    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    pil = Image.fromarray(image)
    square = Box(left=5, top=3, right=35, bottom=33)
    expected = TF.resized_crop(pil, 3, 5, 30, 30, [16, 16], transforms.InterpolationMode.BILINEAR)
    np.testing.assert_array_equal(apply_plan(image, CropPlan(square, 16, "Resize")), np.asarray(expected))
    wide = Box(left=2, top=4, right=50, bottom=30)  # a clipped person box: 48 x 26
    expected = TF.resize(pil.crop((2, 4, 50, 30)), [16, 16])
    np.testing.assert_array_equal(apply_plan(image, CropPlan(wide, 16, "Resize")), np.asarray(expected))
    long_edge = TF.resize(pil.crop((2, 4, 50, 30)), [int(26 * 16 / 48), int(48 * 16 / 48)])
    top = (16 - long_edge.size[1]) // 2
    expected = TF.pad(long_edge, [0, top, 0, 16 - long_edge.size[1] - top], 0, "constant")
    np.testing.assert_array_equal(apply_plan(image, CropPlan(wide, 16, "Padding")), np.asarray(expected))
    to_signed = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    assert torch.equal(_signed(image), to_signed(pil))
    assert torch.equal(_unit(image), transforms.ToTensor()(pil))


def test_semantic_map_is_masked_and_clip_sees_the_reference(tmp_path):
    from train_data_helpers import guidance_like, index_frames

    from champ_core.train.layout import VideoLayoutWriter

    frames = index_frames(6, 40, 40)
    layers = guidance_like(frames)
    layers["mask"] = np.zeros(frames.shape[:3], np.uint8)
    layers["mask"][:, :, 20:] = 255  # right half is the person
    with VideoLayoutWriter(tmp_path / "v") as writer:
        writer.add_frames(frames, layers)
    ds = ImagePairDataset(tmp_path, image_size=40, sample_margin=3, seed=0, guids=("semantic_map", "normal"))
    item = ds[0]
    semantic, normal = to_uint8(item["tgt_guid"][:3]), to_uint8(item["tgt_guid"][3:])
    green = normal[1]  # the left-to-right ramp tells which source column each output column came from
    left, right = green < 120, green > 140
    assert left.any() and right.any()
    assert (semantic[:, left] == 0).all()
    np.testing.assert_array_equal(semantic[:, right], normal[:, right])
    reference = frames[frame_index(item["ref_img"])]
    np.testing.assert_array_equal(item["clip_img"].numpy(), clip_pixels(reference))  # the whole frame (no bbox)
