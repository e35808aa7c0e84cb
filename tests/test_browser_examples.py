"""Every example workflow, loaded into the real front end and queued from there, runs to success
with tiny test weights in the released layout; the sampler's output equals champ_core's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_browser import attach_output_node, load_workflow, queue_loaded_graph, set_widgets
from comfy_examples import EXAMPLES, EXAMPLES_SPECS, REFERENCE_IMAGE, write_example_inputs
from comfy_host import TINY_SIZE
from PIL import Image
from safetensors.torch import load_file

pytestmark = [pytest.mark.browser, pytest.mark.host, pytest.mark.slow]

W, H = TINY_SIZE
FRAMES = 6  # write_example_inputs' motion and keypoints
TINY = {
    "ChampEncodeReference": {"width": W, "height": H},
    "ChampRenderGuidance": {"width": W, "height": H, "backend": "torch"},
    "ChampSampler": {"steps": 2, "seed": 5},
    "ChampContextOptions": {"length": 4, "overlap": 1},
    "ChampFitMotion": {"iterations": 40},
    "ChampFitReference": {"iterations": 40},
    "ChampBuiltinMotion": {"width": W, "height": H, "seconds": FRAMES / 24, "fps": 24.0},
    "ChampImageEncoderVAELoader": {"dtype": "fp32"},
    "ChampModelLoader": {"dtype": "fp32"},
}
LAYERS = ("depth", "normal", "semantic_map", "dwpose")


def test_every_example_has_a_thumbnail_and_names_its_files():
    files = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert files == sorted(EXAMPLES_SPECS)
    for stem in files:
        assert (EXAMPLES / f"{stem}.jpg").stat().st_size > 10_000
        workflow = json.loads((EXAMPLES / f"{stem}.json").read_text())
        notes = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "Note"]
        assert notes and "ComfyUI/input/" in notes[0]
        if "animation" in stem:
            assert "models/champ/champ/" in notes[0] and "denoising_unet.pth" in notes[0]
        for node in workflow["nodes"]:  # every input file a workflow names is listed in its note
            for value in node.get("widgets_values") or []:
                if isinstance(value, str) and value.startswith("champ_example_"):
                    assert value in notes[0], (stem, value)


def _load_example(page, name, widgets):
    workflow = json.loads((EXAMPLES / f"{name}.json").read_text())
    load_workflow(page, workflow)
    present = page.evaluate("() => window.app.graph._nodes.map(n => n.type)")
    set_widgets(page, {t: v for t, v in widgets.items() if t in present})
    return workflow


def _output_files(http_host, entry, node_type_prefix=None):
    out = {}
    for node_id, output in entry["outputs"].items():
        for kind in ("images", "animated"):
            for record in output.get(kind, []) if isinstance(output.get(kind), list) else []:
                if isinstance(record, dict):
                    path = http_host.base / record.get("type", "output") / record["subfolder"] / record["filename"]
                    out.setdefault(node_id, []).append(path)
    return out


def _saved(http_host, prefix: str) -> list[Path]:
    folder = http_host.base / "output" / Path(prefix).parent
    return sorted(folder.glob(Path(prefix).name + "_*"))


def _champ_core_latents(http_host, guidance, steps, seed, length, overlap):
    from champ_core.models import load_champ_models
    from champ_core.pipeline.codecs import load_diffusers_vae, load_transformers_clip
    from champ_core.pipeline.inputs import ArrayGuidance
    from champ_core.pipeline.sampling import ChampPipeline, SamplingOptions
    from champ_core.pipeline.windows import WindowOptions

    root = http_host.base / "models" / "champ"
    pipe = ChampPipeline(load_champ_models(root / "champ"), load_diffusers_vae(root / "sd-vae-ft-mse"),
                         load_transformers_clip(root / "image_encoder"))
    reference = np.array(Image.open(http_host.base / "input" / REFERENCE_IMAGE).convert("RGB"))
    options = SamplingOptions(steps=steps, guidance_scale=3.5, seed=seed,
                              windows=WindowOptions(length=length, overlap=overlap),
                              guidance_strengths=dict.fromkeys(LAYERS, 1.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pipe.animate(reference, ArrayGuidance(guidance), W, H, options, return_frames=False).latents
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["champ_motion_to_animation", "champ_keypoints_to_animation"])
def test_animation_example_runs_from_the_front_end(browser_page, http_host, artifacts_dir, name):
    page = browser_page
    _load_example(page, name, TINY)
    # Extra outputs to check the result against champ_core: the rendered maps and the raw latents.
    for slot, layer in enumerate(LAYERS):
        attach_output_node(page, "ChampRenderGuidance", slot, "SaveImage", "images",
                           {"filename_prefix": f"{name}/guidance_{layer}"})
    attach_output_node(page, "ChampSampler", 0, "SaveLatent", "samples", {"filename_prefix": f"{name}/latent"})
    entry, prompt = queue_loaded_graph(page, http_host)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    assert {v["class_type"] for v in prompt.values()} >= {"ChampSampler", "ChampGuidanceLayers", "SaveAnimatedWEBP"}

    # The animation: FRAMES frames of W x H in the animated WEBP.
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "SaveAnimatedWEBP")
    record = entry["outputs"][save_id]["images"][0]
    webp = Image.open(http_host.base / "output" / record["subfolder"] / record["filename"])
    assert webp.n_frames == FRAMES and webp.size == (W, H)
    webp.save(artifacts_dir / f"{name}.png")

    # The sampler's latents equal champ_core's for the same seed, weights and guidance.
    guidance = {}
    for layer in LAYERS:
        files = _saved(http_host, f"{name}/guidance_{layer}")
        assert len(files) == FRAMES
        guidance[layer] = np.stack([np.array(Image.open(f).convert("RGB")) for f in files])
    latents = load_file(str(_saved(http_host, f"{name}/latent")[-1]))["latent_tensor"]
    assert latents.shape == (FRAMES, 4, H // 8, W // 8)
    expected = _champ_core_latents(http_host, guidance, steps=2, seed=5, length=4, overlap=1)
    torch.testing.assert_close(latents.float(), expected.float(), rtol=1e-4, atol=1e-5)


def test_guidance_preview_example_runs_and_previews(browser_page, http_host, artifacts_dir):
    page = browser_page
    _load_example(page, "champ_guidance_preview", TINY)
    entry, prompt = queue_loaded_graph(page, http_host)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    preview_id = next(k for k, v in prompt.items() if v["class_type"] == "PreviewImage")
    records = entry["outputs"][preview_id]["images"]
    assert len(records) == FRAMES
    first = Image.open(http_host.base / "temp" / records[0]["subfolder"] / records[0]["filename"])
    assert first.size == (W, H)
    page.wait_for_function("() => document.querySelector('.champ-layer-preview')?.dataset.visible === "
                           "'depth,normal,semantic_map,dwpose'", timeout=30_000)
    page.locator(".champ-layer-preview").screenshot(path=str(artifacts_dir / "example_guidance_preview.png"))


def test_example_inputs_are_what_the_workflows_name(tmp_path):
    write_example_inputs(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    for stem in EXAMPLES_SPECS:
        text = (EXAMPLES / f"{stem}.json").read_text()
        for value in ("champ_example_reference.png", "champ_example_motion.npz",
                      "champ_example_driving_keypoints.json", "champ_example_reference_keypoints.json"):
            if f'"{value}"' in text:
                assert value in names


def test_cancel_from_the_front_end_stops_the_sampler_within_a_window(browser_page, http_host):
    """The front end's Cancel (api.interrupt -> POST /interrupt) during sampling: the sampler stops
    at its next window check and the next prompt runs normally."""
    page = browser_page
    _load_example(page, "champ_motion_to_animation", {**TINY, "ChampSampler": {"steps": 60, "seed": 5}})
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
