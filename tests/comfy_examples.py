"""The example workflows (example_workflows/*.json) as small specs, the pack's example inputs,
and the regeneration of both.

The UI-format files are made by the real front end: `build_graph` creates the nodes in the
browser and `app.graph.serialize()` writes them, so they are exactly what ComfyUI would save.
The .jpg thumbnails are screenshots of the graph area only (the nodes' bounding box). Regenerate
both with

    .venv/bin/python tests/comfy_examples.py

The workflows name only files the pack ships in `example_inputs/` (listed by the pack's loaders as
"NAME [champ example]" next to the input folder's files; nothing is copied into the user's folders).
`write_pack_example_inputs` makes those files from the library's own built-in data: the
public-domain astronaut portrait from scikit-image with the hand-placed keypoints the demo uses, a
built-in motion and the keypoints of another one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_workflows"
EXAMPLE_INPUTS = REPO / "example_inputs"
DOCS_IMAGES = REPO / "docs" / "images"
TAG = " [champ example]"

REFERENCE_IMAGE = "champ_example_reference.jpg"
MOTION_FILE = "champ_example_motion.npz"
KEYPOINT_FILE = "champ_example_driving_keypoints.json"
REFERENCE_KEYPOINT_FILE = "champ_example_reference_keypoints.json"
# The animation templates' reference: a generated person (held-out seed) the built-in model never saw,
# its own motion (camera = its framing), the keypoints of its first frame and its empty background.
MANNEQUIN_IMAGE = "champ_example_mannequin.png"
MANNEQUIN_MOTION = "champ_example_mannequin_motion.npz"
MANNEQUIN_KEYPOINTS = "champ_example_mannequin_keypoints.json"
MANNEQUIN_BACKGROUND = "champ_example_mannequin_background.png"
MANNEQUIN_SEED_OFFSET, MANNEQUIN_CLIP = 11, "dance"
EXAMPLE_FILES = (REFERENCE_IMAGE, MOTION_FILE, KEYPOINT_FILE, REFERENCE_KEYPOINT_FILE, MANNEQUIN_IMAGE,
                 MANNEQUIN_MOTION, MANNEQUIN_KEYPOINTS, MANNEQUIN_BACKGROUND)
OPEN_BODY = "open body (built-in, no SMPL files needed)"
# The shipped example motions: 2 s at 24 fps, 512 x 512 camera.
EXAMPLE_FRAMES, EXAMPLE_FPS, EXAMPLE_SIZE = 48, 24.0, 512
MOTION_CLIP, DRIVING_CLIP = "dance", "wave"

MODEL_NOTE = (
    "Model: the pack's built-in small Champ (listed first in both loaders; nothing to download).\n"
    "It is 128 px and trained on generated mannequins only: real photographs are outside its domain.\n"
    "For photos, put the released Champ weights in your model folders and choose them in the loaders:\n"
    "ComfyUI/models/champ/champ/  denoising_unet.pth, reference_unet.pth, motion_module.pth,\n"
    "    guidance_encoder_depth.pth, guidance_encoder_normal.pth, guidance_encoder_semantic_map.pth,\n"
    "    guidance_encoder_dwpose.pth  (the champ/ folder of the HF repo fudan-generative-ai/champ)\n"
    "ComfyUI/models/champ/image_encoder/  config.json + model.safetensors or pytorch_model.bin\n"
    "ComfyUI/models/champ/sd-vae-ft-mse/  config.json + diffusion_pytorch_model.safetensors\n"
    "and set Champ Encode Reference to 512 x 512.\n"
    "Optional: SMPL_NEUTRAL.pkl in ComfyUI/models/smpl/ (else the built-in open body is used).\n"
    "Alternative for the encoder and VAE: Load CLIP Vision (models/clip_vision) + Load VAE\n"
    "(models/vae) into 'Champ Use Core CLIP Vision & VAE'."
)
INPUTS_NOTE = (
    "Inputs marked [champ example] ship with the pack (example_inputs/). For your own: upload with the\n"
    "loader's upload button (files go to ComfyUI/input/), or use core Load Image for the photo."
)

NOTE_COLOR = {"color": "#432", "bgcolor": "#653"}


def _note(node_id, text, pos, size=(560, 230)):
    return {"id": node_id, "type": "Note", "pos": list(pos), "size": list(size), "widgets": {"text": text}, **NOTE_COLOR}


def _video_nodes(x0: int, y0: int, prefix: str) -> list[dict]:
    """IMAGE frames -> core Create Video -> core Save Video (an mp4 previewed in the node)."""
    return [
        {"id": "video", "type": "CreateVideo", "pos": [x0, y0], "widgets": {"fps": EXAMPLE_FPS}},
        {"id": "save", "type": "SaveVideo", "pos": [x0, y0 + 130], "size": [420, 470],
         "widgets": {"filename_prefix": prefix, "format": "mp4", "codec": "h264"}},
    ]


def _generation_nodes(x0: int, y0: int) -> list[dict]:
    from champ_core.models.builtin import BUILTIN_CHOICE, IMAGE_SIZE, BuiltinSampling

    return [
        {"id": "reference_image", "type": "ChampLoadImage", "pos": [x0, y0], "size": [320, 380],
         "widgets": {"image": MANNEQUIN_IMAGE + TAG}, "title": "Reference image"},
        {"id": "encoders", "type": "ChampImageEncoderVAELoader", "pos": [x0, y0 + 420],
         "widgets": {"image_encoder": BUILTIN_CHOICE, "vae": BUILTIN_CHOICE, "dtype": "auto"}},
        {"id": "model", "type": "ChampModelLoader", "pos": [x0, y0 + 580], "widgets": {"weights": BUILTIN_CHOICE,
                                                                                      "dtype": "auto"}},
        {"id": "reference", "type": "ChampEncodeReference", "pos": [x0 + 380, y0 + 420],
         "widgets": {"width": IMAGE_SIZE, "height": IMAGE_SIZE, "fit": "squash"}},
        {"id": "context", "type": "ChampContextOptions", "pos": [x0 + 1280, y0 + 600],
         "widgets": {"length": BuiltinSampling.window_length, "overlap": BuiltinSampling.window_overlap}},
        {"id": "sampler", "type": "ChampSampler", "pos": [x0 + 1280, y0 + 80],
         "widgets": {"seed": BuiltinSampling.seed, "control_after_generate": "fixed", "steps": BuiltinSampling.steps,
                     "cfg": BuiltinSampling.guidance_scale, "solver": BuiltinSampling.solver,
                     "beta_schedule": BuiltinSampling.beta_schedule}},
        {"id": "decode", "type": "ChampDecode", "pos": [x0 + 1660, y0 + 80], "widgets": {}},
        *_video_nodes(x0 + 1660, y0 + 240, "champ/animation"),
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
    ("decode", 0, "video", "images"),
    ("video", 0, "save", "video"),
]


def _render_nodes(x0: int, y0: int) -> list[dict]:
    return [
        {"id": "render", "type": "ChampRenderGuidance", "pos": [x0, y0],
         "widgets": {"width": 0, "height": 0, "backend": "torch"}},  # no OpenGL needed, fast on CPU and GPU
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
        _note("note", "Animate a photo with the motion of a driving video's keypoints.\n"
              "Driving keypoints = the POSE_KEYPOINT JSON of the driving video (e.g. saved from\n"
              "comfyui_controlnet_aux's DWPose node, or connect its POSE_KEYPOINT output directly);\n"
              "reference keypoints = the same for the reference photo.\n" + INPUTS_NOTE + "\n\n"
              + MODEL_NOTE, (-420, -520), (760, 330)),
        {"id": "body", "type": "ChampLoadBodyModel", "pos": [-420, 0], "widgets": {"model": OPEN_BODY}},
        {"id": "keypoints", "type": "ChampLoadKeypoints", "pos": [-420, 130],
         "widgets": {"keypoint_file": KEYPOINT_FILE + TAG}, "title": "Driving video keypoints"},
        {"id": "ref_keypoints", "type": "ChampLoadKeypoints", "pos": [-420, 280],
         "widgets": {"keypoint_file": MANNEQUIN_KEYPOINTS + TAG}, "title": "Reference keypoints"},
        {"id": "fit", "type": "ChampFitMotion", "pos": [-20, -120], "widgets": {"fps": EXAMPLE_FPS, "person": -1}},
        {"id": "smooth", "type": "ChampSmoothMotion", "pos": [-20, 60], "widgets": {}},
        {"id": "fit_reference", "type": "ChampFitReference", "pos": [-20, 200], "widgets": {}},
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
        _note("note", "Animate a person with a motion file (.npz: per-frame SMPL parameters + camera, e.g.\n"
              "written by Champ Save Motion or `python -m champ_core render`). The example person and\n"
              "motion are generated by the pack (the motion is framed for that person).\n" + INPUTS_NOTE + "\n\n"
              + MODEL_NOTE, (-420, -330), (760, 290)),
        {"id": "body", "type": "ChampLoadBodyModel", "pos": [-420, 0], "widgets": {"model": OPEN_BODY}},
        {"id": "motion", "type": "ChampLoadMotion", "pos": [-420, 130],
         "widgets": {"motion_file": MANNEQUIN_MOTION + TAG, "start_frame": 0, "frame_count": 0}},
        *_render_nodes(340, 60),
        *_generation_nodes(-420, 620),
    ]
    return {"nodes": nodes, "links": [*_RENDER_LINKS, *_GENERATION_LINKS]}


def spec_guidance_preview() -> dict:
    """(c) guidance preview only: motion -> rendered maps -> per-layer preview and an overlay video."""
    nodes = [
        _note("note", "Preview Champ's guidance (no Champ weights needed): a built-in motion rendered as\n"
              "depth, normal, semantic map, skeleton and mask, shown per layer in Champ Guidance Layers\n"
              "(scrub frames, toggle layers) and as an overlay video over the reference photo.\n"
              "Swap in Champ Load Motion or Champ Fit Motion for your own motion.\n" + INPUTS_NOTE + "\n"
              "Optional: SMPL_NEUTRAL.pkl in ComfyUI/models/smpl/ (else the built-in open body).",
              (-420, -260), (760, 210)),
        {"id": "body", "type": "ChampLoadBodyModel", "pos": [-420, 0], "widgets": {"model": OPEN_BODY}},
        {"id": "motion", "type": "ChampBuiltinMotion", "pos": [-420, 130],
         "widgets": {"motion": "walk", "seconds": EXAMPLE_FRAMES / EXAMPLE_FPS, "fps": EXAMPLE_FPS,
                     "width": EXAMPLE_SIZE, "height": EXAMPLE_SIZE}},
        *_render_nodes(-20, 60),
        {"id": "reference_image", "type": "ChampLoadImage", "pos": [-420, 420], "size": [320, 380],
         "widgets": {"image": REFERENCE_IMAGE + TAG}, "title": "Reference image"},
        {"id": "overlay", "type": "ChampOverlayPreview", "pos": [840, 60], "widgets": {}},
        *_video_nodes(840, 200, "champ/guidance_overlay"),
    ]
    links = [*_RENDER_LINKS, ("body", 0, "motion", "body_model"), ("reference_image", 0, "overlay", "reference"),
             ("layers", 0, "overlay", "guidance"), ("overlay", 0, "video", "images"), ("video", 0, "save", "video")]
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
        {"id": "kp", "type": "ChampLoadKeypoints", "pos": [0, 120], "widgets": {"keypoint_file": KEYPOINT_FILE + TAG}},
        {"id": "fit", "type": "ChampFitMotion", "pos": [380, 0], "widgets": {}},
        {"id": "save", "type": "ChampSaveMotion", "pos": [720, 0], "widgets": {}},
        {"id": "refkp", "type": "ChampLoadKeypoints", "pos": [0, 270],
         "widgets": {"keypoint_file": REFERENCE_KEYPOINT_FILE + TAG}, "title": "Reference keypoints"},
        {"id": "fitref", "type": "ChampFitReference", "pos": [380, 240], "widgets": {}},
        {"id": "motion", "type": "ChampLoadMotion", "pos": [0, 420], "widgets": {"motion_file": MOTION_FILE + TAG}},
        {"id": "builtin", "type": "ChampBuiltinMotion", "pos": [0, 640], "widgets": {"motion": "dance"}},
        {"id": "smooth", "type": "ChampSmoothMotion", "pos": [380, 430], "widgets": {}},
        {"id": "align", "type": "ChampAlignMotion", "pos": [720, 240], "widgets": {}},
    ], "links": [("kp", 0, "fit", "pose_keypoint"), ("body", 0, "fit", "body_model"), ("fit", 0, "save", "motion"),
                 ("refkp", 0, "fitref", "pose_keypoint"), ("body", 0, "fitref", "body_model"),
                 ("body", 0, "builtin", "body_model"), ("builtin", 0, "smooth", "motion"),
                 ("smooth", 0, "align", "motion"), ("fitref", 0, "align", "reference_body"),
                 ("body", 0, "align", "body_model")]}
    return {"body": body, "models": models}


# File names are what the Templates dialog shows (as title, and as description with - and _ turned
# into spaces), under the pack's folder name: so they are short sentences without - or _.
KEYPOINTS_TEMPLATE = "Animate a photo from video keypoints"
MOTION_TEMPLATE = "Animate a photo from a motion file"
PREVIEW_TEMPLATE = "Preview the guidance of a motion"
EXAMPLES_SPECS = {
    KEYPOINTS_TEMPLATE: spec_keypoints_to_animation,
    MOTION_TEMPLATE: spec_motion_to_animation,
    PREVIEW_TEMPLATE: spec_guidance_preview,
}
ANIMATION_TEMPLATES = (KEYPOINTS_TEMPLATE, MOTION_TEMPLATE)


WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def _has_control_widget(name: str, spec) -> bool:
    """The front end adds a 'control after generate' widget after seed-like INT inputs."""
    options = spec[1] if len(spec) > 1 else {}
    return spec[0] == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed"))


def workflow_to_prompt(workflow: dict, node_classes: dict) -> dict:
    """An API-format prompt from a UI-format workflow (what the front end's graphToPrompt sends, for
    the plain nodes the templates use): widget values by the node's input order, links by slot."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in ("Note", "MarkdownNote") or node.get("mode", 0) in (2, 4):
            continue
        cls = node_classes[node["type"]]
        types = cls.INPUT_TYPES()
        specs = {**types.get("required", {}), **types.get("optional", {})}
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        for name, spec in specs.items():
            if _is_widget(spec):
                value = values.pop(0) if values else None
                if _has_control_widget(name, spec) and values:
                    values.pop(0)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                link = linked[name]
                inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def template_path(name: str) -> Path:
    return EXAMPLES / f"{name}.json"


