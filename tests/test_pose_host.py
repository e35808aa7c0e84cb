"""Champ Detect Pose in a real ComfyUI 0.3.75 (in-process), with random DWPose graphs of the real
files' signatures: core Load Video -> Get Video Components -> Champ Detect Pose -> Champ Fit Motion ->
Champ Render Guidance (the video -> pose -> fit -> render part of the driving-video template);
missing model files at validation; progress and Cancel."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.host
pytest.importorskip("onnx")

SIZE, FPS, SECONDS = 128, 12.0, 0.75
VIDEO = "champ_test_driving.mp4"


def _prompt(frames_fit_iterations: int = 30, person: int = 0) -> dict:
    return {
        "video": {"class_type": "LoadVideo", "inputs": {"file": VIDEO}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "detect": {"class_type": "ChampDetectPose", "inputs": {"images": ["parts", 0], "person": person,
                                                                "device": "cpu"}},
        "body": {"class_type": "ChampLoadBodyModel", "inputs": {"model": "open body (built-in, no SMPL files needed)"}},
        "fit": {"class_type": "ChampFitMotion", "inputs": {"pose_keypoint": ["detect", 0], "body_model": ["body", 0],
                                                          "fps": FPS, "iterations": frames_fit_iterations,
                                                          "person": -1}},
        "render": {"class_type": "ChampRenderGuidance", "inputs": {"body_model": ["body", 0], "motion": ["fit", 0],
                                                                  "width": 0, "height": 0, "backend": "torch"}},
        "save_pose": {"class_type": "SaveImage", "inputs": {"images": ["detect", 1], "filename_prefix": "champ_pose"}},
        "save_dwpose": {"class_type": "SaveImage", "inputs": {"images": ["render", 3],
                                                              "filename_prefix": "champ_pose_dwpose"}},
    }


@pytest.fixture(scope="module")
def driving_video(comfy_host):
    import folder_paths

    from champ_core.train.prepare import driving_video_from_motion
    from champ_core.video import write_video

    frames, keypoints, _ = driving_video_from_motion("wave", seconds=SECONDS, fps=FPS, width=SIZE, height=SIZE)
    write_video(os.path.join(folder_paths.get_input_directory(), VIDEO), frames, FPS)
    return frames, keypoints


def _load(record):
    import folder_paths
    from PIL import Image

    return np.asarray(Image.open(os.path.join(folder_paths.get_output_directory(), record["subfolder"],
                                              record["filename"])))


def test_missing_pose_models_fail_validation_naming_the_files(comfy_host, driving_video, monkeypatch):
    monkeypatch.delenv("CHAMP_POSE_MODELS", raising=False)
    result = comfy_host.run(_prompt())
    assert result.validation_error is not None and "detect" in result.node_errors
    details = result.node_errors["detect"]["errors"][0]["details"]
    assert "yolox_l.onnx" in details and "dw-ll_ucoco_384.onnx" in details
    assert os.path.join("models", "champ", "pose") in details and "comfyui_controlnet_aux" in details


@pytest.fixture(scope="module")
def pose_models(comfy_host, driving_video):
    """Random graphs in models/champ/pose/ whose planted box and keypoints are the video's first
    frame's person (requested after the missing-files test has run)."""
    import folder_paths
    from pose_graphs import make_dwpose, make_yolox, wholebody_points, yolox_rows

    from champ_core.pose import processing as P

    _, keypoints = driving_video
    person = keypoints[0]["people"][0]
    points = wholebody_points(person)
    (x0, y0), (x1, y1) = points.min(0) - 3, points.max(0) + 3
    ratio = 640 / SIZE
    folder = Path(folder_paths.models_dir) / "champ" / "pose"
    folder.mkdir(parents=True, exist_ok=True)
    make_yolox(folder / "yolox_l.onnx", planted=yolox_rows([((x0 + x1) / 2 * ratio, (y0 + y1) / 2 * ratio,
                                                            (x1 - x0) * ratio, (y1 - y0) * ratio, 0.9)]))
    centre, scale = P.box_center_scale(np.array([x0, y0, x1, y1]))
    make_dwpose(folder / "dw-ll_ucoco_384.onnx", points_crop=P.image_to_crop(points, centre, scale))
    return folder


