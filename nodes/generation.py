"""Generation nodes: guidance layers, reference encoding, context windows, the sampler."""

from __future__ import annotations

import torch

from ..champ_core.guidance import GUIDANCE_TYPES as GUIDANCE_LAYERS
from ..champ_core.guidance import IMAGE_SUFFIXES
from ..champ_core.pipeline.inputs import FITS
from ..champ_core.pipeline.scheduler import BETA_SCHEDULES, SOLVERS
from ..champ_core.pipeline.windows import FUSIONS, MOTION_MODULE_POSITIONS, SCHEDULES, WindowOptions
from ._common import (
    CATEGORY,
    CHAMP_CONTEXT_OPTIONS,
    CHAMP_GUIDANCE,
    CHAMP_IMAGE_ENCODER,
    CHAMP_MODEL,
    CHAMP_REFERENCE,
    CHAMP_VAE,
    ChampNodeError,
    file_fingerprint,
    guidance_arrays,
    image_to_uint8,
    input_files,
    mask_to_uint8,
    resolve_input_file,
    temp_preview,
    uint8_to_image,
)


class ChampGuidanceLayers:
    NODE_ID = "ChampGuidanceLayers"
    DISPLAY_NAME = "Champ Guidance Layers"
    CATEGORY = f"{CATEGORY}/generation"
    DESCRIPTION = (
        "Collects the guidance maps that drive the animation: any subset of depth, normal, semantic map "
        "and DWPose skeleton, each an IMAGE batch (one frame per output frame), with a strength that "
        "multiplies that layer's guidance-encoder features (0 switches the layer off). Maps can come from "
        "Champ Render Guidance or from other packs. An optional mask blacks out the semantic map's "
        "background (pixels where the mask is 0), as Champ was trained. Shows a per-layer preview at a "
        "chosen frame in the node when the graph runs."
    )
    RETURN_TYPES = (CHAMP_GUIDANCE,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("The guidance layers and their strengths, for Champ Sampler.",)
    FUNCTION = "collect"
    # Not an output node: in a graph whose sampler cannot run (e.g. weights missing) the guidance part
    # must not run on its own and report a finished job. Guidance-only graphs end in a preview node
    # (Champ Overlay Preview or Champ Guidance Frame -> Preview Image).

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.05}
        optional = {}
        for name in GUIDANCE_LAYERS:
            optional[name] = ("IMAGE", {"tooltip": f"{name} maps, one frame per output frame (IMAGE batch)."})
        optional["mask"] = (
            "MASK",
            {"tooltip": "Person mask per frame; the semantic map is blacked out where the mask is 0 "
                        "(Champ's training convention)."},
        )
        required = {
            f"{name}_strength": ("FLOAT", {**strength, "tooltip": f"Multiplier on the {name} encoder's features."})
            for name in GUIDANCE_LAYERS
        }
        return {"required": required, "optional": optional}

    def collect(self, mask=None, **kwargs):
        layers = {name: kwargs[name] for name in GUIDANCE_LAYERS if kwargs.get(name) is not None}
        strengths = {name: float(kwargs[f"{name}_strength"]) for name in GUIDANCE_LAYERS}
        guidance = build_guidance(layers, strengths, mask)
        from ._preview import write_layer_previews

        previews = write_layer_previews(guidance["uint8"], guidance["strengths"])
        return {"ui": {"champ_layers": previews}, "result": (guidance,)}