def write_pack_example_inputs(folder: Path = EXAMPLE_INPUTS) -> list[Path]:
    """The pack's example inputs, made from the library's built-in data (deterministic)."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from champ_core.body.keypoints import (
        PoseFrames,
        openpose18_from_body,
        pose_frames_to_pose_keypoint,
        project,
    )
    from champ_core.body.model import open_body_model
    from champ_core.body.motions import builtin_motion, default_camera

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = open_body_model()
    camera = default_camera(EXAMPLE_SIZE, EXAMPLE_SIZE)
    seconds = EXAMPLE_FRAMES / EXAMPLE_FPS
    Image.fromarray(skimage.data.astronaut()).save(folder / REFERENCE_IMAGE, quality=90)
    builtin_motion(MOTION_CLIP, body, seconds=seconds, fps=EXAMPLE_FPS, camera=camera).save(folder / MOTION_FILE)
    driving = builtin_motion(DRIVING_CLIP, body, seconds=seconds, fps=EXAMPLE_FPS, camera=camera)
    posed = driving.pose(body)
    xy = np.asarray(project(openpose18_from_body(posed.vertices, posed.joints).numpy(), camera))
    pose = PoseFrames(np.concatenate([xy, np.ones((*xy.shape[:2], 1))], axis=-1).round(2), EXAMPLE_SIZE,
                      EXAMPLE_SIZE)
    (folder / KEYPOINT_FILE).write_text(json.dumps(pose_frames_to_pose_keypoint(pose)) + "\n")
    astronaut = REPO / "champ_core" / "body" / "data" / "astronaut_keypoints.json"
    frames = [{k: v for k, v in frame.items() if not k.startswith("_")} for frame in json.loads(astronaut.read_text())]
    (folder / REFERENCE_KEYPOINT_FILE).write_text(json.dumps(frames) + "\n")
    write_mannequin_inputs(folder, body)
    return [folder / name for name in EXAMPLE_FILES]


def mannequin_video(frames: int = EXAMPLE_FRAMES, body=None):
    """The generated person of the animation templates (a held-out synth-data seed), `frames` long."""
    from champ_core.evaluation.quality import HELD_OUT_SEED
    from champ_core.models.builtin import IMAGE_SIZE
    from champ_core.train.people import generate_video
    from champ_core.train.synth import SynthOptions

    options = SynthOptions(videos=1, frames=frames, size=IMAGE_SIZE, seed=HELD_OUT_SEED + MANNEQUIN_SEED_OFFSET,
                           motions="builtin", fps=EXAMPLE_FPS, builtin_motion=MANNEQUIN_CLIP)
    return generate_video(options, 0, body)


def write_mannequin_inputs(folder: Path, body=None) -> None:
    """The files of the templates' generated person (see MANNEQUIN_IMAGE)."""
    import numpy as np
    from PIL import Image

    from champ_core.body.keypoints import (
        PoseFrames,
        openpose18_from_body,
        pose_frames_to_pose_keypoint,
        project,
    )
    from champ_core.body.model import open_body_model

    body = body or open_body_model()
    video = mannequin_video(body=body)
    size = video.images.shape[1]
    Image.fromarray(video.images[0]).save(folder / MANNEQUIN_IMAGE)
    Image.fromarray(video.background).save(folder / MANNEQUIN_BACKGROUND)
    video.motion.save(folder / MANNEQUIN_MOTION)
    posed = video.motion.pose(body)
    xy = np.asarray(project(openpose18_from_body(posed.vertices[:1], posed.joints[:1]).numpy(), video.motion.camera))
    pose = PoseFrames(np.concatenate([xy, np.ones((*xy.shape[:2], 1))], axis=-1).round(2), size, size)
    (folder / MANNEQUIN_KEYPOINTS).write_text(json.dumps(pose_frames_to_pose_keypoint(pose)) + "\n")


