"""The pack as a new user meets it, in a real ComfyUI 0.3.75 (in-process, ComfyUI's default torch
threading and inference mode): the shipped templates with their shipped settings, the shipped
example inputs, missing weights, files replaced under the same name, folders outside the input
folder, and the places where nodes must do what the library does.

Each test here failed on the commit before this work (58af858); the docstrings say how.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_examples import (
    ANIMATION_TEMPLATES,
    EXAMPLE_FRAMES,
    EXAMPLE_INPUTS,
    EXAMPLE_SIZE,
    EXAMPLES_SPECS,
    PREVIEW_TEMPLATE,
    TAG,
    template_path,
    workflow_to_prompt,
)
from PIL import Image

pytestmark = pytest.mark.host

FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npz", ".json", ".pkl", ".webp")


def _module(host, name: str):
    return sys.modules[f"{host.pack.__name__}.nodes.{name}"]


def _template(name: str) -> dict:
    return json.loads(template_path(name).read_text())


def _prompt(host, name: str) -> dict:
    return workflow_to_prompt(_template(name), host.nodes.NODE_CLASS_MAPPINGS)


def _output_path(record) -> Path:
    import folder_paths

    root = folder_paths.get_output_directory() if record.get("type", "output") == "output" else \
        folder_paths.get_temp_directory()
    return Path(root) / record["subfolder"] / record["filename"]


def _errors(result) -> str:
    return json.dumps(result.node_errors or {}) + json.dumps(result.validation_error or {})


# -- 1. the guidance-preview template with its shipped settings ---------------------------------

def test_guidance_preview_template_runs_as_shipped_at_default_threading(comfy_host):
    """main: ChampRenderGuidance failed with "Inplace update to inference tensor outside
    InferenceMode is not allowed" (render workers writing into tensors made under ComfyUI's
    inference mode; two torch threads, six 8-frame batches)."""
    import av

    assert torch.get_num_threads() >= 2, "ComfyUI's default threading on a multi-core machine"
    prompt = _prompt(comfy_host, PREVIEW_TEMPLATE)
    motion = next(n for n in prompt.values() if n["class_type"] == "ChampBuiltinMotion")["inputs"]
    assert (motion["width"], motion["height"], round(motion["seconds"] * motion["fps"])) == (512, 512, 48)
    result = comfy_host.run(prompt)
    assert result.success, result.error()
    save = next(k for k, v in prompt.items() if v["class_type"] == "SaveVideo")
    (record,) = result.outputs[save]["images"]
    assert record["filename"].endswith(".mp4")
    with av.open(str(_output_path(record))) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(frames) == EXAMPLE_FRAMES and frames[0].shape == (EXAMPLE_SIZE, EXAMPLE_SIZE, 3)
    layers = next(k for k, v in prompt.items() if v["class_type"] == "ChampGuidanceLayers")
    assert [r["frame_count"] for r in result.outputs[layers]["champ_layers"]] == [EXAMPLE_FRAMES] * 4
    # The overlay shows the body over the photo: frames differ from each other (the body walks).
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0


def test_render_guidance_node_at_the_preview_templates_settings(comfy_host):
    """The render part of the preview template alone (built-in motion -> Render Guidance), with the
    template's shipped motion and render settings. main: "Inplace update to inference tensor outside
    InferenceMode is not allowed" in ChampRenderGuidance."""
    workflow = _template(PREVIEW_TEMPLATE)
    parts = ("ChampLoadBodyModel", "ChampBuiltinMotion", "ChampRenderGuidance")
    workflow["nodes"] = [n for n in workflow["nodes"] if n["type"] in parts]
    template = workflow_to_prompt(workflow, comfy_host.nodes.NODE_CLASS_MAPPINGS)
    shipped = {v["class_type"]: v["inputs"] for v in template.values()}
    prompt = {
        "body": {"class_type": "ChampLoadBodyModel", "inputs": shipped["ChampLoadBodyModel"]},
        "motion": {"class_type": "ChampBuiltinMotion",
                   "inputs": {**shipped["ChampBuiltinMotion"], "body_model": ["body", 0]}},
        "render": {"class_type": "ChampRenderGuidance",
                   "inputs": {**shipped["ChampRenderGuidance"], "body_model": ["body", 0], "motion": ["motion", 0]}},
        "save": {"class_type": "PreviewImage", "inputs": {"images": ["render", 1]}},
    }
    result = comfy_host.run(prompt)
    assert result.success, result.error()
    records = result.outputs["save"]["images"]
    assert len(records) == EXAMPLE_FRAMES
    last = np.asarray(Image.open(_output_path(records[-1])))
    assert last.shape == (EXAMPLE_SIZE, EXAMPLE_SIZE, 3) and 0.02 < (last.max(-1) > 0).mean() < 0.9


