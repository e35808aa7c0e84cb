"""The driving-video template (example_workflows/Animate a photo from a driving video.json) and its
example input, in the style of `comfy_examples.py` (whose helpers it uses):

core Load Video -> Get Video Components -> Champ Detect Pose -> Champ Fit Motion -> Smooth -> Align
to the reference -> Render Guidance -> Guidance Layers -> Sampler -> Decode -> Create/Save Video.

The example driving video `example_inputs/champ_example_driving.mp4` is made by the pack: the open
body dancing the built-in "wave", rendered as its normal map over grey (2 s, 24 fps, 512 x 512).
Core Load Video lists only ComfyUI's input folder, so the template's note says to copy it there
(or to upload any video with Load Video's upload button). Regenerate both with

    .venv/bin/python tests/pose_examples.py            # the video only: --video-only
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

import comfy_examples as ex  # noqa: E402

VIDEO_TEMPLATE = "Animate a photo from a driving video"
DRIVING_VIDEO = "champ_example_driving.mp4"
DRIVING_CLIP = "wave"

POSE_NOTE = (
    "Pose models (nothing is downloaded): yolox_l.onnx + dw-ll_ucoco_384.onnx (or\n"
    "dw-ll_ucoco_384_bs5.torchscript.pt) in ComfyUI/models/champ/pose/, or where comfyui_controlnet_aux\n"
    "keeps them (custom_nodes/comfyui_controlnet_aux/ckpts/yzd-v/DWPose/, ckpts/hr16/yolox-onnx/).\n"
    f"Driving video: copy the pack's example_inputs/{DRIVING_VIDEO} (the built-in 'wave' rendered by\n"
    "the pack) into ComfyUI/input/, or upload your own with Load Video's upload button."
)


def spec_video_to_animation() -> dict:
    """(d) reference image + a driving video -> DWPose -> SMPL fit -> guidance -> animation."""
    nodes = [
        ex._note("note", "Animate a photo with the motion of a driving video: DWPose keypoints of every frame\n"
                 "(Champ Detect Pose), an SMPL fit (Champ Fit Motion), smoothing, alignment to the\n"
                 "reference person, guidance maps, Champ.\n" + POSE_NOTE + "\n" + ex.INPUTS_NOTE + "\n\n"
                 + ex.MODEL_NOTE, (-820, -620), (820, 420)),
        {"id": "driving_video", "type": "LoadVideo", "pos": [-820, -120], "size": [340, 420],
         "widgets": {"file": DRIVING_VIDEO}, "title": "Driving video"},
        {"id": "driving_frames", "type": "GetVideoComponents", "pos": [-440, -120], "widgets": {}},
        {"id": "detect", "type": "ChampDetectPose", "pos": [-440, 20], "widgets": {"person": 0, "device": "auto"}},
        {"id": "body", "type": "ChampLoadBodyModel", "pos": [-420, 230], "widgets": {"model": ex.OPEN_BODY}},
        {"id": "ref_keypoints", "type": "ChampLoadKeypoints", "pos": [-420, 350],
         "widgets": {"keypoint_file": ex.MANNEQUIN_KEYPOINTS + ex.TAG}, "title": "Reference keypoints"},
        {"id": "fit", "type": "ChampFitMotion", "pos": [-20, -120], "widgets": {"fps": ex.EXAMPLE_FPS, "person": -1}},
        {"id": "smooth", "type": "ChampSmoothMotion", "pos": [-20, 60], "widgets": {}},
        {"id": "fit_reference", "type": "ChampFitReference", "pos": [-20, 200], "widgets": {}},
        {"id": "motion", "type": "ChampAlignMotion", "pos": [-20, 330], "widgets": {}},
        *ex._render_nodes(340, 60),
        *ex._generation_nodes(-420, 720),
    ]
    # ids must differ from comfy_examples' ("video" is its Create Video node)
    links = [("driving_video", 0, "driving_frames", "video"), ("driving_frames", 0, "detect", "images"), ("detect", 0, "fit", "pose_keypoint"),
             ("body", 0, "fit", "body_model"), ("fit", 0, "smooth", "motion"),
             ("ref_keypoints", 0, "fit_reference", "pose_keypoint"), ("body", 0, "fit_reference", "body_model"),
             ("smooth", 0, "motion", "motion"), ("fit_reference", 0, "motion", "reference_body"),
             ("body", 0, "motion", "body_model"), *ex._RENDER_LINKS, *ex._GENERATION_LINKS]
    return {"nodes": nodes, "links": links}


def write_driving_video(folder: Path = ex.EXAMPLE_INPUTS) -> Path:
    """example_inputs/champ_example_driving.mp4 from the built-in motion (deterministic content)."""
    from champ_core.train.prepare import driving_video_from_motion
    from champ_core.video import write_video

    seconds = ex.EXAMPLE_FRAMES / ex.EXAMPLE_FPS
    frames, _, _ = driving_video_from_motion(DRIVING_CLIP, seconds=seconds, fps=ex.EXAMPLE_FPS,
                                             width=ex.EXAMPLE_SIZE, height=ex.EXAMPLE_SIZE)
    path = Path(folder) / DRIVING_VIDEO
    write_video(path, frames, ex.EXAMPLE_FPS)
    return path


def main() -> int:
    """Write the example video, then the template and its thumbnail with a real host and browser."""
    import shutil
    import tempfile

    write_driving_video()
    if "--video-only" in sys.argv:
        return 0
    from comfy_browser import build_graph, load_workflow, open_front_end, prepare_settings
    from comfy_host import HttpHost
    from conftest import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    host = HttpHost(Path(tempfile.mkdtemp(prefix="champ-pose-example-")))
    (host.base / "input").mkdir(parents=True, exist_ok=True)
    shutil.copy(ex.EXAMPLE_INPUTS / DRIVING_VIDEO, host.base / "input" / DRIVING_VIDEO)  # Load Video's combo
    host.start()
    try:
        prepare_settings(host)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = open_front_end(browser.new_context(viewport={"width": 2000, "height": 1250}), host.url)
            workflow = build_graph(page, spec_video_to_animation())
            ex.template_path(VIDEO_TEMPLATE).write_text(json.dumps(workflow, indent=1) + "\n")
            load_workflow(page, workflow)
            ex.screenshot_graph(page, ex.EXAMPLES / f"{VIDEO_TEMPLATE}.jpg")
            print("wrote", ex.template_path(VIDEO_TEMPLATE))
            browser.close()
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