def build_guidance(layers: dict[str, torch.Tensor], strengths: dict[str, float], mask=None) -> dict:
    """Check the layers agree in frame count and size; returns the CHAMP_GUIDANCE dict.

    CHAMP_GUIDANCE = {"layers": {name: IMAGE (T, H, W, 3)}, "strengths": {name: float},
    "frames": T, "width": W, "height": H, "uint8": {name: uint8 (T, H, W, 3) array}}; only connected
    layers are present ("uint8" holds the same frames, converted once for the nodes that read them).
    """
    if not layers:
        raise ChampNodeError(
            "Champ Guidance Layers: connect at least one of depth, normal, semantic_map, dwpose (IMAGE batches)"
        )
    shapes = {}
    clean = {}
    arrays = {}
    for name, image in layers.items():
        arrays[name] = array = image_to_uint8(image, name)  # validates, applies the alpha/gray fallbacks
        clean[name] = image if image.shape[-1] == 3 else uint8_to_image(array)
        shapes[name] = tuple(array.shape[:3])
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{n}: {s[0]} frames of {s[2]}x{s[1]}" for n, s in shapes.items())
        raise ChampNodeError(
            f"Champ Guidance Layers: all layers must have the same frame count and size; got {described}. "
            "Resize or trim them to match."
        )
    frames, height, width = next(iter(shapes.values()))
    if mask is not None and "semantic_map" in clean:
        mask_u8 = mask_to_uint8(mask, "mask")
        if mask_u8.shape != (frames, height, width):
            raise ChampNodeError(
                f"Champ Guidance Layers: mask is {mask_u8.shape[0]} frames of {mask_u8.shape[2]}x{mask_u8.shape[1]}, "
                f"the layers are {frames} frames of {width}x{height}"
            )
        # The library's masking (a threshold: the map is kept where the mask is > 0, as the reference does).
        from ..champ_core.pipeline.inputs import ArrayGuidance

        masked = ArrayGuidance({"semantic_map": arrays["semantic_map"]},
                               mask=mask_u8).read(range(frames), width, height, "squash")["semantic_map"]
        arrays["semantic_map"] = masked
        clean["semantic_map"] = uint8_to_image(masked)
    return {
        "layers": clean,
        "strengths": {name: float(strengths.get(name, 1.0)) for name in clean},
        "frames": int(frames),
        "width": int(width),
        "height": int(height),
        "uint8": arrays,
    }


class ChampGuidanceFrame:
    NODE_ID = "ChampGuidanceFrame"
    DISPLAY_NAME = "Champ Guidance Frame"
    CATEGORY = f"{CATEGORY}/generation"
    DESCRIPTION = (
        "One frame of every guidance layer side by side (in depth, normal, semantic map, DWPose order) as an "
        "IMAGE, for saving or comparing. Layers with strength 0 are left out."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The chosen frame of each layer, concatenated left to right.",)
    FUNCTION = "frame"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "guidance": (CHAMP_GUIDANCE, {"tooltip": "From Champ Guidance Layers."}),
                "frame": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Frame index (0-based)."}),
            }
        }

    def frame(self, guidance, frame):
        if frame >= guidance["frames"]:
            raise ChampNodeError(
                f"Champ Guidance Frame: frame {frame} is out of range; the guidance has {guidance['frames']} frames "
                f"(0..{guidance['frames'] - 1})"
            )
        tiles = [
            guidance["layers"][name][frame]
            for name in GUIDANCE_LAYERS
            if name in guidance["layers"] and guidance["strengths"][name] != 0
        ]
        if not tiles:
            raise ChampNodeError("Champ Guidance Frame: every layer has strength 0; nothing to show")
        return (torch.cat(tiles, dim=1)[None],)


class ChampLoadImage:
    NODE_ID = "ChampLoadImage"
    DISPLAY_NAME = "Champ Load Image"
    CATEGORY = f"{CATEGORY}/generation"
    DESCRIPTION = (
        "Loads a reference image from ComfyUI's input folder (upload one with the button) or one of the pack's "
        "example inputs (a public-domain portrait). Transparent images are put on white, 16-bit grayscale keeps "
        "its range. Core Load Image works just as well for your own photos."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The image (one frame).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (input_files(IMAGE_SUFFIXES),
                                       {"tooltip": "An image in ComfyUI's input folder, or a pack example."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        try:
            resolve_input_file(image, "image", IMAGE_SUFFIXES)
        except ChampNodeError as err:
            return str(err)
        return True

    @classmethod
    def IS_CHANGED(cls, image):
        try:
            return file_fingerprint(resolve_input_file(image, "image", IMAGE_SUFFIXES))
        except ChampNodeError:
            return image

    def load(self, image):
        from ..champ_core.pipeline.inputs import InputError, to_rgb_uint8

        path = resolve_input_file(image, "image", IMAGE_SUFFIXES)
        try:
            pixels = to_rgb_uint8(path)
        except InputError as err:
            raise ChampNodeError(f"Champ Load Image: {err}") from err
        return {"ui": {"images": [temp_preview(pixels, "champ_image")]}, "result": (uint8_to_image(pixels[None]),)}


class ChampEncodeReference:
    NODE_ID = "ChampEncodeReference"
    DISPLAY_NAME = "Champ Encode Reference"
    CATEGORY = f"{CATEGORY}/generation"
    DESCRIPTION = (
        "Encodes the reference image once for the whole video: its CLIP image embedding (the image squashed to "
        "224x224) and its VAE latent at the generation size. Width and height set the size of the generated "
        "video (multiples of 8)."
    )
    RETURN_TYPES = (CHAMP_REFERENCE,)
    RETURN_NAMES = ("reference",)
    OUTPUT_TOOLTIPS = ("The encoded reference, for Champ Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The person to animate (the first image of the batch is used)."}),
                "image_encoder": (CHAMP_IMAGE_ENCODER, {"tooltip": "From a Champ loader or Champ Use Core CLIP "
                                                                   "Vision & VAE."}),
                "vae": (CHAMP_VAE, {"tooltip": "The SD VAE."}),
                "width": ("INT", {"default": 512, "min": 8, "max": 4096, "step": 8,
                                  "tooltip": "Generation width in pixels."}),
                "height": ("INT", {"default": 512, "min": 8, "max": 4096, "step": 8,
                                   "tooltip": "Generation height in pixels."}),
                "fit": (FITS, {"default": "squash", "tooltip": "How the reference is brought to width x height: "
                                                                "squash (Champ's), crop (centre) or pad (white)."}),
            }
        }

    def encode(self, image, image_encoder, vae, width, height, fit):
        from ..champ_core.pipeline.sampling import encode_reference

        reference = image_to_uint8(image, "image")[0]
        try:
            encoding = encode_reference(vae.load(), image_encoder.load(), reference, width, height, fit)
        except ValueError as err:
            raise ChampNodeError(f"Champ Encode Reference: {err}") from err
        return ({"encoding": encoding, "width": int(width), "height": int(height), "fit": fit, "image": reference},)


