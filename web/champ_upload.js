// Upload buttons for the pack's file loaders: Champ Load Motion (.npz), Champ Load Keypoints (.json)
// and Champ Load Image. ComfyUI's own upload widgets only accept images, video and audio, so this
// adds a plain button that posts the chosen file to ComfyUI's /upload/image route (it stores any
// file in the input folder), adds the name to the node's list and selects it. The button is not
// part of the prompt.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const UPLOADS = {
  ChampLoadMotion: { widget: "motion_file", accept: ".npz", label: "upload motion (.npz)" },
  ChampLoadKeypoints: { widget: "keypoint_file", accept: ".json", label: "upload keypoints (.json)" },
  ChampLoadImage: { widget: "image", accept: "image/png,image/jpeg,image/webp,image/bmp", label: "upload image" },
};

async function uploadToInput(file) {
  const body = new FormData();
  body.append("image", file, file.name);
  body.append("type", "input");
  body.append("overwrite", "true");
  const response = await api.fetchApi("/upload/image", { method: "POST", body });
  if (response.status !== 200) {
    throw new Error(`uploading ${file.name} failed: ${response.status} ${response.statusText}`);
  }
  const saved = await response.json();
  return saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
}

function selectValue(node, combo, name) {
  const values = combo.options?.values;
  if (Array.isArray(values) && !values.includes(name)) {
    // Placeholder entries ("(no file ...)") go; the new file goes first, like the input folder's files.
    const kept = values.filter((v) => !String(v).startsWith("("));
    values.splice(0, values.length, name, ...kept);
  }
  combo.value = name;
  combo.callback?.(name);
  node.setDirtyCanvas?.(true, true);
  app.graph.setDirtyCanvas(true, true);
}

function addUploadButton(node, spec) {
  const combo = node.widgets?.find((w) => w.name === spec.widget);
  if (!combo) return;
  const input = document.createElement("input");
  input.type = "file";
  input.accept = spec.accept;
  input.style.display = "none";
  input.className = "champ-upload-input";
  input.dataset.nodeType = node.comfyClass ?? node.type;
  input.dataset.nodeId = String(node.id);
  input.addEventListener("change", async () => {
    const file = input.files?.[0];
    input.dataset.status = "uploading";
    if (!file) return;
    try {
      selectValue(node, combo, await uploadToInput(file));
      input.dataset.status = "done";
    } catch (error) {
      input.dataset.status = `error: ${error.message}`;
      console.error(`[champ] ${error.message}`);
    } finally {
      input.value = "";
    }
  });
  document.body.append(input);
  const button = node.addWidget("button", "champ_upload", null, () => input.click(), { serialize: false });
  button.label = spec.label;
  button.serialize = false;
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    input.remove();
    return onRemoved?.apply(this, arguments);
  };
  node.champUploadInput = input;
}

app.registerExtension({
  name: "champ.UploadButtons",
  beforeRegisterNodeDef(nodeType, nodeData) {
    const spec = UPLOADS[nodeData.name];
    if (!spec) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addUploadButton(this, spec);
      return result;
    };
  },
});