def fit_view(page) -> None:
    """Frame the whole graph in the canvas (the front end's own 'Fit view' command)."""
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")
    page.wait_for_timeout(500)


GRAPH_BOX_JS = """
() => {
  const canvas = window.app.canvas, graph = window.app.graph;
  const title = LiteGraph.NODE_TITLE_HEIGHT || 30;
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  const add = (x, y, w, h) => { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w);
                                y1 = Math.max(y1, y + h); };
  for (const n of graph._nodes) add(n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title);
  for (const g of graph._groups || []) add(g.pos[0], g.pos[1], g.size[0], g.size[1]);
  const scale = canvas.ds.scale, offset = canvas.ds.offset;
  const rect = canvas.canvas.getBoundingClientRect();
  const pad = 12;
  const left = Math.max(rect.x, rect.x + (x0 + offset[0]) * scale - pad);
  const top = Math.max(rect.y, rect.y + (y0 + offset[1]) * scale - pad);
  const right = Math.min(rect.x + rect.width, rect.x + (x1 + offset[0]) * scale + pad);
  const bottom = Math.min(rect.y + rect.height, rect.y + (y1 + offset[1]) * scale + pad);
  return {x: left, y: top, width: right - left, height: bottom - top};
}
"""


def screenshot_graph(page, path: Path, width: int = 1024, quality: int = 85) -> None:
    """A JPEG of the graph only (the nodes' bounding box on the canvas, no menus or side bars),
    scaled to `width` pixels."""
    import io

    from PIL import Image

    fit_view(page)
    box = page.evaluate(GRAPH_BOX_JS)
    png = page.screenshot(clip=box)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.save(path, "JPEG", quality=quality)