# -- 2. example inputs shipped by the pack ---------------------------------------------------------

def test_templates_name_only_the_packs_example_inputs_and_loaders_list_them(comfy_host):
    """main: the templates named champ_example_*.png/.npz/.json files the pack did not ship
    ("Value not in list" in the loaders)."""
    import folder_paths

    classes = comfy_host.nodes.NODE_CLASS_MAPPINGS
    assert set(EXAMPLES_SPECS) <= {p.stem for p in template_path("x").parent.glob("*.json")}
    named = set()
    for name in EXAMPLES_SPECS:
        for node in _template(name)["nodes"]:
            if node["type"] in ("Note", "MarkdownNote"):
                continue
            for value in node.get("widgets_values") or []:
                if isinstance(value, str) and value.lower().removesuffix(TAG).endswith(FILE_SUFFIXES):
                    assert value.endswith(TAG), f"{name}: {node['type']} names {value!r}, not a pack example"
                    assert (EXAMPLE_INPUTS / value.removesuffix(TAG)).is_file(), value
                    required = classes[node["type"]].INPUT_TYPES()["required"]
                    combos = [spec[0] for spec in required.values() if isinstance(spec[0], list)]
                    assert any(value in combo for combo in combos), f"{node['type']} does not list {value!r}"
                    named.add(value.removesuffix(TAG))
    # the photograph (preview), the generated person with its motion and keypoints, the driving keypoints
    assert len(named) == 5
    # Nothing was copied into the user's input folder.
    assert not named & set(os.listdir(folder_paths.get_input_directory()))


def test_example_motion_and_keypoints_load_in_their_loaders(comfy_host):
    """main: no such files (validation: "Value not in list")."""
    from champ_core.body.motion import Motion

    prompt = {
        "motion": {"class_type": "ChampLoadMotion",
                   "inputs": {"motion_file": "champ_example_motion.npz" + TAG, "start_frame": 0, "frame_count": 0,
                              "fps": 30.0}},
        "save": {"class_type": "ChampSaveMotion", "inputs": {"motion": ["motion", 0], "filename_prefix": "ex/m"}},
        "body": {"class_type": "ChampLoadBodyModel", "inputs": {"model": "open body (built-in, no SMPL files needed)"}},
        "kp": {"class_type": "ChampLoadKeypoints",
               "inputs": {"keypoint_file": "champ_example_reference_keypoints.json" + TAG}},
        "fit": {"class_type": "ChampFitReference",
                "inputs": {"pose_keypoint": ["kp", 0], "body_model": ["body", 0], "iterations": 3}},
        "save_ref": {"class_type": "ChampSaveMotion", "inputs": {"motion": ["fit", 0], "filename_prefix": "ex/r"}},
    }
    result = comfy_host.run(prompt)
    assert result.success, result.error()
    motion = Motion.load(_output_path(result.outputs["save"]["motions"][0]))
    assert motion.num_frames == EXAMPLE_FRAMES and motion.camera.width == EXAMPLE_SIZE
    reference = Motion.load(_output_path(result.outputs["save_ref"]["motions"][0]))
    assert reference.num_frames == 1 and reference.camera.width == EXAMPLE_SIZE


