"""The example workflows (example_workflows/*.json) as small specs, and their regeneration.

The UI-format files are made by the real front end: `build_graph` creates the nodes in the
browser and `app.graph.serialize()` writes them, so they are exactly what ComfyUI would save.
The .jpg thumbnails are screenshots of the loaded workflows. Regenerate both with

    .venv/bin/python tests/comfy_examples.py

The inputs the workflows name (reference image, motion file, keypoints JSON) are the user's; the
tests write small ones with the same names into the test host's input folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_workflows"
DOCS_IMAGES = REPO / "docs" / "images"

REFERENCE_IMAGE = "champ_example_reference.png"
MOTION_FILE = "champ_example_motion.npz"
KEYPOINT_FILE = "champ_example_driving_keypoints.json"
REFERENCE_KEYPOINT_FILE = "champ_example_reference_keypoints.json"
OPEN_BODY = "open body (built-in, no SMPL files needed)"

MODEL_NOTE = (
    "Model files (nothing is downloaded):\n"
    "ComfyUI/models/champ/champ/  denoising_unet.pth, reference_unet.pth, motion_module.pth,\n"
    "    guidance_encoder_depth.pth, guidance_encoder_normal.pth, guidance_encoder_semantic_map.pth,\n"
    "    guidance_encoder_dwpose.pth  (the champ/ folder of the HF repo fudan-generative-ai/champ)\n"
    "ComfyUI/models/champ/image_encoder/  config.json + model.safetensors or pytorch_model.bin\n"
    "ComfyUI/models/champ/sd-vae-ft-mse/  config.json + diffusion_pytorch_model.safetensors\n"
    "Optional: SMPL_NEUTRAL.pkl in ComfyUI/models/smpl/ (else the built-in open body is used).\n"
    "Alternative for the encoder and VAE: Load CLIP Vision (models/clip_vision) + Load VAE\n"
    "(models/vae) into 'Champ Use Core CLIP Vision & VAE'."
)

NOTE_COLOR = {"color": "#432", "bgcolor": "#653"}


def _note(node_id, text, pos, size=(560, 230)):
    return {"id": node_id, "type": "Note", "pos": list(pos), "size": list(size), "widgets": {"text": text}, **NOTE_COLOR}


def _generation_nodes(x0: int, y0: int) -> list[dict]:
    return [
        {"id": "reference_image", "type": "LoadImage", "pos": [x0, y0], "widgets": {"image": REFERENCE_IMAGE}},
        {"id": "encoders", "type": "ChampImageEncoderVAELoader", "pos": [x0, y0 + 380],
         "widgets": {"image_encoder": "image_encoder", "vae": "sd-vae-ft-mse", "dtype": "auto"}},
        {"id": "model", "type": "ChampModelLoader", "pos": [x0, y0 + 540], "widgets": {"weights": "champ",
                                                                                      "dtype": "auto"}},
        {"id": "reference", "type": "ChampEncodeReference", "pos": [x0 + 380, y0 + 380],
         "widgets": {"width": 512, "height": 512, "fit": "squash"}},
        {"id": "context", "type": "ChampContextOptions", "pos": [x0 + 1280, y0 + 560], "widgets": {}},
        {"id": "sampler", "type": "ChampSampler", "pos": [x0 + 1280, y0 + 80],
         "widgets": {"seed": 42, "control_after_generate": "fixed", "steps": 20, "cfg": 3.5}},
        {"id": "decode", "type": "ChampDecode", "pos": [x0 + 1660, y0 + 80], "widgets": {}},
        {"id": "save", "type": "SaveAnimatedWEBP", "pos": [x0 + 1660, y0 + 260],
         "widgets": {"filename_prefix": "champ/animation", "fps": 24.0}},
    ]


_GENERATION_LINKS = [
    ("reference_image", 0, "reference", "image"),
    ("encoders", 0, "reference", "image_encoder"),
    ("encoders", 1, "reference", "vae"),
    ("model", 0, "sampler", "champ_model"),
    ("reference", 0, "sampler", "reference"),
    ("layers", 0, "sampler", "guidance"),
    ("context", 0, "sampler", "context_options"),
    ("sampler", 0, "decode", "latent"),
    ("encoders", 1, "decode", "vae"),
    ("decode", 0, "save", "images"),
]


def _render_nodes(x0: int, y0: int) -> list[dict]:
    return [
        {"id": "render", "type": "ChampRenderGuidance", "pos": [x0, y0],
         "widgets": {"width": 0, "height": 0, "backend": "auto"}},
        {"id": "layers", "type": "ChampGuidanceLayers", "pos": [x0 + 360, y0 - 60], "size": [440, 560],
         "widgets": {}},
    ]


_RENDER_LINKS = [
    ("body", 0, "render", "body_model"),
    ("motion", 0, "render", "motion"),
    ("render", 0, "layers", "depth"),
    ("render", 1, "layers", "normal"),
    ("render", 2, "layers", "semantic_map"),
    ("render", 3, "layers", "dwpose"),
    ("render", 4, "layers", "mask"),
]


def spec_keypoints_to_animation() -> dict:
    """(a) reference image + keypoints of a driving video (DWPose JSON) -> animation."""
    nodes = [
        _note("note", "Reference + driving-video keypoints -> animation.\n"
              f"Inputs (ComfyUI/input/): {REFERENCE_IMAGE}; {KEYPOINT_FILE} = the POSE_KEYPOINT JSON of the "
              f"driving video; {REFERENCE_KEYPOINT_FILE} = the same for the reference image (e.g. saved from "
              "comfyui_controlnet_aux's DWPose node, or connect its POSE_KEYPOINT output directly).\n\n"
              + MODEL_NOTE, (-420, -480), (760, 260)),
        {"id": "body", "type": "ChampLoadBodyModel", "pos": [-420, 0], "widgets": {"model": OPEN_BODY}},
        {"id": "keypoints", "type": "ChampLoadKeypoints", "pos": [-420, 130], "widgets": {"keypoint_file": KEYPOINT_FILE},
         "title": "Driving video keypoints"},
        {"id": "ref_keypoints", "type": "ChampLoadKeypoints", "pos": [-420, 250],
         "widgets": {"keypoint_file": REFERENCE_KEYPOINT_FILE}, "title": "Reference keypoints"},
        {"id": "fit", "type": "ChampFitMotion", "pos": [-20, -120],
         "widgets": {"fps": 24.0, "iterations": 200, "person": -1}},
        {"id": "smooth", "type": "ChampSmoothMotion", "pos": [-20, 60], "widgets": {}},
        {"id": "fit_reference", "type": "ChampFitReference", "pos": [-20, 200], "widgets": {"iterations": 300}},
        {"id": "motion", "type": "ChampAlignMotion", "pos": [-20, 330], "widgets": {}},
        *_render_nodes(340, 60),
        *_generation_nodes(-420, 720),
    ]
    links = [("keypoints", 0, "fit", "pose_keypoint"), ("body", 0, "fit", "body_model"), ("fit", 0, "smooth", "motion"),
             ("ref_keypoints", 0, "fit_reference", "pose_keypoint"), ("body", 0, "fit_reference", "body_model"),
             ("smooth", 0, "motion", "motion"), ("fit_reference", 0, "motion", "reference_body"),
             ("body", 0, "motion", "body_model"), *_RENDER_LINKS, *_GENERATION_LINKS]
    return {"nodes": nodes, "links": links}


def spec_motion_to_animation() -> dict:
    """(b) reference image + motion file -> animation."""
    nodes = [
        _note("note", "Reference + motion file -> animation.\n"
              f"Inputs (ComfyUI/input/): {REFERENCE_IMAGE}; {MOTION_FILE} = a Champ motion (.npz: per-frame SMPL "
              "parameters + camera), e.g. written by `python -m champ_core render`.\n\n" + MODEL_NOTE,
              (-420, -300), (760, 250)),
        {"id": "body", "type": "ChampLoadBodyModel", "pos": [-420, 0], "widgets": {"model": OPEN_BODY}},
        {"id": "motion", "type": "ChampLoadMotion", "pos": [-420, 130],
         "widgets": {"motion_file": MOTION_FILE, "start_frame": 0, "frame_count": 0}},
        *_render_nodes(340, 60),
        *_generation_nodes(-420, 620),
    ]
    return {"nodes": nodes, "links": [*_RENDER_LINKS, *_GENERATION_LINKS]}


def spec_guidance_preview() -> dict:
    """(c) guidance preview only: motion -> rendered maps -> per-layer preview and overlay."""
    nodes = [
        _note("note", "Guidance preview only (no Champ weights needed).\n"
              f"Inputs (ComfyUI/input/): {REFERENCE_IMAGE} (for the overlay). The motion is built in; swap in "
              "Champ Load Motion or Champ Fit Motion for your own.\n"
              "Optional: SMPL_NEUTRAL.pkl in ComfyUI/models/smpl/ (else the built-in open body).\n"
              "Run once, then scrub frames and toggle layers in Champ Guidance Layers' preview.",
              (-420, -220), (700, 170)),
        {"id": "body", "type": "ChampLoadBodyModel", "pos": [-420, 0], "widgets": {"model": OPEN_BODY}},
        {"id": "motion", "type": "ChampBuiltinMotion", "pos": [-420, 130],
         "widgets": {"motion": "walk", "seconds": 2.0, "fps": 24.0, "width": 512, "height": 512}},
        *_render_nodes(-20, 60),
        {"id": "reference_image", "type": "LoadImage", "pos": [-420, 420], "widgets": {"image": REFERENCE_IMAGE}},
        {"id": "overlay", "type": "ChampOverlayPreview", "pos": [840, 60], "widgets": {}},
        {"id": "preview", "type": "PreviewImage", "pos": [840, 200], "size": [320, 320], "widgets": {}},
    ]
    links = [*_RENDER_LINKS, ("body", 0, "motion", "body_model"), ("reference_image", 0, "overlay", "reference"), ("layers", 0, "overlay", "guidance"),
             ("overlay", 0, "preview", "images")]
    return {"nodes": nodes, "links": links}


def group_specs() -> dict[str, dict]:
    """Small graphs showing each node group, for docs/images/nodes_<group>.jpg."""
    models = {"nodes": [
        {"id": "model", "type": "ChampModelLoader", "pos": [0, 0], "widgets": {"weights": "champ"}},
        {"id": "enc", "type": "ChampImageEncoderVAELoader", "pos": [0, 150],
         "widgets": {"image_encoder": "image_encoder", "vae": "sd-vae-ft-mse"}},
        {"id": "clipv", "type": "CLIPVisionLoader", "pos": [0, 340], "widgets": {}},
        {"id": "vae", "type": "VAELoader", "pos": [0, 450], "widgets": {}},
        {"id": "core", "type": "ChampUseCoreEncoders", "pos": [360, 360], "widgets": {}},
    ], "links": [("clipv", 0, "core", "clip_vision"), ("vae", 0, "core", "vae")]}
    body = {"nodes": [
        {"id": "body", "type": "ChampLoadBodyModel", "pos": [0, 0], "widgets": {"model": OPEN_BODY}},
        {"id": "kp", "type": "ChampLoadKeypoints", "pos": [0, 120], "widgets": {"keypoint_file": KEYPOINT_FILE}},
        {"id": "fit", "type": "ChampFitMotion", "pos": [380, 0], "widgets": {}},
        {"id": "save", "type": "ChampSaveMotion", "pos": [720, 0], "widgets": {}},
        {"id": "refkp", "type": "ChampLoadKeypoints", "pos": [0, 260], "widgets": {"keypoint_file": KEYPOINT_FILE},
         "title": "Reference keypoints"},
        {"id": "fitref", "type": "ChampFitReference", "pos": [380, 240], "widgets": {}},
        {"id": "motion", "type": "ChampLoadMotion", "pos": [0, 400], "widgets": {"motion_file": MOTION_FILE}},
        {"id": "builtin", "type": "ChampBuiltinMotion", "pos": [0, 580], "widgets": {"motion": "dance"}},
        {"id": "smooth", "type": "ChampSmoothMotion", "pos": [380, 430], "widgets": {}},
        {"id": "align", "type": "ChampAlignMotion", "pos": [720, 240], "widgets": {}},
    ], "links": [("kp", 0, "fit", "pose_keypoint"), ("body", 0, "fit", "body_model"), ("fit", 0, "save", "motion"),
                 ("refkp", 0, "fitref", "pose_keypoint"), ("body", 0, "fitref", "body_model"),
                 ("body", 0, "builtin", "body_model"), ("builtin", 0, "smooth", "motion"),
                 ("smooth", 0, "align", "motion"), ("fitref", 0, "align", "reference_body"),
                 ("body", 0, "align", "body_model")]}
    return {"body": body, "models": models}


EXAMPLES_SPECS = {
    "champ_keypoints_to_animation": spec_keypoints_to_animation,
    "champ_motion_to_animation": spec_motion_to_animation,
    "champ_guidance_preview": spec_guidance_preview,
}


def write_example_inputs(input_dir: Path, frames: int = 6, size: tuple[int, int] = (32, 48)) -> None:
    """Small inputs with the names the example workflows use (reference, motion, keypoints)."""
    import shutil

    import numpy as np

    from champ_core.body.keypoints import (
        PoseFrames,
        openpose18_from_body,
        pose_frames_to_pose_keypoint,
        project,
    )
    from champ_core.body.model import open_body_model
    from champ_core.body.motion import Motion
    from champ_core.camera import Camera

    input_dir = Path(input_dir)
    shutil.copy(REPO / "tests" / "fixtures" / "champ_parity" / "pipeline" / "reference.png", input_dir / REFERENCE_IMAGE)
    width, height = size
    turn = np.linspace(0.0, 0.5, frames)
    orient = np.stack([np.full(frames, np.pi), turn, np.zeros(frames)], axis=1)
    pose = np.zeros((frames, 23, 3))
    pose[:, 15, 2] = -np.linspace(0, 1.0, frames)
    pose[:, 16, 2] = np.linspace(0, 0.8, frames)
    camera = Camera.hmr2_default(width, height)
    # Pelvis a little above the centre (the body hangs below it); 2 m of scene span the frame height.
    transl = np.tile([0.0, -0.25, camera.fy * 2.0 / height], (frames, 1))
    motion = Motion(orient, pose, np.zeros((1, 10)), transl, camera, fps=24.0)
    motion.save(input_dir / MOTION_FILE)
    out = motion.pose(open_body_model())
    xy = np.asarray(project(openpose18_from_body(out.vertices, out.joints), camera))
    frames_kp = PoseFrames(np.concatenate([xy, np.ones((*xy.shape[:2], 1))], axis=-1), width, height)
    (input_dir / KEYPOINT_FILE).write_text(json.dumps(pose_frames_to_pose_keypoint(frames_kp)))
    # The reference person: the first pose, a little to the side, as one frame of keypoints.
    ref_kp = PoseFrames(frames_kp.body[:1] + np.array([2.0, 1.0, 0.0]), width, height)
    (input_dir / REFERENCE_KEYPOINT_FILE).write_text(json.dumps(pose_frames_to_pose_keypoint(ref_kp)))


def fit_view(page) -> None:
    """Frame the whole graph in the canvas (the front end's own 'Fit view' command)."""
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")
    page.wait_for_timeout(500)


def screenshot_graph(page, path: Path, width: int = 1024, quality: int = 85) -> None:
    """A JPEG of the canvas (below the floating top bar), scaled to `width` pixels."""
    import io

    from PIL import Image

    fit_view(page)
    box = page.evaluate("() => { const r = window.app.canvas.canvas.getBoundingClientRect(); "
                        "return {x: r.x, y: r.y, width: r.width, height: r.height}; }")
    png = page.screenshot(clip={"x": box["x"], "y": box["y"] + 50, "width": box["width"], "height": box["height"] - 50})
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.save(path, "JPEG", quality=quality)


def main() -> int:
    """Regenerate example_workflows/*.json and their .jpg thumbnails with a real host and browser."""
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    sys.path.append(str(REPO))
    from comfy_browser import (
        build_graph,
        load_workflow,
        open_front_end,
        prepare_settings,
        queue_loaded_graph,
        set_widgets,
    )
    from comfy_host import HttpHost, write_tiny_inputs
    from conftest import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    EXAMPLES.mkdir(exist_ok=True)
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    host = HttpHost(Path(tempfile.mkdtemp(prefix="champ-examples-")))
    write_tiny_inputs(host.base)
    write_example_inputs(host.base / "input")
    host.start()
    try:
        prepare_settings(host)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 2000, "height": 1250})
            page = open_front_end(context, host.url)
            for group, spec in group_specs().items():
                build_graph(page, spec)
                screenshot_graph(page, DOCS_IMAGES / f"nodes_{group}.jpg", width=800)
            for name, make_spec in EXAMPLES_SPECS.items():
                workflow = build_graph(page, make_spec())
                (EXAMPLES / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
                load_workflow(page, workflow)
                if name == "champ_guidance_preview":  # show the preview filled in (example inputs are 2:3)
                    set_widgets(page, {"ChampBuiltinMotion": {"width": 256, "height": 384}})
                    entry, _ = queue_loaded_graph(page, host)
                    assert entry["status"]["status_str"] == "success", entry["status"]
                    page.wait_for_function("() => document.querySelector('.champ-layer-preview')?.dataset.visible")
                    page.wait_for_timeout(500)
                screenshot_graph(page, EXAMPLES / f"{name}.jpg")
                print("wrote", EXAMPLES / f"{name}.json")
                if name == "champ_guidance_preview":
                    screenshot_graph(page, DOCS_IMAGES / "nodes_render.jpg")
            # The generation group: the whole chain of the motion example.
            load_workflow(page, json.loads((EXAMPLES / "champ_motion_to_animation.json").read_text()))
            screenshot_graph(page, DOCS_IMAGES / "nodes_generation.jpg")
            browser.close()
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
