"""The pack inside a real ComfyUI 0.3.75 (in-process): registration, a small workflow, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from comfy_host import PACK_FOLDER, declared_node_ids
from PIL import Image

pytestmark = pytest.mark.host

CORE_TYPES = {"IMAGE", "MASK", "LATENT", "INT", "FLOAT", "STRING", "BOOLEAN", "VAE", "CLIP_VISION",
              "POSE_KEYPOINT", "*"}


def test_every_declared_node_registers(comfy_host):
    registered = comfy_host.nodes.NODE_CLASS_MAPPINGS
    declared = declared_node_ids()
    assert len(declared) >= 2
    assert declared <= set(registered), f"not registered: {declared - set(registered)}"
    assert set(comfy_host.pack.NODE_CLASS_MAPPINGS) == declared
    for node_id in declared:
        cls = registered[node_id]
        assert node_id.startswith("Champ")
        assert comfy_host.nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("Champ ")
        assert cls.CATEGORY == "Champ" or cls.CATEGORY.startswith("Champ/"), node_id
        assert len(cls.DESCRIPTION) > 40, node_id
        for group in ("required", "optional"):
            for name, spec in cls.INPUT_TYPES().get(group, {}).items():
                assert len(spec) == 2 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
                kind = spec[0]
                if isinstance(kind, str) and kind not in CORE_TYPES:
                    assert kind.startswith("CHAMP_"), f"{node_id}.{name}: custom type {kind} lacks CHAMP_ prefix"
        for kind in cls.RETURN_TYPES:
            assert kind in CORE_TYPES or kind.startswith("CHAMP_"), f"{node_id} returns {kind}"
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), node_id


def test_comfyui_logs_no_import_failure_for_the_pack(comfy_host):
    assert comfy_host.import_failures_for_pack() == []
    link = str(comfy_host.base / "custom_nodes" / PACK_FOLDER)
    timing = [r for r in comfy_host.log.records if r.rstrip().endswith(link)]
    assert timing and "IMPORT FAILED" not in timing[0], timing
    # Web directory registered under the pack folder name (served at /extensions/<folder>/).
    assert comfy_host.nodes.EXTENSION_WEB_DIRS.get(PACK_FOLDER, "").endswith("web")


def _empty_image(width, height, frames, color):
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": frames,
                                                    "color": color}}


def guidance_prompt(frames_depth=5, frames_normal=5, frame=2):
    return {
        "1": _empty_image(64, 48, frames_depth, 0xFF0000),
        "2": _empty_image(64, 48, frames_normal, 0x00FF00),
        "3": {
            "class_type": "ChampGuidanceLayers",
            "inputs": {"depth": ["1", 0], "normal": ["2", 0], "depth_strength": 1.0, "normal_strength": 0.5,
                       "semantic_map_strength": 1.0, "dwpose_strength": 1.0},
        },
        "4": {"class_type": "ChampGuidanceFrame", "inputs": {"guidance": ["3", 0], "frame": frame}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "champ_frame"}},
    }


def test_small_api_workflow_executes(comfy_host):
    import folder_paths

    result = comfy_host.run(guidance_prompt())
    assert result.success, result.error()
    saved = result.outputs["5"]["images"]
    assert len(saved) == 1
    image = np.asarray(Image.open(os.path.join(folder_paths.get_output_directory(), saved[0]["subfolder"],
                                               saved[0]["filename"])))
    assert image.shape == (48, 128, 3)  # depth | normal, side by side
    assert (image[:, :64] == [255, 0, 0]).all() and (image[:, 64:] == [0, 255, 0]).all()
    # The guidance node sent its downscaled preview sprites to the UI.
    layers = result.outputs["3"]["champ_layers"]
    assert [r["layer"] for r in layers] == ["depth", "normal"]
    assert layers[1]["strength"] == 0.5 and layers[0]["frame_count"] == 5
    sprite = Image.open(os.path.join(folder_paths.get_temp_directory(), layers[0]["subfolder"], layers[0]["filename"]))
    assert sprite.size == (5 * 64, 48)


def test_mismatched_layers_give_an_error_naming_the_problem(comfy_host):
    result = comfy_host.run(guidance_prompt(frames_depth=5, frames_normal=4))
    assert not result.success
    error = result.error()
    assert error["event"] == "execution_error" and error["node_type"] == "ChampGuidanceLayers"
    assert error["exception_type"].endswith("ChampNodeError")
    assert "same frame count" in error["exception_message"] and "depth: 5 frames" in error["exception_message"]
    # The host runs on: the next prompt succeeds.
    assert comfy_host.run(guidance_prompt()).success


def test_out_of_range_widget_is_rejected_by_validation(comfy_host):
    prompt = guidance_prompt()
    prompt["3"]["inputs"]["depth_strength"] = -1.0
    result = comfy_host.run(prompt)
    assert not result.success and result.node_errors and "3" in result.node_errors


def test_missing_files_errors_name_the_files_and_the_folder(comfy_host):
    import sys

    models = sys.modules[comfy_host.pack.__name__ + ".nodes.models"]
    common = sys.modules[comfy_host.pack.__name__ + ".nodes._common"]
    champ_folder = str(comfy_host.base / "models" / "champ")
    with pytest.raises(common.ChampNodeError) as err:
        models.ChampModelLoader().load(models.MISSING, "fp32")
    assert "denoising_unet.pth" in str(err.value) and champ_folder in str(err.value)
    with pytest.raises(common.ChampNodeError) as err:
        models.ChampImageEncoderVAELoader().load("nowhere", "sd-vae-ft-mse", "fp32")
    assert "image_encoder/" in str(err.value) and champ_folder in str(err.value)
    # The combo lists folders holding weights (not empty ones).
    empty = comfy_host.base / "models" / "champ" / "empty"
    empty.mkdir(exist_ok=True)
    listed = models.ChampModelLoader.INPUT_TYPES()["required"]["weights"][0]
    assert "tiny" in listed and "empty" not in listed
    # The built-in model comes first in every loader (the combo's default), the user's folders after it.
    encoders = models.ChampImageEncoderVAELoader.INPUT_TYPES()["required"]
    assert listed[0] == encoders["image_encoder"][0][0] == encoders["vae"][0][0] == models.BUILTIN_CHOICE
    assert "image_encoder" in encoders["image_encoder"][0] and "sd-vae-ft-mse" in encoders["vae"][0]
    assert models.ChampModelLoader.VALIDATE_INPUTS(models.BUILTIN_CHOICE) is True
    assert models.ChampImageEncoderVAELoader.VALIDATE_INPUTS(models.BUILTIN_CHOICE, models.BUILTIN_CHOICE) is True
    # The same messages come first, from validation, before anything runs.
    assert "denoising_unet.pth" in models.ChampModelLoader.VALIDATE_INPUTS(models.MISSING)
    assert "image_encoder/" in models.ChampImageEncoderVAELoader.VALIDATE_INPUTS("nowhere", "sd-vae-ft-mse")


def test_preview_sprites_keep_to_the_size_budget(comfy_host):
    import folder_paths

    prompt = {
        "1": _empty_image(300, 200, 100, 0x808080),
        "3": {"class_type": "ChampGuidanceLayers",
              "inputs": {"dwpose": ["1", 0], "depth_strength": 1.0, "normal_strength": 1.0,
                         "semantic_map_strength": 1.0, "dwpose_strength": 1.0}},
        "4": {"class_type": "ChampGuidanceFrame", "inputs": {"guidance": ["3", 0], "frame": 0}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    result = comfy_host.run(prompt)
    assert result.success, result.error()
    (record,) = result.outputs["3"]["champ_layers"]
    assert record["frame_count"] == 100 and len(record["frame_indices"]) == 48
    assert record["frame_indices"][0] == 0 and record["frame_indices"][-1] == 99
    assert (record["tile_width"], record["tile_height"]) == (128, 85) and record["columns"] == 8
    sprite = Image.open(os.path.join(folder_paths.get_temp_directory(), record["subfolder"], record["filename"]))
    assert sprite.size == (8 * 128, 6 * 85)