# -- 3. missing Champ weights ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ANIMATION_TEMPLATES)
def test_animation_templates_stop_at_validation_naming_the_missing_weights(comfy_host, name):
    """With the released weights chosen (`champ`) but not installed. main: the first message was
    ComfyUI's "Value not in list: weights: 'champ' not in [...]", and the guidance part (an output
    node) ran: the prompt was accepted and completed."""
    champ_root = comfy_host.base / "models" / "champ"
    assert not (champ_root / "champ").exists()  # as for a new user (the tests' tiny weights are in tiny/)
    prompt = _prompt(comfy_host, name)
    loader = next(v for v in prompt.values() if v["class_type"] == "ChampModelLoader")
    loader["inputs"]["weights"] = "champ"
    result = comfy_host.run(prompt)
    assert not result.success and result.validation_error is not None
    assert result.outputs == {} and result.messages == []  # nothing ran
    model = next(k for k, v in (result.node_errors or {}).items() if v["class_type"] == "ChampModelLoader")
    (error,) = result.node_errors[model]["errors"]
    assert error["type"] == "custom_validation_failed"
    for expected in ("denoising_unet.pth", "reference_unet.pth", "motion_module.pth", "guidance_encoder_",
                     str(champ_root / "champ")):
        assert expected in error["details"], error["details"]
    assert "not in list" not in _errors(result).lower()
    # Every other node of the template validates: the weights are the only thing missing.
    assert {v["class_type"] for v in result.node_errors.values()} == {"ChampModelLoader"}


def test_incomplete_weights_folder_names_the_missing_files(comfy_host):
    """main: an incomplete folder was not listed at all ("Value not in list")."""
    import shutil

    folder = comfy_host.base / "models" / "champ" / "incomplete"
    folder.mkdir(exist_ok=True)
    shutil.copy(comfy_host.base / "models" / "champ" / "tiny" / "denoising_unet.pth", folder)
    models = _module(comfy_host, "models")
    message = models.ChampModelLoader.VALIDATE_INPUTS("incomplete")
    assert "reference_unet.pth" in message and "motion_module.pth" in message and str(folder) in message
    assert "denoising_unet.pth," not in message
    assert models.ChampModelLoader.VALIDATE_INPUTS("tiny") is True


# -- 4. IS_CHANGED, folders outside the input folder, non-image files ------------------------------

def _write_motion(path: Path, frames: int, size: int = 64):
    from champ_core.body.motion import Motion
    from champ_core.camera import Camera

    orient = np.tile([np.pi, 0.0, 0.0], (frames, 1))
    Motion(orient, np.zeros((frames, 23, 3)), np.zeros((1, 10)), np.tile([0.0, 0.3, 45.0], (frames, 1)),
           Camera.hmr2_default(size, size), fps=24.0).save(path)


def _bump_mtime(path: Path, seconds: int = 5) -> None:
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 1_000_000_000))


def test_a_motion_file_replaced_under_the_same_name_is_read_again(comfy_host):
    """main: no IS_CHANGED; ComfyUI reused the cached result of the old file (4 frames)."""
    import folder_paths

    from champ_core.body.motion import Motion

    path = Path(folder_paths.get_input_directory()) / "champ_replaced.npz"
    prompt = {
        "motion": {"class_type": "ChampLoadMotion",
                   "inputs": {"motion_file": path.name, "start_frame": 0, "frame_count": 0, "fps": 30.0}},
        "save": {"class_type": "ChampSaveMotion", "inputs": {"motion": ["motion", 0],
                                                             "filename_prefix": "replaced/m"}},
    }
    counts = []
    for frames in (4, 6):
        _write_motion(path, frames)
        _bump_mtime(path, frames)
        result = comfy_host.run(prompt)
        assert result.success, result.error()
        folder = Path(folder_paths.get_output_directory()) / "replaced"
        newest = max(folder.glob("m_*.npz"), key=os.path.getmtime)
        counts.append(Motion.load(newest).num_frames)
    assert counts == [4, 6]


