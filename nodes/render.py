"""Render nodes: guidance maps from a body motion, guidance folders, the overlay preview."""

from __future__ import annotations

import os

import numpy as np

from ._common import (
    CATEGORY,
    CHAMP_BODY_MODEL,
    CHAMP_GUIDANCE,
    CHAMP_MOTION,
    ChampNodeError,
    comfy_progress,
    image_to_uint8,
    log,
    uint8_to_image,
    uint8_to_mask,
)

BACKENDS = ("auto", "torch", "pyrender")
LAYERS = ("depth", "normal", "semantic_map", "dwpose")


class ChampRenderGuidance:
    NODE_ID = "ChampRenderGuidance"
    DISPLAY_NAME = "Champ Render Guidance"
    CATEGORY = f"{CATEGORY}/render"
    DESCRIPTION = (
        "Renders Champ's guidance maps for every frame of a motion: depth, normal, semantic map (SMPL part "
        "colours on black), the person mask, and the DWPose-style skeleton of the body's projected keypoints. "
        "Each is an IMAGE batch (mask: MASK) at the motion camera's view (rescaled to width x height if set), "
        "ready for Champ Guidance Layers or any other node."
    )
    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "IMAGE", "MASK")
    RETURN_NAMES = ("depth", "normal", "semantic_map", "dwpose", "mask")
    OUTPUT_TOOLTIPS = (
        "Depth maps (near = bright).",
        "Camera-space normal maps.",
        "Semantic part maps (black background).",
        "Skeleton drawings in the DWPose/OpenPose convention.",
        "Person masks.",
    )
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "body_model": (CHAMP_BODY_MODEL, {"tooltip": "The body model the motion was made for."}),
                "motion": (CHAMP_MOTION, {"tooltip": "Per-frame body parameters and camera."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8,
                                  "tooltip": "Output width; 0 = the motion camera's (the camera is rescaled to it)."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8,
                                   "tooltip": "Output height; 0 = the motion camera's."}),
                "backend": (BACKENDS, {"default": "auto", "tooltip": "Rasteriser: torch (any device) or pyrender "
                                                                   "(OpenGL); auto picks one that works here."}),
            }
        }

    def render(self, body_model, motion, width, height, backend):
        import comfy.model_management as mm

        from ..champ_core.body.keypoints import skeleton_keypoints
        from ..champ_core.render.api import render_guidance
        from ..champ_core.render.skeleton import draw_skeleton

        width = width or motion.camera.width
        height = height or motion.camera.height
        camera = motion.camera.resized(width, height)
        progress = comfy_progress(motion.num_frames)
        try:
            output = motion.pose(body_model)
            vertices = output.vertices.float().cpu()
            maps = render_guidance(vertices, body_model.faces, body_model.part_labels, camera,
                                   layers=("depth", "normal", "semantic_map", "mask"), backend=backend,
                                   device=mm.get_torch_device(), progress=progress)
            skeleton = draw_skeleton(skeleton_keypoints(vertices, output.joints, camera), width, height)
        except ValueError as err:
            raise ChampNodeError(f"Champ Render Guidance: {err}") from err
        return (uint8_to_image(maps["depth"]), uint8_to_image(maps["normal"]), uint8_to_image(maps["semantic_map"]),
                uint8_to_image(skeleton), uint8_to_mask(maps["mask"]))


