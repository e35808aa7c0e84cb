"""The example workflows in the real front end, on the bundled front end (1.32.9) and the current one
(1.58): fetched from the server's template route (what Workflow > Browse Templates loads) and queued
with the Run button's path, with their shipped settings; the animation templates, which need the
Champ weights, stop at validation with the pack's message. With tiny test weights (bundled front end)
the animation templates run and the sampler's output equals champ_core's."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_browser import (
    attach_output_node,
    dismiss_dialogs,
    load_workflow,
    queue_loaded_graph,
    set_widgets,
    wait_idle,
)
from comfy_examples import (
    ANIMATION_TEMPLATES,
    EXAMPLE_FRAMES,
    EXAMPLE_INPUTS,
    EXAMPLE_SIZE,
    EXAMPLES,
    EXAMPLES_SPECS,
    MANNEQUIN_BACKGROUND,
    MANNEQUIN_IMAGE,
    MOTION_TEMPLATE,
    PREVIEW_TEMPLATE,
    REFERENCE_IMAGE,
)
from comfy_host import PACK_FOLDER, TINY_SIZE, front_end_version
from PIL import Image
from safetensors.torch import load_file

from champ_core.models.builtin import BuiltinSampling

pytestmark = [pytest.mark.browser, pytest.mark.host, pytest.mark.slow]

W, H = TINY_SIZE
TINY_FRAMES = 6
TINY = {
    "ChampEncodeReference": {"width": W, "height": H},
    "ChampRenderGuidance": {"width": W, "height": H},
    "ChampSampler": {"steps": 2, "seed": 5},
    "ChampContextOptions": {"length": 4, "overlap": 1},
    "ChampFitMotion": {"iterations": 20},
    "ChampFitReference": {"iterations": 20},
    "ChampLoadMotion": {"frame_count": TINY_FRAMES},
    "ChampImageEncoderVAELoader": {"image_encoder": "image_encoder", "vae": "sd-vae-ft-mse", "dtype": "fp32"},
    "ChampModelLoader": {"weights": "tiny", "dtype": "fp32"},
}
LAYERS = ("depth", "normal", "semantic_map", "dwpose")


def test_every_template_has_a_readable_name_and_a_graph_thumbnail():
    files = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert set(EXAMPLES_SPECS) <= set(files)
    for stem in EXAMPLES_SPECS:
        # The Templates dialog shows the file name as title and (with - and _ as spaces) as description.
        assert "_" not in stem and "-" not in stem and stem[0].isupper() and len(stem.split()) >= 4
        thumbnail = Image.open(EXAMPLES / f"{stem}.jpg")
        assert thumbnail.width == 1024 and EXAMPLES.joinpath(f"{stem}.jpg").stat().st_size > 30_000
        # Graph only: the dark canvas fills the picture's border (no menus, side bar or tabs).
        border = np.concatenate([np.asarray(thumbnail)[:4].reshape(-1, 3), np.asarray(thumbnail)[-4:].reshape(-1, 3)])
        assert np.median(border) < 60, stem
        workflow = json.loads((EXAMPLES / f"{stem}.json").read_text())
        notes = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "Note"]
        assert notes and "example_inputs/" in notes[0]
        if stem in ANIMATION_TEMPLATES:
            assert "models/champ/champ/" in notes[0] and "denoising_unet.pth" in notes[0]
        types = {n["type"] for n in workflow["nodes"]}
        assert {"CreateVideo", "SaveVideo", "ChampLoadImage"} <= types and "SaveAnimatedWEBP" not in types


def _template_from_server(host, name: str) -> dict:
    """The template as the Templates dialog gets it: listed by /workflow_templates, fetched from the
    pack's template route."""
    assert name in host.get_json("/workflow_templates")[PACK_FOLDER]
    return host.get_json(f"/api/workflow_templates/{PACK_FOLDER}/{urllib.parse.quote(name)}.json")


def _load_template(page, host, name, widgets=None) -> dict:
    workflow = _template_from_server(host, name)
    load_workflow(page, workflow)
    if widgets:
        present = page.evaluate("() => window.app.graph._nodes.map(n => n.type)")
        set_widgets(page, {t: v for t, v in widgets.items() if t in present})
    return workflow


def _video_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]


