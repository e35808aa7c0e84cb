"""Body and render nodes in a real ComfyUI 0.3.75 (in-process): motion file -> guidance maps,
keypoints JSON -> fitted motion -> guidance maps, overlay preview."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.host

SIZE = 64
FRAMES = 4


def write_motion(path, frames=FRAMES):
    """A person standing upright in front of the camera, turning a little, as a motion file."""
    from champ_core.body.motion import Motion
    from champ_core.camera import Camera

    turn = np.linspace(0.0, 0.6, frames)
    global_orient = np.stack([np.full(frames, np.pi), turn, np.zeros(frames)], axis=1)  # upright in OpenCV axes
    body_pose = np.zeros((frames, 23, 3))
    body_pose[:, 15, 2] = -np.linspace(0, 1.0, frames)  # left shoulder lowers the arm
    transl = np.tile([0.0, 0.3, 45.0], (frames, 1))
    camera = Camera.hmr2_default(SIZE, SIZE)
    return Motion(global_orient, body_pose, np.zeros((1, 10)), transl, camera, fps=24.0).save(path)


def write_keypoints(path, motion_path):
    """POSE_KEYPOINT JSON of the motion's projected OpenPose-18 points (what DWPose would give)."""
    from champ_core.body.keypoints import (
        PoseFrames,
        openpose18_from_body,
        pose_frames_to_pose_keypoint,
        project,
    )
    from champ_core.body.model import open_body_model
    from champ_core.body.motion import Motion

    motion = Motion.load(motion_path)
    body = open_body_model()
    out = motion.pose(body)
    xy = np.asarray(project(openpose18_from_body(out.vertices, out.joints), motion.camera))
    pose = PoseFrames(np.concatenate([xy, np.ones((*xy.shape[:2], 1))], axis=-1), SIZE, SIZE)
    path.write_text(json.dumps(pose_frames_to_pose_keypoint(pose)))