def test_loaders_fingerprint_the_resolved_file(comfy_host):
    """main: Load Keypoints, Load Body Model and Load Guidance Folder had no IS_CHANGED."""
    import folder_paths

    from champ_core.body.model import open_body_model

    body, render = _module(comfy_host, "body"), _module(comfy_host, "render")
    input_dir = Path(folder_paths.get_input_directory())
    keypoints = input_dir / "champ_fingerprint.json"
    keypoints.write_text(json.dumps([{"people": [], "canvas_width": 64, "canvas_height": 64}]))
    smpl = comfy_host.base / "models" / "smpl" / "champ_fingerprint_body.npz"
    np.savez(smpl, **open_body_model().to_arrays())
    folder = input_dir / "champ_fingerprint_motion"
    (folder / "depth").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(folder / "depth" / "0000.png")
    checks = [
        (lambda: body.ChampLoadKeypoints.IS_CHANGED(keypoints.name), keypoints),
        (lambda: body.ChampLoadBodyModel.IS_CHANGED(smpl.name), smpl),
        (lambda: render.ChampLoadGuidanceFolder.IS_CHANGED(folder=folder.name, start_frame=0, frame_count=0),
         folder / "depth" / "0000.png"),
    ]
    for fingerprint, changed in checks:
        before = fingerprint()
        assert fingerprint() == before  # stable while nothing changes
        _bump_mtime(changed)
        assert fingerprint() != before, changed
    assert body.ChampLoadBodyModel.VALIDATE_INPUTS(smpl.name) is True
    assert "SMPL_NEUTRAL.pkl" in body.ChampLoadBodyModel.VALIDATE_INPUTS("absent.pkl")


def test_guidance_folder_outside_the_input_folder_is_refused(comfy_host):
    """main: '../' and absolute paths were read from anywhere on disk."""
    import folder_paths

    for folder in ("../models/champ", str(comfy_host.base / "models"), "/etc"):
        prompt = {"folder": {"class_type": "ChampLoadGuidanceFolder",
                             "inputs": {"folder": folder, "start_frame": 0, "frame_count": 0}},
                  "layers": {"class_type": "ChampGuidanceLayers",
                             "inputs": {"depth": ["folder", 0], "depth_strength": 1.0, "normal_strength": 1.0,
                                        "semantic_map_strength": 1.0, "dwpose_strength": 1.0}},
                  "frame": {"class_type": "ChampGuidanceFrame", "inputs": {"guidance": ["layers", 0], "frame": 0}},
                  "save": {"class_type": "PreviewImage", "inputs": {"images": ["frame", 0]}}}
        result = comfy_host.run(prompt)
        assert not result.success and result.validation_error is not None, folder
        assert "not inside ComfyUI's input folder" in _errors(result), _errors(result)
        assert folder_paths.get_input_directory() in _errors(result)


def test_guidance_folder_ignores_non_image_files_like_the_cli(comfy_host):
    """main: a non-image file sharing a frame's name (0000.json next to 0000.png) crashed the node."""
    import folder_paths

    from champ_core.pipeline.inputs import FolderGuidance

    root = Path(folder_paths.get_input_directory()) / "champ_with_extras"
    rng = np.random.default_rng(3)
    for layer in ("depth", "normal", "mask"):
        (root / layer).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            array = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
            Image.fromarray(array[..., 0] if layer == "mask" else array).save(root / layer / f"{i:04d}.png")
            for junk in (".json", ".txt", ".xmp", ".db"):
                (root / layer / f"{i:04d}{junk}").write_text("not an image")
        (root / layer / "Thumbs.db").write_text("x")
        (root / layer / "notes.d").mkdir(exist_ok=True)
    prompt = {"folder": {"class_type": "ChampLoadGuidanceFolder",
                         "inputs": {"folder": root.name, "start_frame": 1, "frame_count": 0}},
              "layers": {"class_type": "ChampGuidanceLayers",
                         "inputs": {"depth": ["folder", 0], "normal": ["folder", 1], "depth_strength": 1.0,
                                    "normal_strength": 1.0, "semantic_map_strength": 1.0, "dwpose_strength": 1.0}},
              "frame": {"class_type": "ChampGuidanceFrame", "inputs": {"guidance": ["layers", 0], "frame": 1}},
              "save": {"class_type": "SaveImage", "inputs": {"images": ["frame", 0], "filename_prefix": "extras"}}}
    result = comfy_host.run(prompt)
    assert result.success, result.error()
    saved = np.asarray(Image.open(_output_path(result.outputs["save"]["images"][0])))
    expected = FolderGuidance(root, types=["depth", "normal"], frames=slice(1, None)).read([1], 24, 16, "squash")
    np.testing.assert_array_equal(saved, np.concatenate([expected["depth"][0], expected["normal"][0]], axis=1))


