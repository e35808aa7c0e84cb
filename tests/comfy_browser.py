"""Driving the real ComfyUI front end (comfyui-frontend-package 1.32.9 bundled with the host, or the
current one selected with --front-end-root) in headless Chromium.

Workflows are loaded with `app.loadGraphData` (as when a user opens a file) and queued with
`app.queuePrompt` (what the Run button calls: the front end turns the graph into a prompt and posts
it with its own API client); completion and the prompt it sent are read from the server's /history. `build_graph` makes UI-format workflows by creating real
nodes in the front end (used to author example_workflows/ and by tests).
"""

from __future__ import annotations

import time

FRONT_END_SETTINGS = {
    # No first-run template browser or tours over the canvas.
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    # Full-detail node drawing at any zoom, no minimap: for screenshots and thumbnails.
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Minimap.Visible": False,
}


def prepare_settings(http_host) -> None:
    status, _ = http_host.post_json("/settings", FRONT_END_SETTINGS)
    if status != 200:
        raise RuntimeError(f"POST /settings answered {status}")


def open_front_end(context, url: str, timeout_ms: int = 90_000):
    page = context.new_page()
    page.champ_console = []
    page.on("console", lambda m: page.champ_console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.champ_console.append(f"pageerror: {e}"))
    page.champ_failed = []  # (status, url) of every failed request, e.g. 404s for files a workflow names
    page.on("response", lambda r: page.champ_failed.append((r.status, r.url)) if r.status >= 400 else None)
    page.goto(url)
    page.wait_for_function(
        "() => window.app && window.app.graph && window.app.canvas && window.comfyAPI && window.comfyAPI.api",
        timeout=timeout_ms,
    )
    page.wait_for_function(
        "() => window.app.extensions.some(e => e.name === 'champ.GuidanceLayersPreview')", timeout=timeout_ms
    )
    page.keyboard.press("Escape")
    return page


def dismiss_dialogs(page, timeout_ms: int = 10_000) -> None:
    """Close the front end's modal dialogs (e.g. the validation-error dialog), as a user would."""
    for _ in range(5):
        if not page.locator(".p-dialog-mask").count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(200)
    page.wait_for_function("() => !document.querySelector('.p-dialog-mask')", timeout=timeout_ms)


def load_workflow(page, workflow: dict) -> None:
    page.evaluate("async (wf) => { await window.app.loadGraphData(structuredClone(wf), true, true); }", workflow)


def graph_to_prompt(page) -> dict:
    """The API-format prompt the front end builds from the loaded graph."""
    return page.evaluate("async () => (await window.app.graphToPrompt()).output")


def _known_prompt_ids(http_host) -> set[str]:
    queue = http_host.get_json("/queue")
    ids = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
    return ids | set(http_host.get_json("/history"))


def queue_from_front_end(page, http_host, timeout: float = 30.0) -> str:
    """Queue the loaded graph exactly as the Run button does (`app.queuePrompt`: the front end builds
    the prompt with graphToPrompt and posts it with its own API client); returns the new prompt id."""
    before = _known_prompt_ids(http_host)
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = _known_prompt_ids(http_host) - before
        if new:
            return new.pop()
        time.sleep(0.1)
    errors = "\n".join(page.champ_console[-20:])
    raise RuntimeError(f"the front end queued nothing within {timeout} s; console:\n{errors}")


def run_in_front_end(page, http_host, workflow: dict, timeout: float = 240.0) -> tuple[dict, dict]:
    """Load, queue from the front end, wait for the history entry; returns (history entry, prompt)."""
    load_workflow(page, workflow)
    return queue_loaded_graph(page, http_host, timeout)