class ChampContextOptions:
    NODE_ID = "ChampContextOptions"
    DISPLAY_NAME = "Champ Context Options"
    CATEGORY = f"{CATEGORY}/generation"
    DESCRIPTION = (
        "Temporal windows for long videos: the motion modules see at most 32 frames, so the video is denoised "
        "in overlapping windows whose predictions are averaged. Defaults are Champ's: 24 frames, overlap 4, "
        "closed loop, flat averaging."
    )
    RETURN_TYPES = (CHAMP_CONTEXT_OPTIONS,)
    RETURN_NAMES = ("context_options",)
    OUTPUT_TOOLTIPS = ("Window options for Champ Sampler.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        default = WindowOptions()
        return {
            "required": {
                "length": ("INT", {"default": default.length, "min": 1, "max": MOTION_MODULE_POSITIONS,
                                   "tooltip": f"Frames per window (<= {MOTION_MODULE_POSITIONS})."}),
                "overlap": ("INT", {"default": default.overlap, "min": 0, "max": MOTION_MODULE_POSITIONS - 1,
                                    "tooltip": "Frames shared by neighbouring windows (< length)."}),
                "stride": ("INT", {"default": default.stride, "min": 1, "max": 8,
                                   "tooltip": "1 = contiguous windows; more adds dilated windows."}),
                "schedule": (SCHEDULES, {"default": default.schedule,
                                         "tooltip": "loop: the last window wraps to the first frames (Champ); "
                                                    "open: no wrap."}),
                "fusion": (FUSIONS, {"default": default.fusion, "tooltip": "How overlapping predictions are "
                                                                           "averaged."}),
                "shift_per_step": ("BOOLEAN", {"default": default.shift_per_step,
                                               "tooltip": "Move the window grid at every step so seams do not "
                                                          "stay put."}),
            }
        }

    def make(self, length, overlap, stride, schedule, fusion, shift_per_step):
        options = WindowOptions(length, overlap, stride, schedule, fusion, bool(shift_per_step))
        try:
            options.validate()
        except ValueError as err:
            raise ChampNodeError(f"Champ Context Options: {err}") from err
        return (options,)


class ChampSampler:
    NODE_ID = "ChampSampler"
    DISPLAY_NAME = "Champ Sampler"
    CATEGORY = f"{CATEGORY}/generation"
    DESCRIPTION = (
        "Generates the video: denoises one latent per guidance frame, window by window, with the reference "
        "injected through the ReferenceNet and classifier-free guidance. Outputs a LATENT (unscaled SD "
        "latents, one per frame) that core VAE Decode or Champ Decode turns into frames. Shows progress per "
        "window and stops at the next window when you press Cancel."
    )
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("One latent per frame; decode with VAE Decode (core VAE) or Champ Decode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "champ_model": (CHAMP_MODEL, {"tooltip": "From Champ Model Loader."}),
                "reference": (CHAMP_REFERENCE, {"tooltip": "From Champ Encode Reference (sets the size)."}),
                "guidance": (CHAMP_GUIDANCE, {"tooltip": "From Champ Guidance Layers (sets the frame count)."}),
                "seed": ("INT", {"default": 42, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Noise seed."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 200, "tooltip": "Denoising steps."}),
                "cfg": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 20.0, "step": 0.1,
                                  "tooltip": "Classifier-free guidance scale (released Champ: 3.5; the built-in model: as its templates ship it; <= 1 turns it off)."}),
                "solver": (tuple(SOLVERS), {"default": "ddim", "tooltip": "Sampler; ddim is Champ's."}),
                "beta_schedule": (BETA_SCHEDULES, {"default": "linear",
                                                   "tooltip": "Noise schedule; linear is Champ's inference "
                                                              "setting."}),
            },
            "optional": {
                "context_options": (CHAMP_CONTEXT_OPTIONS, {"tooltip": "Temporal windows (default: Champ's "
                                                                       "24 frames, overlap 4, loop)."}),
            },
        }

    def sample(self, champ_model, reference, guidance, seed, steps, cfg, solver, beta_schedule, context_options=None):
        import comfy.model_management as mm
        import comfy.utils

        from ..champ_core.pipeline.inputs import ArrayGuidance
        from ..champ_core.pipeline.sampling import ChampDenoiser, SamplingOptions, unscaled_latents

        denoiser = ChampDenoiser(champ_model.load())
        width, height = reference["width"], reference["height"]
        layers = guidance_arrays(guidance)
        # Which layers are encoded (an encoder in the weights, strength not 0) is the library's choice.
        options = SamplingOptions(steps=int(steps), guidance_scale=float(cfg), seed=int(seed), solver=solver,
                                  beta_schedule=beta_schedule, windows=context_options or WindowOptions(),
                                  guidance_strengths=dict(guidance["strengths"]))
        source = ArrayGuidance(layers)
        bar = comfy.utils.ProgressBar(1)

        def progress(event):
            # Cancel is honoured between windows: ComfyUI raises InterruptProcessingException here.
            mm.throw_exception_if_processing_interrupted()
            if event.phase == "denoise":
                bar.update_absolute(event.done, event.total)

        try:
            latents = denoiser.denoise(reference["encoding"], source, width, height, options,
                                       fit=reference["fit"], progress=progress)
        except ValueError as err:
            raise ChampNodeError(f"Champ Sampler: {err}") from err
        # Unscaled latents, one per frame: ComfyUI's LATENT convention for SD1.5 (VAE Decode divides nothing).
        samples = unscaled_latents(latents, reference["encoding"].scaling_factor).to(mm.intermediate_device())
        return ({"samples": samples},)