# -- 5. nodes do what the library does -------------------------------------------------------------

def test_guidance_layers_threshold_the_mask_like_the_library(comfy_host):
    """main: the semantic map was multiplied by mask/255 (a 0.5 mask halved the colours)."""
    color = (0x40, 0x80, 0xC0)

    def branch(key, value):
        return {
            f"sem{key}": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 1,
                                                                "color": (color[0] << 16) + (color[1] << 8) + color[2]}},
            f"mask{key}": {"class_type": "SolidMask", "inputs": {"value": value, "width": 24, "height": 16}},
            f"layers{key}": {"class_type": "ChampGuidanceLayers",
                             "inputs": {"semantic_map": [f"sem{key}", 0], "mask": [f"mask{key}", 0],
                                        "depth_strength": 1.0, "normal_strength": 1.0, "semantic_map_strength": 1.0,
                                        "dwpose_strength": 1.0}},
            f"frame{key}": {"class_type": "ChampGuidanceFrame", "inputs": {"guidance": [f"layers{key}", 0], "frame": 0}},
            f"save{key}": {"class_type": "SaveImage", "inputs": {"images": [f"frame{key}", 0],
                                                                 "filename_prefix": f"mask{key}"}},
        }

    result = comfy_host.run({**branch("half", 0.5), **branch("faint", 0.01), **branch("zero", 0.0)})
    assert result.success, result.error()
    pixels = {k: np.asarray(Image.open(_output_path(result.outputs[f"save{k}"]["images"][0])))
              for k in ("half", "faint", "zero")}
    assert (pixels["half"] == color).all() and (pixels["faint"] == color).all()
    assert (pixels["zero"] == 0).all()


def test_option_lists_and_defaults_are_the_librarys(comfy_host):
    """main: solvers were retyped without ddpm, lcm and tcd (and schedules, fusion, layers retyped)."""
    from champ_core.guidance import GUIDANCE_TYPES
    from champ_core.pipeline.inputs import FITS
    from champ_core.pipeline.scheduler import BETA_SCHEDULES, SOLVERS
    from champ_core.pipeline.windows import FUSIONS, SCHEDULES, WindowOptions
    from champ_core.render.backends import BACKENDS

    classes = comfy_host.nodes.NODE_CLASS_MAPPINGS
    sampler = classes["ChampSampler"].INPUT_TYPES()["required"]
    assert tuple(sampler["solver"][0]) == tuple(SOLVERS) and {"ddpm", "lcm", "tcd"} <= set(sampler["solver"][0])
    assert tuple(sampler["beta_schedule"][0]) == BETA_SCHEDULES
    context = classes["ChampContextOptions"].INPUT_TYPES()["required"]
    assert tuple(context["schedule"][0]) == SCHEDULES and tuple(context["fusion"][0]) == FUSIONS
    defaults = WindowOptions()
    for name in ("length", "overlap", "stride", "schedule", "fusion", "shift_per_step"):
        assert context[name][1]["default"] == getattr(defaults, name), name
    assert tuple(classes["ChampRenderGuidance"].INPUT_TYPES()["required"]["backend"][0]) == BACKENDS
    assert tuple(classes["ChampEncodeReference"].INPUT_TYPES()["required"]["fit"][0]) == FITS
    assert tuple(classes["ChampGuidanceLayers"].INPUT_TYPES()["optional"])[:4] == GUIDANCE_TYPES