def test_video_to_pose_to_fit_to_render(comfy_host, driving_video, pose_models):
    frames, keypoints = driving_video
    person = keypoints[0]["people"][0]
    progress = []
    comfy_host.server.listeners.append(lambda e, d: progress.append(d["value"]) if e == "progress"
                                       and d.get("node") == "detect" else None)
    try:
        result = comfy_host.run(_prompt())
    finally:
        comfy_host.server.listeners.pop()
    assert result.success, result.error()
    count = len(frames)
    assert progress[-1] == count and len(progress) >= count  # one step per frame
    detected = comfy_host.cached_output("detect")[0][0]
    assert len(detected) == count and detected[0]["canvas_width"] == SIZE
    body = np.asarray(detected[0]["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    source = np.asarray(person["pose_keypoints_2d"]).reshape(18, 3)
    seen = source[:, 2] > 0
    assert np.abs(body[seen, :2] - source[seen, :2]).max() < 1.5  # planted points back through the real plumbing
    pose_images = result.outputs["save_pose"]["images"]
    dwpose = result.outputs["save_dwpose"]["images"]
    assert len(pose_images) == count == len(dwpose)
    drawn, rendered = _load(pose_images[0]), _load(dwpose[0])
    assert drawn.shape == rendered.shape == (SIZE, SIZE, 3)
    # the detected skeleton and the fitted body's skeleton overlap
    a, b = drawn.max(-1) > 0, rendered.max(-1) > 0
    assert a.mean() > 0.01 and b.mean() > 0.01 and (a & b).sum() > 0.3 * min(a.sum(), b.sum())


def test_cancel_during_detection(comfy_host, driving_video, pose_models):
    prompt = _prompt()
    seen = []

    def listener(event, data):
        if event == "progress" and data.get("node") == "detect":
            seen.append(data["value"])
            if data["value"] == 2:
                comfy_host.interrupt()

    prompt["detect"]["inputs"]["device"] = "auto"  # not cached from the previous test
    comfy_host.server.listeners.append(listener)
    try:
        result = comfy_host.run(prompt)
    finally:
        comfy_host.server.listeners.remove(listener)
    assert not result.success
    error = result.error()
    assert error["event"] == "execution_interrupted" and error["node_type"] == "ChampDetectPose"
    assert seen[-1] == 2  # stopped at the next frame's check


def test_driving_video_template_runs_video_to_pose_to_fit_to_render(comfy_host, pose_models):
    """The shipped driving-video template's front half, as the front end would send it: its own
    nodes and widget values from the JSON (the example video in the input folder, random DWPose
    graphs planted on that video's person), cut at Render Guidance (the Champ weights are absent)."""
    import json
    import shutil

    import folder_paths
    from comfy_examples import EXAMPLE_INPUTS, template_path, workflow_to_prompt
    from pose_examples import DRIVING_CLIP, DRIVING_VIDEO, VIDEO_TEMPLATE
    from pose_graphs import make_dwpose, make_yolox, wholebody_points, yolox_rows

    from champ_core.pose import processing as P
    from champ_core.train.prepare import driving_video_from_motion
    from champ_core.video import read_video

    shutil.copy(EXAMPLE_INPUTS / DRIVING_VIDEO, Path(folder_paths.get_input_directory()) / DRIVING_VIDEO)
    frames, fps = read_video(EXAMPLE_INPUTS / DRIVING_VIDEO)
    size = frames.shape[1]
    _, keypoints, _ = driving_video_from_motion(DRIVING_CLIP, seconds=len(frames) / fps, fps=fps, width=size,
                                                height=size)
    points = wholebody_points(keypoints[0]["people"][0])
    (x0, y0), (x1, y1) = points.min(0) - 6, points.max(0) + 6
    ratio = 640 / size
    make_yolox(pose_models / "yolox_l.onnx", planted=yolox_rows([((x0 + x1) / 2 * ratio, (y0 + y1) / 2 * ratio,
                                                                  (x1 - x0) * ratio, (y1 - y0) * ratio, 0.9)]))
    centre, scale = P.box_center_scale(np.array([x0, y0, x1, y1]))
    make_dwpose(pose_models / "dw-ll_ucoco_384.onnx", points_crop=P.image_to_crop(points, centre, scale))

    workflow = json.loads(template_path(VIDEO_TEMPLATE).read_text())
    full = workflow_to_prompt(workflow, comfy_host.nodes.NODE_CLASS_MAPPINGS)
    render = next(k for k, v in full.items() if v["class_type"] == "ChampRenderGuidance")
    keep, todo = set(), [render]
    while todo:  # the render node and everything it depends on
        node = todo.pop()
        keep.add(node)
        todo += [v[0] for v in full[node]["inputs"].values() if isinstance(v, list) and v[0] not in keep]
    prompt = {k: full[k] for k in keep}
    kinds = sorted(v["class_type"] for v in prompt.values())
    assert {"LoadVideo", "GetVideoComponents", "ChampDetectPose", "ChampFitMotion", "ChampSmoothMotion",
            "ChampAlignMotion", "ChampFitReference"} <= set(kinds)
    fit = next(v for v in prompt.values() if v["class_type"] == "ChampFitMotion")
    fit["inputs"]["iterations"] = 20  # the shipped 120 only cost time here
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": [render, 3], "filename_prefix": "champ_tpl"}}
    result = comfy_host.run(prompt)
    assert result.success, result.error() or result.node_errors
    saved = result.outputs["save"]["images"]
    assert len(saved) == len(frames)
    assert (_load(saved[0]).max(-1) > 0).mean() > 0.005  # the aligned body's skeleton is drawn