class ChampDecode:
    NODE_ID = "ChampDecode"
    DISPLAY_NAME = "Champ Decode"
    CATEGORY = f"{CATEGORY}/generation"
    DESCRIPTION = (
        "Decodes a LATENT from Champ Sampler into frames with the Champ VAE (a few frames at a time, to bound "
        "memory). With ComfyUI's own VAE use core VAE Decode instead."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The decoded frames.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": "From Champ Sampler."}),
                "vae": (CHAMP_VAE, {"tooltip": "The SD VAE."}),
                "frames_per_chunk": ("INT", {"default": 8, "min": 1, "max": 256,
                                             "tooltip": "Frames decoded at once (memory vs speed)."}),
            }
        }

    def decode(self, latent, vae, frames_per_chunk):
        import comfy.model_management as mm
        import comfy.utils

        from ..champ_core.pipeline.sampling import decode_latents, scaled_latents

        codec = vae.load()
        samples = latent["samples"]
        if samples.ndim != 4 or samples.shape[1] != 4:
            raise ChampNodeError(f"Champ Decode: expected SD latents (frames, 4, h, w), got {tuple(samples.shape)}")
        bar = comfy.utils.ProgressBar(samples.shape[0])

        def progress(event):
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(event.done, event.total)

        # The library's decode loop, on scaled latents (1, 4, F, h, w) as the sampler hands them over.
        mm.throw_exception_if_processing_interrupted()
        try:
            chunks = [images for _, images in decode_latents(codec, scaled_latents(samples, codec.scaling_factor),
                                                             frames_per_chunk, progress=progress)]
        except ValueError as err:
            raise ChampNodeError(f"Champ Decode: {err}") from err
        return (torch.cat(chunks),)


NODES = [ChampGuidanceLayers, ChampGuidanceFrame, ChampLoadImage, ChampEncodeReference, ChampContextOptions, ChampSampler,
         ChampDecode]