def render_prompt(motion_source: dict, extra: dict | None = None):
    prompt = {
        "body": {"class_type": "ChampLoadBodyModel", "inputs": {"model": "open body (built-in, no SMPL files needed)"}},
        **motion_source,
        "render": {"class_type": "ChampRenderGuidance",
                   "inputs": {"body_model": ["body", 0], "motion": ["motion", 0], "width": SIZE, "height": SIZE,
                              "backend": "torch"}},
        "layers": {"class_type": "ChampGuidanceLayers",
                   "inputs": {"depth": ["render", 0], "normal": ["render", 1], "semantic_map": ["render", 2],
                              "dwpose": ["render", 3], "mask": ["render", 4], "depth_strength": 1.0,
                              "normal_strength": 1.0, "semantic_map_strength": 1.0, "dwpose_strength": 1.0}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": "champ_reference.png"}},
        "overlay": {"class_type": "ChampOverlayPreview", "inputs": {"reference": ["ref", 0], "guidance": ["layers", 0]}},
        "save_overlay": {"class_type": "SaveImage", "inputs": {"images": ["overlay", 0], "filename_prefix": "overlay"}},
        "frame": {"class_type": "ChampGuidanceFrame", "inputs": {"guidance": ["layers", 0], "frame": FRAMES - 1}},
        "save_frame": {"class_type": "SaveImage", "inputs": {"images": ["frame", 0], "filename_prefix": "frame"}},
    }
    prompt.update(extra or {})
    return prompt


def _load_saved(record):
    import folder_paths

    return np.asarray(Image.open(os.path.join(folder_paths.get_output_directory(), record["subfolder"],
                                              record["filename"])))


def _check_guidance_outputs(result):
    assert result.success, result.error()
    overlays = result.outputs["save_overlay"]["images"]
    assert len(overlays) == FRAMES and _load_saved(overlays[0]).shape == (SIZE, SIZE, 3)
    frame = _load_saved(result.outputs["save_frame"]["images"][0])
    assert frame.shape == (SIZE, 4 * SIZE, 3)
    tiles = [frame[:, i * SIZE:(i + 1) * SIZE] for i in range(4)]
    for name, tile in zip(("depth", "normal", "semantic_map", "dwpose"), tiles):
        lit = (tile.max(-1) > 0).mean()
        assert 0.01 < lit < 0.9, f"{name}: {lit:.3f} of the pixels drawn"
    # Black background outside the body in the semantic map (masked), the body in the middle.
    assert tiles[2][:, :4].max() == 0 and tiles[2][SIZE // 2].max() > 0
    layers = result.outputs["layers"]["champ_layers"]
    assert [r["layer"] for r in layers] == ["depth", "normal", "semantic_map", "dwpose"]


def test_motion_file_to_guidance_maps(comfy_host):
    import folder_paths

    write_motion(os.path.join(folder_paths.get_input_directory(), "champ_test_motion.npz"))
    source = {"loaded": {"class_type": "ChampLoadMotion",
                         "inputs": {"motion_file": "champ_test_motion.npz", "start_frame": 0, "frame_count": 0,
                                    "fps": 30.0}},
              "motion": {"class_type": "ChampSmoothMotion",
                         "inputs": {"motion": ["loaded", 0], "method": "gaussian", "strength": 1.0}}}
    _check_guidance_outputs(comfy_host.run(render_prompt(source)))


def test_keypoints_json_to_fitted_motion_to_guidance(comfy_host):
    from pathlib import Path

    import folder_paths

    input_dir = Path(folder_paths.get_input_directory())
    motion_path = write_motion(input_dir / "champ_fit_source.npz")
    write_keypoints(input_dir / "champ_test_keypoints.json", motion_path)
    source = {
        "kp": {"class_type": "ChampLoadKeypoints", "inputs": {"keypoint_file": "champ_test_keypoints.json"}},
        "motion": {"class_type": "ChampFitMotion",
                   "inputs": {"pose_keypoint": ["kp", 0], "body_model": ["body", 0], "fps": 24.0, "iterations": 30,
                              "person": -1}},
    }
    extra = {"save_motion": {"class_type": "ChampSaveMotion",
                             "inputs": {"motion": ["motion", 0], "filename_prefix": "champ/fitted"}}}
    result = comfy_host.run(render_prompt(source, extra))
    _check_guidance_outputs(result)
    # The fitted motion is saved and loads back with its frames and camera.
    from champ_core.body.motion import Motion

    record = result.outputs["save_motion"]["motions"][0]
    saved = Motion.load(os.path.join(folder_paths.get_output_directory(), record["subfolder"], record["filename"]))
    assert saved.num_frames == FRAMES == record["frames"] and saved.camera.width == SIZE


def test_keypoints_without_a_person_give_a_clear_error(comfy_host):
    import folder_paths

    path = os.path.join(folder_paths.get_input_directory(), "champ_empty_keypoints.json")
    with open(path, "w") as handle:
        json.dump([{"people": [], "canvas_width": SIZE, "canvas_height": SIZE}], handle)
    source = {
        "kp": {"class_type": "ChampLoadKeypoints", "inputs": {"keypoint_file": "champ_empty_keypoints.json"}},
        "motion": {"class_type": "ChampFitMotion",
                   "inputs": {"pose_keypoint": ["kp", 0], "body_model": ["body", 0], "fps": 24.0, "iterations": 5,
                              "person": -1}},
    }
    result = comfy_host.run(render_prompt(source))
    assert not result.success
    error = result.error()
    assert error["node_type"] in ("ChampLoadKeypoints", "ChampFitMotion")
    assert error["exception_type"].endswith("ChampNodeError") and "Champ" in error["exception_message"]


def test_smooth_motion_node_equals_the_library_and_smooths(comfy_host):
    import folder_paths

    from champ_core.body.motion import Motion
    from champ_core.body.smoothing import smooth_motion

    path = write_motion(os.path.join(folder_paths.get_input_directory(), "champ_jitter_source.npz"), frames=12)
    motion = Motion.load(path)
    rng = np.random.default_rng(0)
    motion.body_pose = motion.body_pose + rng.normal(0, 0.05, motion.body_pose.shape).astype(np.float32)
    motion.save(os.path.join(folder_paths.get_input_directory(), "champ_jitter.npz"))
    prompt = {
        "loaded": {"class_type": "ChampLoadMotion",
                   "inputs": {"motion_file": "champ_jitter.npz", "start_frame": 0, "frame_count": 0, "fps": 30.0}},
        "smooth": {"class_type": "ChampSmoothMotion", "inputs": {"motion": ["loaded", 0], "method": "gaussian",
                                                                 "strength": 2.0}},
        "save": {"class_type": "ChampSaveMotion", "inputs": {"motion": ["smooth", 0], "filename_prefix": "smooth"}},
    }
    result = comfy_host.run(prompt)
    assert result.success, result.error()
    record = result.outputs["save"]["motions"][0]
    saved = Motion.load(os.path.join(folder_paths.get_output_directory(), record["subfolder"], record["filename"]))
    expected = smooth_motion(Motion.load(os.path.join(folder_paths.get_input_directory(), "champ_jitter.npz")),
                             "gaussian", 2.0)
    np.testing.assert_allclose(saved.body_pose, expected.body_pose, atol=1e-6)
    jitter = lambda m: np.abs(np.diff(m.body_pose, 2, axis=0)).mean()  # noqa: E731
    assert jitter(saved) < 0.5 * jitter(motion)


def test_builtin_motion_aligned_to_the_fitted_reference(comfy_host):
    """Built-in clip -> aligned to the reference person fitted from keypoints -> guidance in the
    reference's camera; equal to champ_core's own alignment of the same inputs."""
    from pathlib import Path

    import folder_paths

    from champ_core.body.alignment import AlignOptions, align_to_reference
    from champ_core.body.model import open_body_model
    from champ_core.body.motion import Motion
    from champ_core.body.motions import builtin_motion, default_camera

    input_dir = Path(folder_paths.get_input_directory())
    write_keypoints(input_dir / "champ_reference_keypoints.json",
                    write_motion(input_dir / "champ_reference_pose.npz", frames=1))
    prompt = render_prompt({
        "clip": {"class_type": "ChampBuiltinMotion",
                 "inputs": {"body_model": ["body", 0], "motion": "walk", "seconds": FRAMES / 24, "fps": 24.0,
                            "width": 512, "height": 512}},
        "refkp": {"class_type": "ChampLoadKeypoints", "inputs": {"keypoint_file": "champ_reference_keypoints.json"}},
        "fitref": {"class_type": "ChampFitReference",
                   "inputs": {"pose_keypoint": ["refkp", 0], "body_model": ["body", 0], "iterations": 40}},
        "motion": {"class_type": "ChampAlignMotion",
                   "inputs": {"motion": ["clip", 0], "reference_body": ["fitref", 0], "body_model": ["body", 0],
                              "root_motion": "follow", "orientation": "motion", "use_reference_shape": True,
                              "override_figure_scale": False, "figure_scale": 0.0}},
    }, {"save_motion": {"class_type": "ChampSaveMotion", "inputs": {"motion": ["motion", 0],
                                                                    "filename_prefix": "champ/aligned"}},
        "save_ref": {"class_type": "ChampSaveMotion", "inputs": {"motion": ["fitref", 0],
                                                                 "filename_prefix": "champ/reference"}}})
    result = comfy_host.run(prompt)
    _check_guidance_outputs(result)

    def saved(node):
        record = result.outputs[node]["motions"][0]
        return Motion.load(Path(folder_paths.get_output_directory()) / record["subfolder"] / record["filename"])

    aligned, reference = saved("save_motion"), saved("save_ref")
    assert (aligned.camera.width, aligned.camera.height) == (SIZE, SIZE) == (reference.camera.width,
                                                                            reference.camera.height)
    body = open_body_model()
    clip = builtin_motion("walk", body, seconds=FRAMES / 24, fps=24.0, camera=default_camera(512, 512))
    expected = align_to_reference(clip, reference, body, AlignOptions())
    np.testing.assert_allclose(aligned.transl, expected.transl, atol=1e-5)
    np.testing.assert_allclose(aligned.betas, reference.betas[:1], atol=1e-6)