def wait_idle(http_host, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = http_host.get_json("/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.2)
    raise RuntimeError("the ComfyUI queue did not empty")


BUILD_GRAPH_JS = """
async (spec) => {
  const app = window.app;
  app.graph.clear();
  const made = {};
  for (const n of spec.nodes) {
    const node = LiteGraph.createNode(n.type);
    if (!node) throw new Error(`unknown node type ${n.type}`);
    node.pos = n.pos;
    if (n.title) node.title = n.title;
    app.graph.add(node);
    for (const [name, value] of Object.entries(n.widgets || {})) {
      const widget = node.widgets.find(w => w.name === name);
      if (!widget) throw new Error(`${n.type} has no widget ${name}`);
      widget.value = value;
    }
    if (n.size) node.setSize(n.size);
    if (n.color) { node.color = n.color; node.bgcolor = n.bgcolor; }
    made[n.id] = node;
  }
  for (const [src, srcSlot, dst, dstName] of spec.links) {
    const target = made[dst];
    const slot = target.inputs.findIndex(i => i.name === dstName);
    if (slot < 0) throw new Error(`${target.type} has no input ${dstName}`);
    const out = typeof srcSlot === 'number' ? srcSlot : made[src].outputs.findIndex(o => o.name === srcSlot);
    if (out < 0) throw new Error(`${made[src].type} has no output ${srcSlot}`);
    made[src].connect(out, target, slot);
  }
  for (const g of spec.groups || []) {
    const group = new LiteGraph.LGraphGroup(g.title);
    group.pos = g.pos; group.size = g.size;
    if (g.color) group.color = g.color;
    app.graph.add(group);
  }
  app.graph.setDirtyCanvas(true, true);
  return JSON.parse(JSON.stringify(app.graph.serialize()));
}
"""


def build_graph(page, spec: dict) -> dict:
    """Create nodes/links in the front end from a small spec; returns the UI-format workflow.

    spec = {"nodes": [{"id", "type", "pos", "widgets": {name: value}, "title"?, "size"?}],
            "links": [(src_id, out_slot_or_name, dst_id, input_name)], "groups": [...]}
    """
    return page.evaluate(BUILD_GRAPH_JS, spec)


def set_widgets(page, values: dict[str, dict]) -> None:
    """Set widget values on the loaded graph's nodes, by node type: {type: {widget: value}}."""
    page.evaluate(
        """(values) => {
            for (const [type, widgets] of Object.entries(values)) {
                const nodes = window.app.graph._nodes.filter(n => n.type === type);
                if (!nodes.length) throw new Error(`no ${type} node in the graph`);
                for (const node of nodes) {
                    for (const [name, value] of Object.entries(widgets)) {
                        const widget = node.widgets.find(w => w.name === name);
                        if (!widget) throw new Error(`${type} has no widget ${name}`);
                        widget.value = value;
                    }
                }
            }
            window.app.graph.setDirtyCanvas(true, true);
        }""",
        values,
    )


def queue_loaded_graph(page, http_host, timeout: float = 240.0) -> tuple[dict, dict]:
    """Queue the graph as it is now in the front end and wait for its history entry; returns
    (history entry, the API-format prompt the front end sent)."""
    prompt_id = queue_from_front_end(page, http_host)
    entry = http_host.wait_history(prompt_id, timeout=timeout)
    return entry, entry["prompt"][2]


def attach_output_node(page, source_type: str, source_slot: int, node_type: str, input_name: str,
                       widgets: dict | None = None) -> None:
    """Add an output node (SaveImage, SaveLatent...) fed by a node of `source_type` in the loaded graph."""
    page.evaluate(
        """([sourceType, slot, nodeType, inputName, widgets]) => {
            const source = window.app.graph._nodes.find(n => n.type === sourceType);
            if (!source) throw new Error(`no ${sourceType} node in the graph`);
            const node = LiteGraph.createNode(nodeType);
            node.pos = [source.pos[0], source.pos[1] + source.size[1] + 40];
            window.app.graph.add(node);
            for (const [name, value] of Object.entries(widgets || {})) {
                node.widgets.find(w => w.name === name).value = value;
            }
            source.connect(slot, node, node.inputs.findIndex(i => i.name === inputName));
        }""",
        [source_type, source_slot, node_type, input_name, widgets or {}],
    )