def test_fit_nodes_use_the_librarys_fitting_defaults(comfy_host):
    """main: the nodes ran 40 first-stage steps (iterations // 3) against the library's 50."""
    from champ_core.body import fitting

    body = _module(comfy_host, "body")
    classes = comfy_host.nodes.NODE_CLASS_MAPPINGS
    default = fitting.FitConfig()
    fit_motion = classes["ChampFitMotion"].INPUT_TYPES()["required"]["iterations"][1]["default"]
    assert fit_motion == default.iterations
    config = body._fit_config(fit_motion)
    assert (config.stage1_iterations, config.iterations, config.lr) == (default.stage1_iterations, default.iterations,
                                                                        default.lr)
    reference = classes["ChampFitReference"].INPUT_TYPES()["required"]["iterations"][1]["default"]
    library = fitting.REFERENCE_FIT_CONFIG
    assert reference == library.iterations
    assert body._fit_config(reference, library).stage1_iterations == library.stage1_iterations


def test_the_largest_seed_samples(comfy_host):
    """main: seed 2**64 - 1 failed with "Overflow when unpacking long long" (manual_seed(seed + 1))."""
    from test_host_generation import generation_prompt

    classes = comfy_host.nodes.NODE_CLASS_MAPPINGS
    top = classes["ChampSampler"].INPUT_TYPES()["required"]["seed"][1]["max"]
    assert top == 2**64 - 1
    prompt = generation_prompt(seed=top, steps=2, prefix="champ_top_seed")
    prompt["sampler"]["inputs"]["solver"] = "euler_ancestral"  # a solver that draws noise in its steps
    result = comfy_host.run(prompt)
    assert result.success, result.error()


def test_fit_motion_node_fits_the_feet_of_wholebody_keypoints(comfy_host):
    """main: Champ Fit Motion dropped `foot_keypoints_2d` (DWPose's feet), so the node's fit differed
    from the library's whole-body fit of the same keypoints."""
    import torch

    from champ_core.body.fitting import extra_points_from_body, fit_keypoints
    from champ_core.body.keypoints import openpose18_from_body, project
    from champ_core.body.motions import builtin_motion, default_camera
    from champ_core.pose.format import parse_with_feet

    body_nodes = _module(comfy_host, "body")
    classes = comfy_host.nodes.NODE_CLASS_MAPPINGS
    (body_model,) = classes["ChampLoadBodyModel"]().load("open body (built-in, no SMPL files needed)")
    body = body_nodes._optimisable(body_model)
    camera = default_camera(256, 256)
    with torch.no_grad():
        posed = builtin_motion("walk", body, seconds=4 / 24, fps=24.0, camera=camera).pose(body)
        vertices, joints = posed.vertices.double().numpy(), posed.joints.double().numpy()
    with_conf = lambda xy: np.concatenate([xy, np.ones((*xy.shape[:2], 1))], -1).round(2)  # noqa: E731
    body_xy = with_conf(np.asarray(project(openpose18_from_body(vertices, joints), camera)))
    feet_xy = with_conf(np.asarray(project(extra_points_from_body(vertices, joints)[:, :6], camera)))
    frames = [{"people": [{"pose_keypoints_2d": b.reshape(-1).tolist(), "foot_keypoints_2d": f.reshape(-1).tolist()}],
               "canvas_width": 256, "canvas_height": 256} for b, f in zip(body_xy, feet_xy)]

    (node_motion,) = classes["ChampFitMotion"]().fit(frames, body_model, 24.0, 12, -1)
    pose, feet = parse_with_feet(frames)
    assert feet is not None and feet.shape == (4, 6, 3)
    config = body_nodes._fit_config(12)
    with_feet = fit_keypoints(pose, body, fps=24.0, config=config, feet=feet)
    without = fit_keypoints(pose, body, fps=24.0, config=config)
    np.testing.assert_allclose(node_motion.body_pose, with_feet.body_pose, atol=1e-6)
    assert np.abs(node_motion.body_pose - without.body_pose).max() > 1e-4
