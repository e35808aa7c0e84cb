"""The guidance-layers web extension in the real front end (headless Chromium)."""

from __future__ import annotations

import pytest
from comfy_browser import build_graph, graph_to_prompt, run_in_front_end

pytestmark = [pytest.mark.browser, pytest.mark.host]

PREVIEW = ".champ-layer-preview"


def preview_spec():
    return {
        "nodes": [
            {"id": "depth", "type": "EmptyImage", "pos": [20, 40],
             "widgets": {"width": 96, "height": 64, "batch_size": 6, "color": 0xC04020}},
            {"id": "normal", "type": "EmptyImage", "pos": [20, 300],
             "widgets": {"width": 96, "height": 64, "batch_size": 6, "color": 0x3080F0}},
            {"id": "layers", "type": "ChampGuidanceLayers", "pos": [360, 40],
             "widgets": {"normal_strength": 0.5}},
            {"id": "frame", "type": "ChampGuidanceFrame", "pos": [820, 40], "widgets": {"frame": 2}},
            {"id": "preview", "type": "PreviewImage", "pos": [820, 200], "widgets": {}},
        ],
        "links": [("depth", 0, "layers", "depth"), ("normal", 0, "layers", "normal"),
                  ("layers", 0, "frame", "guidance"), ("frame", 0, "preview", "images")],
    }


def canvas_data(page) -> str:
    return page.evaluate(f"() => document.querySelector('{PREVIEW} canvas').toDataURL()")


def test_preview_renders_and_toggling_a_layer_changes_it(front_end_page, front_end_host, artifacts_dir):
    page, http_host = front_end_page, front_end_host
    workflow = build_graph(page, preview_spec())
    prompt = graph_to_prompt(page)
    # The preview widget is UI-only: it is neither in the prompt nor in the saved widget values.
    layers_node = next(v for v in prompt.values() if v["class_type"] == "ChampGuidanceLayers")
    assert "champ_layer_preview" not in layers_node["inputs"]
    assert len(next(n for n in workflow["nodes"] if n["type"] == "ChampGuidanceLayers")["widgets_values"]) == 4

    entry, _ = run_in_front_end(page, http_host, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    page.wait_for_function(f"() => document.querySelector('{PREVIEW}')?.dataset.visible === 'depth,normal'",
                           timeout=30_000)
    page.wait_for_timeout(300)
    page.locator(PREVIEW).screenshot(path=str(artifacts_dir / "guidance_preview_both_layers.png"))
    page.screenshot(path=str(artifacts_dir / "guidance_preview_graph.png"))
    both = canvas_data(page)
    size = page.evaluate(f"() => {{ const c = document.querySelector('{PREVIEW} canvas'); return [c.width, c.height]; }}")
    assert size[0] == 2 * 96  # two tiles of the 96 px wide frames (within the 128 px budget)

    # Toggling a layer and moving the frame slider redraw from the sprites already loaded:
    # no new prompt, no new image request.
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    history_before = len(http_host.get_json("/history"))
    page.locator(f"{PREVIEW} input.champ-layer-toggle[data-layer='normal']").uncheck()
    page.wait_for_function(f"() => document.querySelector('{PREVIEW}').dataset.visible === 'depth'")
    page.locator(PREVIEW).screenshot(path=str(artifacts_dir / "guidance_preview_depth_only.png"))
    only_depth = canvas_data(page)
    assert only_depth != both
    page.evaluate(f"""() => {{ const s = document.querySelector('{PREVIEW} .champ-frame-slider');
                               s.value = '5'; s.dispatchEvent(new Event('input')); }}""")
    assert page.evaluate(f"() => document.querySelector('{PREVIEW}').dataset.frame") == "5"
    assert len(http_host.get_json("/history")) == history_before
    assert not [u for u in requests if "/view" in u or "/prompt" in u]
    # The choice is kept on the node (saved with the workflow).
    hidden = page.evaluate("""() => window.app.graph._nodes.find(n => n.type === 'ChampGuidanceLayers')
                                      .properties.champ_preview.hidden""")
    assert hidden == ["normal"]


def test_extension_logs_no_error_and_nothing_the_pack_serves_is_missing(front_end_page):
    errors = [line for line in front_end_page.champ_console
              if line.startswith(("error", "pageerror")) and "champ" in line.lower()]
    assert errors == []
    # No 404 for the pack's files or for files its workflows name (the host's own /api/jobs 404s on the
    # current front end are a newer back-end route that 0.3.75 lacks).
    missing = [(status, url) for status, url in front_end_page.champ_failed
               if ("champ" in url.lower() or "/view" in url) and "/api/jobs" not in url]
    assert missing == []
