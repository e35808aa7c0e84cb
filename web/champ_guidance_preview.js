// Live preview for the "Champ Guidance Layers" node.
//
// When the node runs, the server writes one small PNG "sprite" per layer (at most 48 frames sampled
// evenly over the video, each at most 128 px on its longer side; see nodes/_preview.py) and sends
// their names in the node's UI output. This widget shows the chosen frame of every layer side by
// side, with a checkbox per layer and a frame slider. Changing the frame or the toggles only redraws
// from the sprites already in the browser: the graph is not run again and no video is transferred.
// The chosen frame and hidden layers are kept in node.properties (saved with the workflow, never
// sent in the prompt, so they do not invalidate ComfyUI's cache).

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "ChampGuidanceLayers";
const WIDGET_NAME = "champ_layer_preview";
const LABEL_HEIGHT = 16;

function spriteUrl(record) {
  const params = new URLSearchParams({
    filename: record.filename,
    subfolder: record.subfolder ?? "",
    type: record.type ?? "temp",
  });
  return api.apiURL(`/view?${params.toString()}`);
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load ${url}`));
    image.src = url;
  });
}

// The sprite slot showing the sampled frame nearest to `frame`.
function nearestSlot(indices, frame) {
  let best = 0;
  for (let i = 1; i < indices.length; i++) {
    if (Math.abs(indices[i] - frame) < Math.abs(indices[best] - frame)) best = i;
  }
  return best;
}

class LayerPreview {
  constructor(node) {
    this.node = node;
    this.records = [];
    this.images = new Map();
    node.properties = node.properties ?? {};
    node.properties.champ_preview = node.properties.champ_preview ?? { frame: 0, hidden: [] };

    this.root = document.createElement("div");
    this.root.className = "champ-layer-preview";
    Object.assign(this.root.style, {
      display: "flex", flexDirection: "column", gap: "4px", width: "100%", boxSizing: "border-box",
      padding: "2px", color: "#ddd", font: "11px sans-serif",
    });
    this.controls = document.createElement("div");
    Object.assign(this.controls.style, { display: "flex", flexWrap: "wrap", gap: "6px", alignItems: "center" });
    this.slider = document.createElement("input");
    this.slider.type = "range";
    this.slider.min = "0";
    this.slider.max = "0";
    this.slider.className = "champ-frame-slider";
    this.slider.addEventListener("input", () => this.setFrame(Number(this.slider.value)));
    this.frameLabel = document.createElement("span");
    this.frameLabel.className = "champ-frame-label";
    this.toggles = document.createElement("span");
    Object.assign(this.toggles.style, { display: "flex", gap: "6px" });
    this.controls.append(this.slider, this.frameLabel, this.toggles);
    this.canvas = document.createElement("canvas");
    this.canvas.className = "champ-layer-canvas";
    this.canvas.width = 1;
    this.canvas.height = 1;
    Object.assign(this.canvas.style, {
      width: "100%", maxHeight: "420px", objectFit: "contain", imageRendering: "auto", display: "none",
    });
    this.message = document.createElement("div");
    this.message.textContent = "Run the graph to preview the guidance layers.";
    this.root.append(this.controls, this.canvas, this.message);
  }

  get state() {
    return this.node.properties.champ_preview;
  }

  async setLayers(records) {
    this.records = records ?? [];
    const loaded = await Promise.all(
      this.records.map(async (r) => [r.layer, await loadImage(spriteUrl(r))]),
    );
    this.images = new Map(loaded);
    const frameCount = Math.max(1, ...this.records.map((r) => r.frame_count));
    this.slider.max = String(frameCount - 1);
    this.state.frame = Math.min(this.state.frame, frameCount - 1);
    this.slider.value = String(this.state.frame);
    this.buildToggles();
    this.draw();
  }

  buildToggles() {
    this.toggles.replaceChildren();
    for (const record of this.records) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.layer = record.layer;
      box.className = "champ-layer-toggle";
      box.checked = !this.state.hidden.includes(record.layer);
      box.addEventListener("change", () => this.setVisible(record.layer, box.checked));
      label.append(box, document.createTextNode(` ${record.layer}`));
      this.toggles.append(label);
    }
  }

  setVisible(layer, visible) {
    const hidden = new Set(this.state.hidden);
    if (visible) hidden.delete(layer);
    else hidden.add(layer);
    this.state.hidden = [...hidden];
    this.draw();
  }

  setFrame(frame) {
    this.state.frame = frame;
    this.draw();
  }

  draw() {
    const visible = this.records.filter((r) => !this.state.hidden.includes(r.layer) && this.images.has(r.layer));
    const frame = this.state.frame;
    this.frameLabel.textContent = `frame ${frame}`;
    this.root.dataset.frame = String(frame);
    this.root.dataset.visible = visible.map((r) => r.layer).join(",");
    this.message.style.display = this.records.length ? "none" : "block";
    this.canvas.style.display = this.records.length ? "block" : "none";
    const tileW = Math.max(1, ...visible.map((r) => r.tile_width));
    const tileH = Math.max(1, ...visible.map((r) => r.tile_height));
    this.canvas.width = Math.max(1, visible.length * tileW);
    this.canvas.height = tileH + LABEL_HEIGHT;
    const ctx = this.canvas.getContext("2d");
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    visible.forEach((record, i) => {
      const slot = nearestSlot(record.frame_indices, frame);
      const col = slot % record.columns;
      const row = Math.floor(slot / record.columns);
      ctx.drawImage(
        this.images.get(record.layer),
        col * record.tile_width, row * record.tile_height, record.tile_width, record.tile_height,
        i * tileW, LABEL_HEIGHT, record.tile_width, record.tile_height,
      );
      ctx.fillStyle = "#ddd";
      ctx.font = "11px sans-serif";
      ctx.fillText(`${record.layer} x${record.strength}`, i * tileW + 3, 12, tileW - 6);
    });
    this.node.setDirtyCanvas?.(true, true);
  }
}

app.registerExtension({
  name: "champ.GuidanceLayersPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.champPreview = new LayerPreview(this);
      const widget = this.addDOMWidget(WIDGET_NAME, "champ_preview", this.champPreview.root, {
        serialize: false,
        hideOnZoom: false,
        getMinHeight: () => 170,
      });
      widget.serialize = false;
      const size = this.computeSize();
      this.setSize([Math.max(size[0], 420), Math.max(size[1], 380)]);
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.champ_layers) this.champPreview?.setLayers(message.champ_layers);
    };
  },
});