def main() -> int:
    """Regenerate example_workflows/*.json and their .jpg thumbnails with a real host and browser."""
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    sys.path.append(str(REPO))
    from comfy_browser import build_graph, load_workflow, open_front_end, prepare_settings, queue_loaded_graph
    from comfy_host import HttpHost
    from conftest import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    EXAMPLES.mkdir(exist_ok=True)
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    write_pack_example_inputs()
    for old in ("champ_keypoints_to_animation", "champ_motion_to_animation", "champ_guidance_preview"):
        for suffix in (".json", ".jpg"):  # the earlier file names
            (EXAMPLES / f"{old}{suffix}").unlink(missing_ok=True)
    host = HttpHost(Path(tempfile.mkdtemp(prefix="champ-examples-")))
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
                template_path(name).write_text(json.dumps(workflow, indent=1) + "\n")
                load_workflow(page, workflow)
                if name == PREVIEW_TEMPLATE:  # show the previews filled in: run it as shipped
                    entry, _ = queue_loaded_graph(page, host, timeout=600)
                    assert entry["status"]["status_str"] == "success", entry["status"]
                    page.wait_for_function("() => document.querySelector('.champ-layer-preview')?.dataset.visible")
                    page.wait_for_timeout(1500)
                screenshot_graph(page, EXAMPLES / f"{name}.jpg")
                print("wrote", template_path(name))
                if name == PREVIEW_TEMPLATE:
                    screenshot_graph(page, DOCS_IMAGES / "nodes_render.jpg")
            # The generation group: the whole chain of the motion example.
            load_workflow(page, json.loads(template_path(MOTION_TEMPLATE).read_text()))
            screenshot_graph(page, DOCS_IMAGES / "nodes_generation.jpg")
            browser.close()
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