class ChampLoadGuidanceFolder:
    NODE_ID = "ChampLoadGuidanceFolder"
    DISPLAY_NAME = "Champ Load Guidance Folder"
    CATEGORY = f"{CATEGORY}/render"
    DESCRIPTION = (
        "Loads guidance maps in the reference implementation's motion-folder layout (depth/ normal/ "
        "semantic_map/ dwpose/ mask/, one PNG per frame, same names in each) from a folder in ComfyUI's input "
        "folder. Missing layers come out as black frames with a warning; use Champ Guidance Layers' inputs to "
        "pick the ones you want."
    )
    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "IMAGE", "MASK", "INT")
    RETURN_NAMES = ("depth", "normal", "semantic_map", "dwpose", "mask", "frame_count")
    OUTPUT_TOOLTIPS = ("Depth frames.", "Normal frames.", "Semantic map frames.", "Skeleton frames.",
                       "Mask frames (all white if the folder has none).", "Number of frames loaded.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": ("STRING", {"default": "motion-01", "tooltip": "Folder inside ComfyUI's input folder "
                                                                        "(or an absolute path)."}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "First frame."}),
                "frame_count": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "0 = all frames."}),
            }
        }

    def load(self, folder, start_frame, frame_count):
        import folder_paths
        from PIL import Image

        from ..champ_core.guidance import (
            LAYER_NAMES,
            MASK,
            GuidanceFolderError,
            check_frame_lists,
            layer_frame_names,
        )

        root = folder if os.path.isabs(folder) else os.path.join(folder_paths.get_input_directory(), folder)
        try:
            names = layer_frame_names(root, LAYER_NAMES)
            frames = check_frame_lists(names, root)
        except GuidanceFolderError as err:
            raise ChampNodeError(f"Champ Load Guidance Folder: {err}") from err
        stop = len(frames) if frame_count == 0 else min(len(frames), start_frame + frame_count)
        chosen = frames[start_frame:stop]
        if not chosen:
            raise ChampNodeError(f"Champ Load Guidance Folder: start_frame {start_frame} is past the "
                                 f"{len(frames)} frames in {root}")
        loaded, size = {}, None
        for layer in names:
            suffix = {p.rsplit(".", 1)[0]: p for p in os.listdir(os.path.join(root, layer))}
            stack = []
            for name in chosen:
                image = Image.open(os.path.join(root, layer, suffix[name]))
                image = image.convert("L" if layer == MASK else "RGB")
                if size is None:
                    size = image.size
                if image.size != size:
                    raise ChampNodeError(f"Champ Load Guidance Folder: {layer}/{suffix[name]} is {image.size[0]}x"
                                         f"{image.size[1]}, other frames are {size[0]}x{size[1]}")
                stack.append(np.asarray(image))
            loaded[layer] = np.stack(stack)
        width, height = size
        absent = [layer for layer in LAYERS if layer not in loaded]
        if absent:
            log.warning("Champ Load Guidance Folder: %s has no %s folder(s); they are output as black frames",
                        root, ", ".join(absent))
        black = np.zeros((len(chosen), height, width, 3), np.uint8)
        outputs = [uint8_to_image(loaded.get(layer, black)) for layer in LAYERS]
        mask = loaded.get(MASK, np.full((len(chosen), height, width), 255, np.uint8))
        return (*outputs, uint8_to_mask(mask), len(chosen))


class ChampOverlayPreview:
    NODE_ID = "ChampOverlayPreview"
    DISPLAY_NAME = "Champ Overlay Preview"
    CATEGORY = f"{CATEGORY}/render"
    DESCRIPTION = (
        "Blends the guidance over the reference image (normal map inside the mask, skeleton on top), one frame "
        "per guidance frame, to check that the aligned body sits on the reference person."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("overlay",)
    OUTPUT_TOOLTIPS = ("The overlay frames.",)
    FUNCTION = "overlay"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference": ("IMAGE", {"tooltip": "The reference image (first of the batch)."}),
                "guidance": (CHAMP_GUIDANCE, {"tooltip": "From Champ Guidance Layers."}),
            }
        }

    def overlay(self, reference, guidance):
        from ..champ_core.render.writer import fit_reference, overlay_frame

        layers = {name: image_to_uint8(img, name) for name, img in guidance["layers"].items()}
        background = fit_reference(image_to_uint8(reference, "reference")[0], guidance["width"], guidance["height"])
        frames = np.stack([overlay_frame(background, layers, t) for t in range(guidance["frames"])])
        return (uint8_to_image(frames),)


NODES = [ChampRenderGuidance, ChampLoadGuidanceFolder, ChampOverlayPreview]