def _saved_video(host, entry, prompt) -> Path:
    save = next(k for k, v in prompt.items() if v["class_type"] == "SaveVideo")
    (record,) = entry["outputs"][save]["images"]
    assert record["filename"].endswith(".mp4") and entry["outputs"][save].get("animated") == [True]
    return host.base / "output" / record["subfolder"] / record["filename"]


def test_preview_template_runs_as_shipped_on_both_front_ends(front_end_page, front_end_host, artifacts_dir):
    page, host = front_end_page, front_end_host
    _load_template(page, host, PREVIEW_TEMPLATE)
    entry, prompt = queue_loaded_graph(page, host, timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    motion = next(v for v in prompt.values() if v["class_type"] == "ChampBuiltinMotion")["inputs"]
    assert (motion["width"], motion["height"]) == (EXAMPLE_SIZE, EXAMPLE_SIZE)
    frames = _video_frames(_saved_video(host, entry, prompt))
    assert len(frames) == EXAMPLE_FRAMES and frames[0].shape == (EXAMPLE_SIZE, EXAMPLE_SIZE, 3)
    page.wait_for_function("() => document.querySelector('.champ-layer-preview')?.dataset.visible === "
                           "'depth,normal,semantic_map,dwpose'", timeout=60_000)
    version = front_end_version(host.front_end)
    page.locator(".champ-layer-preview").screenshot(path=str(artifacts_dir / f"template_preview_{version}.png"))
    page.screenshot(path=str(artifacts_dir / f"template_preview_graph_{version}.png"))


@pytest.mark.parametrize("name", ANIMATION_TEMPLATES)
def test_animation_templates_run_as_shipped_with_the_builtin_model(browser_page, http_host, artifacts_dir, name):
    """As shipped, on a host with only this pack: the built-in model animates the example person, and
    the person it draws (pixels unlike the example's empty background) lies on the guidance mask:
    it overlaps it more than the same mask moved sideways. (The issue's target, IoU >= 0.8, is not
    reached by the current built-in model; docs/benchmarks.md has its figures.)"""
    from builtin_fixtures import placement_ious

    from champ_core.models.builtin import BUILTIN_CHOICE, IMAGE_SIZE

    page, host = browser_page, http_host
    wait_idle(host)
    _load_template(page, host, name)
    tag = "shipped_keypoints" if "keypoints" in name else "shipped_motion"
    # one extra output, so the test can read the mask the guidance drew: the semantic map (black outside)
    attach_output_node(page, "ChampRenderGuidance", 2, "SaveImage", "images", {"filename_prefix": f"{tag}/semantic"})
    entry, prompt = queue_loaded_graph(page, host, timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    loaders = [v["inputs"] for v in prompt.values() if v["class_type"] in ("ChampModelLoader",
                                                                          "ChampImageEncoderVAELoader")]
    assert {v for inputs in loaders for k, v in inputs.items() if k != "dtype"} == {BUILTIN_CHOICE}
    video = np.stack(_video_frames(_saved_video(host, entry, prompt)))
    semantic = np.stack([np.array(Image.open(f).convert("RGB")) for f in _saved(host, f"{tag}/semantic")])
    assert len(video) == len(semantic) == EXAMPLE_FRAMES and video.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3)
    background = np.asarray(Image.open(EXAMPLE_INPUTS / MANNEQUIN_BACKGROUND).convert("RGB"))
    masks = semantic.max(-1) > 0
    placed, moved = placement_ious(video, masks, background)
    middle = len(video) // 2
    Image.fromarray(np.concatenate([video[0], video[middle], semantic[middle]], 1)).save(
        artifacts_dir / f"template_{tag}.png")
    (artifacts_dir / f"template_{tag}.json").write_text(json.dumps({"fg_iou": placed, "shifted_iou": moved}))
    assert placed > moved + 0.02, (placed, moved)


@pytest.mark.parametrize("name", ANIMATION_TEMPLATES)
def test_animation_templates_with_released_weights_chosen_stop_at_validation_naming_them(
        front_end_page, front_end_host, name):
    """With the released weights chosen but not installed: Run is refused with the pack's message (the
    files and the folder), and nothing runs or is queued."""
    page, host = front_end_page, front_end_host
    wait_idle(host)
    _load_template(page, host, name, {"ChampModelLoader": {"weights": "champ"}})
    history_before = set(host.get_json("/history"))
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as answer:
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    response = answer.value
    # The front end shows it: 1.32 in a dialog with the message, 1.58 as an "Invalid input" toast with
    # the node marked (the message under View details); both keep the server's node errors.
    page.wait_for_function("() => document.body.innerText.includes('denoising_unet.pth') || "
                           "document.body.innerText.includes('Invalid input')", timeout=15_000)
    shown = page.evaluate("() => JSON.stringify(window.app.lastNodeErrors || {})")
    assert "denoising_unet.pth" in shown
    dismiss_dialogs(page)
    assert response.status == 400
    body = response.json()
    errors = body["node_errors"]
    model = next(k for k, v in errors.items() if v["class_type"] == "ChampModelLoader")
    details = errors[model]["errors"][0]["details"]
    for expected in ("denoising_unet.pth", "motion_module.pth", str(host.base / "models" / "champ" / "champ")):
        assert expected in details, details
    assert {v["class_type"] for v in errors.values()} == {"ChampModelLoader"}
    assert "not in list" not in json.dumps(body).lower()
    queue = host.get_json("/queue")
    assert not queue["queue_running"] and not queue["queue_pending"]
    assert set(host.get_json("/history")) == history_before


def test_upload_buttons_put_files_into_the_input_folder(front_end_page, front_end_host, tmp_path):
    page, host = front_end_page, front_end_host
    _load_template(page, host, MOTION_TEMPLATE)
    uploads = {
        "ChampLoadMotion": ("motion_file", EXAMPLE_INPUTS / "champ_example_motion.npz", "uploaded_motion.npz"),
        "ChampLoadImage": ("image", EXAMPLE_INPUTS / REFERENCE_IMAGE, "uploaded_reference.jpg"),
    }
    for node_type, (widget, source, name) in uploads.items():
        copy = tmp_path / name
        copy.write_bytes(source.read_bytes())
        selector = f".champ-upload-input[data-node-type='{node_type}']"
        page.set_input_files(selector, str(copy))
        page.wait_for_function(f"() => document.querySelector(\"{selector}\").dataset.status === 'done'",
                               timeout=30_000)
        assert (host.base / "input" / name).read_bytes() == source.read_bytes()
        value = page.evaluate(f"() => window.app.graph._nodes.find(n => n.type === '{node_type}')"
                              f".widgets.find(w => w.name === '{widget}').value")
        assert value == name
    # The button is no input of the prompt; the uploaded files are what the prompt names.
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    loader = next(v for v in prompt.values() if v["class_type"] == "ChampLoadMotion")
    assert loader["inputs"]["motion_file"] == "uploaded_motion.npz" and "champ_upload" not in loader["inputs"]


def _saved(http_host, prefix: str) -> list[Path]:
    folder = http_host.base / "output" / Path(prefix).parent
    return sorted(folder.glob(Path(prefix).name + "_*"))


def _champ_core_latents(http_host, guidance, steps, seed, length, overlap, cfg):
    from champ_core.models import load_champ_models
    from champ_core.pipeline.codecs import load_diffusers_vae, load_transformers_clip
    from champ_core.pipeline.inputs import ArrayGuidance
    from champ_core.pipeline.sampling import ChampPipeline, SamplingOptions
    from champ_core.pipeline.windows import WindowOptions

    root = http_host.base / "models" / "champ"
    pipe = ChampPipeline(load_champ_models(root / "tiny"), load_diffusers_vae(root / "sd-vae-ft-mse"),
                         load_transformers_clip(root / "image_encoder"))
    reference = np.array(Image.open(EXAMPLE_INPUTS / MANNEQUIN_IMAGE).convert("RGB"))
    options = SamplingOptions(steps=steps, guidance_scale=cfg, seed=seed,
                              windows=WindowOptions(length=length, overlap=overlap),
                              guidance_strengths=dict.fromkeys(LAYERS, 1.0))
    return pipe.animate(reference, ArrayGuidance(guidance), W, H, options, return_frames=False).latents


@pytest.mark.parametrize("name", [MOTION_TEMPLATE])  # the keypoints one fits 48 frames first: minutes here
def test_animation_template_runs_with_tiny_weights(browser_page, http_host, artifacts_dir, name):
    page = browser_page
    _load_template(page, http_host, name, TINY)
    # Extra outputs to check the result against champ_core: the rendered maps and the raw latents.
    tag = "keypoints" if "keypoints" in name else "motion"
    for slot, layer in enumerate(LAYERS):
        attach_output_node(page, "ChampRenderGuidance", slot, "SaveImage", "images",
                           {"filename_prefix": f"{tag}/guidance_{layer}"})
    attach_output_node(page, "ChampSampler", 0, "SaveLatent", "samples", {"filename_prefix": f"{tag}/latent"})
    entry, prompt = queue_loaded_graph(page, http_host, timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    assert {v["class_type"] for v in prompt.values()} >= {"ChampSampler", "ChampGuidanceLayers", "SaveVideo"}

    guidance = {}
    for layer in LAYERS:
        files = _saved(http_host, f"{tag}/guidance_{layer}")
        guidance[layer] = np.stack([np.array(Image.open(f).convert("RGB")) for f in files])
    frames = len(guidance["depth"])
    assert frames == (TINY_FRAMES if tag == "motion" else EXAMPLE_FRAMES)
    video = _video_frames(_saved_video(http_host, entry, prompt))
    assert len(video) == frames and video[0].shape == (H, W, 3)
    Image.fromarray(video[0]).save(artifacts_dir / f"template_{tag}_frame0.png")

    # The sampler's latents equal champ_core's for the same seed, weights and guidance.
    latents = load_file(str(_saved(http_host, f"{tag}/latent")[-1]))["latent_tensor"]
    assert latents.shape == (frames, 4, H // 8, W // 8)
    cfg = next(v["inputs"]["cfg"] for v in prompt.values() if v["class_type"] == "ChampSampler")
    assert cfg == BuiltinSampling.guidance_scale  # the template's own setting, as shipped
    expected = _champ_core_latents(http_host, guidance, steps=2, seed=5, length=4, overlap=1, cfg=cfg)
    torch.testing.assert_close(latents.float(), expected.float(), rtol=1e-4, atol=1e-4)


def test_cancel_from_the_front_end_stops_the_sampler_within_a_window(browser_page, http_host):
    """The front end's Cancel (api.interrupt -> POST /interrupt) during sampling: the sampler stops
    at its next window check and the next prompt runs normally."""
    page = browser_page
    _load_template(page, http_host, MOTION_TEMPLATE, {**TINY, "ChampSampler": {"steps": 60, "seed": 5}})
    page.evaluate(
        """() => {
            const api = window.comfyAPI.api.api;
            const sampler = String(window.app.graph._nodes.find(n => n.type === 'ChampSampler').id);
            window.__champProgress = [];
            window.__champCancelledAt = null;
            if (window.__champListener) api.removeEventListener('progress', window.__champListener);
            window.__champListener = (event) => {
                const detail = event.detail;
                if (String(detail.node) !== sampler) return;
                window.__champProgress.push([detail.value, detail.max]);
                if (detail.value >= 2 && window.__champCancelledAt === null) {
                    window.__champCancelledAt = detail.value;
                    api.interrupt();
                }
            };
            api.addEventListener('progress', window.__champListener);
        }"""
    )
    entry, _ = queue_loaded_graph(page, http_host)
    assert entry["status"]["status_str"] == "error"
    events = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in events and "execution_success" not in events
    interrupted = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_interrupted")
    assert interrupted["node_type"] == "ChampSampler"
    progress = page.evaluate("() => window.__champProgress")
    cancelled_at = page.evaluate("() => window.__champCancelledAt")
    total = progress[0][1]
    assert total == 60 * 2  # 60 steps x 2 windows of 4 frames (overlap 1) over 6 frames
    # At most one window after the server got the request (plus one for the request's travel time).
    assert max(value for value, _ in progress) <= cancelled_at + 2
    page.evaluate("() => window.comfyAPI.api.api.removeEventListener('progress', window.__champListener)")
    set_widgets(page, {"ChampSampler": {"steps": 2}})
    entry, _ = queue_loaded_graph(page, http_host)
    assert entry["status"]["status_str"] == "success"
