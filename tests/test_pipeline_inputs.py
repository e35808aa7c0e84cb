"""Input handling: RGBA/grayscale/non-square references, guidance sources and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from champ_core.guidance import write_layer_frames
from champ_core.pipeline.inputs import (
    ArrayGuidance,
    FolderGuidance,
    InputError,
    fit_image,
    parse_frame_range,
    prepare_reference,
    to_rgb_uint8,
)


def test_rgba_is_composited_over_the_background(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :3, 3] = 255  # left half opaque red, right half transparent
    path = tmp_path / "ref.png"
    Image.fromarray(rgba, "RGBA").save(path)
    rgb = to_rgb_uint8(path)
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [200, 0, 0]
    assert rgb[0, 5].tolist() == [255, 255, 255]
    assert to_rgb_uint8(rgba, background=(0, 0, 0))[0, 5].tolist() == [0, 0, 0]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "I;16"])
def test_grayscale_and_palette_images_become_rgb(tmp_path, mode):
    gray = (np.arange(24, dtype=np.uint8).reshape(4, 6) * 10)
    image = Image.fromarray(gray, "L")
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    elif mode != "L":
        image = image.convert(mode)
    image.save(tmp_path / "g.png")
    rgb = to_rgb_uint8(tmp_path / "g.png")
    assert rgb.shape == (4, 6, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert abs(int(rgb[1, 2, 0]) - int(gray[1, 2])) <= 1


def test_array_inputs_float_and_single_channel():
    assert to_rgb_uint8(np.full((2, 3, 1), 0.5, dtype=np.float32))[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(InputError, match="NaN"):
        to_rgb_uint8(np.full((2, 3), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="shape"):
        to_rgb_uint8(np.zeros((2, 3, 5), dtype=np.uint8))
    with pytest.raises(InputError, match="does not exist"):
        to_rgb_uint8("/nonexistent/ref.png")


def test_non_square_fit_rules():
    image = np.zeros((100, 50, 3), dtype=np.uint8)  # portrait, 50 wide
    image[:, :, 1] = 255
    image[:10] = 0  # black band at the top
    squashed = fit_image(image, 64, 64, "squash")
    cropped = fit_image(image, 64, 64, "crop")
    padded = fit_image(image, 64, 64, "pad")
    assert squashed.shape == cropped.shape == padded.shape == (64, 64, 3)
    assert squashed[0, 32, 1] == 0 and cropped[0, 32, 1] == 255  # the crop cut the top band away
    assert padded[32, 0].tolist() == [0, 0, 0] and padded[32, 32, 1] == 255  # side bars
    assert padded[32, 15, 1] == 0 and padded[32, 17, 1] == 255  # content is 32 wide, centred
    with pytest.raises(InputError, match="fit"):
        fit_image(image, 64, 64, "stretch")


def test_reference_and_map_fits_agree():
    # a marker at the same relative place in a reference and a map of the same aspect stays aligned
    ref = np.zeros((120, 80, 3), dtype=np.uint8)
    ref[30:60, 20:40, 0] = 255  # a red marker (padding is white for the reference, black for maps)
    guide = np.asarray(Image.fromarray(ref).resize((40, 60), Image.Resampling.NEAREST))
    for fit in ("squash", "crop", "pad"):
        vae_input, clip_input = prepare_reference(ref, 64, 48, fit)
        g = fit_image(guide, 64, 48, fit)
        assert clip_input.shape == (224, 224, 3)
        a = (vae_input[..., 0] > 127) & (vae_input[..., 1] < 127)
        b = (g[..., 0] > 127) & (g[..., 1] < 127)
        assert (a & b).sum() / max(1, (a | b).sum()) > 0.8


def _layers(frames: int, size=(12, 10)):
    rng = np.random.default_rng(0)
    return {t: rng.integers(0, 255, (frames, *size, 3), dtype=np.uint8) for t in ("depth", "normal")}


def test_array_guidance_reads_windows_at_the_generation_size():
    source = ArrayGuidance(_layers(5))
    assert source.types == ("depth", "normal") and source.num_frames == 5
    out = source.read([4, 0], 16, 24, "squash")
    assert set(out) == {"depth", "normal"} and out["depth"].shape == (2, 24, 16, 3)


def test_mismatched_guidance_lengths_are_a_clear_error():
    layers = _layers(5)
    layers["normal"] = layers["normal"][:4]
    with pytest.raises(InputError, match="different frame counts"):
        ArrayGuidance(layers)


def test_empty_guidance_is_a_clear_error():
    with pytest.raises(InputError, match="no guidance"):
        ArrayGuidance({})
    with pytest.raises(InputError, match="no frames"):
        ArrayGuidance({"depth": np.zeros((0, 8, 8, 3), dtype=np.uint8)})
    with pytest.raises(InputError, match="unknown guidance"):
        ArrayGuidance({"canny": np.zeros((2, 8, 8, 3), dtype=np.uint8)})


def test_semantic_map_is_masked(tmp_path):
    semantic = np.full((2, 8, 8, 3), 200, dtype=np.uint8)
    mask = np.zeros((2, 8, 8), dtype=np.uint8)
    mask[:, :4] = 255
    out = ArrayGuidance({"semantic_map": semantic}, mask=mask).read([0, 1], 8, 8, "squash")["semantic_map"]
    assert (out[:, :4] == 200).all() and (out[:, 4:] == 0).all()
    names = ["0001", "0002"]
    write_layer_frames(tmp_path / "semantic_map", semantic, names)
    write_layer_frames(tmp_path / "mask", mask, names)
    folder = FolderGuidance(tmp_path)
    assert folder.use_mask and folder.types == ("semantic_map",)
    assert np.array_equal(folder.read([0, 1], 8, 8, "squash")["semantic_map"], out)


def _motion_folder(root, frames=6, types=("depth", "normal", "semantic_map", "dwpose")):
    names = [f"{i:04d}" for i in range(frames)]
    layers = _layers(frames)
    for t in types:
        write_layer_frames(root / t, layers["depth"] if t != "normal" else layers["normal"], names)
    write_layer_frames(root / "mask", np.full((frames, 12, 10), 255, dtype=np.uint8), names)
    return names


def test_folder_guidance_ranges_and_missing_types(tmp_path):
    _motion_folder(tmp_path, types=("depth", "normal"))
    (tmp_path / "depth" / "notes.txt").write_text("ignored")
    source = FolderGuidance(tmp_path, frames=parse_frame_range("1:4"))
    assert source.types == ("depth", "normal") and source.num_frames == 3
    assert source.frame_names == ["0001", "0002", "0003"]
    with pytest.raises(InputError, match="no folder for guidance"):
        FolderGuidance(tmp_path, types=["dwpose"])
    with pytest.raises(InputError, match="selects no frames"):
        FolderGuidance(tmp_path, frames=parse_frame_range("10:20"))


def test_folder_guidance_errors(tmp_path):
    _motion_folder(tmp_path, types=("depth", "normal"))
    (tmp_path / "normal" / "0005.png").unlink()
    with pytest.raises(InputError, match="frame counts differ"):
        FolderGuidance(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        FolderGuidance(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no guidance given"):
        FolderGuidance(tmp_path / "empty")
    (tmp_path / "empty" / "depth").mkdir()
    with pytest.raises(InputError, match="hold no image frames"):
        FolderGuidance(tmp_path / "empty")


def test_frame_range_parsing():
    assert parse_frame_range("0:100") == slice(0, 100)
    assert parse_frame_range(":5") == slice(None, 5)
    assert parse_frame_range(None) is None
    for bad in ("5", "a:b", "1:2:3"):
        with pytest.raises(InputError, match="frame range"):
            parse_frame_range(bad)


def test_torch_images_as_comfyui_passes_them():
    import torch

    frames = torch.rand(3, 12, 10, 3)  # ComfyUI IMAGE: (T, H, W, C) float in [0, 1]
    out = ArrayGuidance({"normal": frames}).read([0, 2], 10, 12, "squash")["normal"]
    assert out.dtype == np.uint8 and out.shape == (2, 12, 10, 3)
    assert np.array_equal(out[1], (frames[2].numpy() * 255).round().astype(np.uint8))


def test_folder_reads_in_order_across_threads(tmp_path):
    names = [f"{i:04d}" for i in range(9)]
    frames = np.stack([np.full((6, 5, 3), 20 * i, np.uint8) for i in range(9)])
    write_layer_frames(tmp_path / "depth", frames, names)
    write_layer_frames(tmp_path / "normal", 255 - frames, names)
    out = FolderGuidance(tmp_path).read([8, 1, 4], 5, 6, "squash")
    assert [int(f[0, 0, 0]) for f in out["depth"]] == [160, 20, 80]
    assert [int(f[0, 0, 0]) for f in out["normal"]] == [95, 235, 175]
