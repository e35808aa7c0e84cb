"""Render nodes: guidance maps from a body motion, guidance folders, the overlay preview."""

from __future__ import annotations

import numpy as np

from ..champ_core.guidance import GUIDANCE_TYPES as LAYERS
from ..champ_core.render.backends import BACKENDS
from ._common import (
    CATEGORY,
    CHAMP_BODY_MODEL,
    CHAMP_GUIDANCE,
    CHAMP_MOTION,
    ChampNodeError,
    comfy_progress,
    folder_fingerprint,
    guidance_arrays,
    image_to_uint8,
    log,
    resolve_input_folder,
    uint8_to_image,
    uint8_to_mask,
)


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
                "folder": ("STRING", {"default": "motion-01", "tooltip": "Folder inside ComfyUI's input folder, "
                                                                        "by its name there (e.g. motion-01)."}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "First frame."}),
                "frame_count": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "0 = all frames."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, folder):
        try:
            resolve_input_folder(folder, "guidance folder")
        except ChampNodeError as err:
            return str(err)
        return True

    @classmethod
    def IS_CHANGED(cls, folder, **_):
        try:
            return folder_fingerprint(resolve_input_folder(folder, "guidance folder"))
        except ChampNodeError:
            return folder

    def load(self, folder, start_frame, frame_count):
        from pathlib import Path

        from ..champ_core.guidance import MASK, list_frames
        from ..champ_core.pipeline.inputs import BLACK, FolderGuidance, InputError, fit_image, to_rgb_uint8

        root = Path(resolve_input_folder(folder, "guidance folder"))
        stop = None if frame_count == 0 else start_frame + frame_count
        try:
            # The library's reader (as the CLI's animate): same frame selection, non-image files ignored,
            # the semantic map masked when a mask folder is there.
            source = FolderGuidance(root, frames=slice(start_frame, stop))
            names = source.frame_names
            first = {p.stem: p for p in list_frames(root / source.types[0])}[names[0]]
            height, width = to_rgb_uint8(first, BLACK).shape[:2]
            maps = source.read(range(len(names)), width, height, "squash")
            mask = None
            if (root / MASK).is_dir():
                files = {p.stem: p for p in list_frames(root / MASK)}
                missing = [n for n in names if n not in files]
                if missing:
                    raise ChampNodeError(f"Champ Load Guidance Folder: {root / MASK} has no frame(s) "
                                         f"{', '.join(missing[:5])}; every layer folder needs the same frame files")
                mask = np.stack([fit_image(to_rgb_uint8(files[n], BLACK), width, height)[..., 0] for n in names])
        except InputError as err:
            raise ChampNodeError(f"Champ Load Guidance Folder: {err}") from err
        absent = [layer for layer in LAYERS if layer not in maps]
        if absent:
            log.warning("Champ Load Guidance Folder: %s has no %s folder(s); they are output as black frames",
                        root, ", ".join(absent))
        black = np.zeros((len(names), height, width, 3), np.uint8)
        outputs = [uint8_to_image(maps.get(layer, black)) for layer in LAYERS]
        if mask is None:
            mask = np.full((len(names), height, width), 255, np.uint8)
        return (*outputs, uint8_to_mask(mask), len(names))


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

        layers = guidance_arrays(guidance)
        background = fit_reference(image_to_uint8(reference, "reference")[0], guidance["width"], guidance["height"])
        frames = np.stack([overlay_frame(background, layers, t) for t in range(guidance["frames"])])
        return (uint8_to_image(frames),)


NODES = [ChampRenderGuidance, ChampLoadGuidanceFolder, ChampOverlayPreview]
