"""Generation nodes: guidance layers, reference encoding, context windows, the sampler."""

from __future__ import annotations

import torch

from ._common import (
    CATEGORY,
    CHAMP_CONTEXT_OPTIONS,
    CHAMP_GUIDANCE,
    CHAMP_IMAGE_ENCODER,
    CHAMP_MODEL,
    CHAMP_REFERENCE,
    CHAMP_VAE,
    ChampNodeError,
    image_to_uint8,
    log,
    mask_to_uint8,
    uint8_to_image,
)

GUIDANCE_LAYERS = ("depth", "normal", "semantic_map", "dwpose")  # = champ_core.guidance.GUIDANCE_TYPES


class ChampGuidanceLayers:
    NODE_ID = "ChampGuidanceLayers"
    DISPLAY_NAME = "Champ Guidance Layers"
    CATEGORY = f"{CATEGORY}/generation"
    DESCRIPTION = (
        "Collects the guidance maps that drive the animation: any subset of depth, normal, semantic map "
        "and DWPose skeleton, each an IMAGE batch (one frame per output frame), with a strength that "
        "multiplies that layer's guidance-encoder features (0 switches the layer off). Maps can come from "
        "Champ Render Guidance or from other packs. An optional mask blacks out the semantic map's "
        "background, as Champ was trained. Shows a per-layer preview at a chosen frame in the node."
    )
    RETURN_TYPES = (CHAMP_GUIDANCE,)
    RETURN_NAMES = ("guidance",)
    OUTPUT_TOOLTIPS = ("The guidance layers and their strengths, for Champ Sampler.",)
    FUNCTION = "collect"
    # An output node, so a graph that only previews guidance (no sampler yet) still runs it.
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.05}
        optional = {}
        for name in GUIDANCE_LAYERS:
            optional[name] = ("IMAGE", {"tooltip": f"{name} maps, one frame per output frame (IMAGE batch)."})
        optional["mask"] = (
            "MASK",
            {"tooltip": "Person mask per frame; multiplies the semantic map (black background)."},
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

        previews = write_layer_previews(
            {name: image_to_uint8(img, name) for name, img in guidance["layers"].items()}, guidance["strengths"]
        )
        return {"ui": {"champ_layers": previews}, "result": (guidance,)}


def build_guidance(layers: dict[str, torch.Tensor], strengths: dict[str, float], mask=None) -> dict:
    """Check the layers agree in frame count and size; returns the CHAMP_GUIDANCE dict.

    CHAMP_GUIDANCE = {"layers": {name: IMAGE (T, H, W, 3)}, "strengths": {name: float},
    "frames": T, "width": W, "height": H}; only connected layers are present.
    """
    if not layers:
        raise ChampNodeError(
            "Champ Guidance Layers: connect at least one of depth, normal, semantic_map, dwpose (IMAGE batches)"
        )
    shapes = {}
    clean = {}
    for name, image in layers.items():
        array = image_to_uint8(image, name)  # validates, applies the alpha/gray fallbacks
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
        clean["semantic_map"] = clean["semantic_map"] * torch.from_numpy(mask_u8).float().div(255)[..., None]
    return {
        "layers": clean,
        "strengths": {name: float(strengths.get(name, 1.0)) for name in clean},
        "frames": int(frames),
        "width": int(width),
        "height": int(height),
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


FITS = ("squash", "crop", "pad")


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
        from ..champ_core.pipeline.sampling import ChampPipeline

        reference = image_to_uint8(image, "image")[0]
        pipeline = ChampPipeline(None, vae.load(), image_encoder.load())
        try:
            encoding = pipeline.encode_reference(reference, width, height, fit)
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
        return {
            "required": {
                "length": ("INT", {"default": 24, "min": 1, "max": 32, "tooltip": "Frames per window (<= 32)."}),
                "overlap": ("INT", {"default": 4, "min": 0, "max": 31, "tooltip": "Frames shared by neighbouring "
                                                                                 "windows (< length)."}),
                "stride": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip": "1 = contiguous windows; more "
                                                                               "adds dilated windows."}),
                "schedule": (("loop", "open"), {"default": "loop", "tooltip": "loop: the last window wraps to the "
                                                                              "first frames (Champ); open: no wrap."}),
                "fusion": (("flat", "pyramid"), {"default": "flat", "tooltip": "How overlapping predictions are "
                                                                                "averaged."}),
                "shift_per_step": ("BOOLEAN", {"default": False, "tooltip": "Move the window grid at every step "
                                                                              "so seams do not stay put."}),
            }
        }

    def make(self, length, overlap, stride, schedule, fusion, shift_per_step):
        from ..champ_core.pipeline.windows import WindowOptions

        options = WindowOptions(length, overlap, stride, schedule, fusion, bool(shift_per_step))
        try:
            options.validate()
        except ValueError as err:
            raise ChampNodeError(f"Champ Context Options: {err}") from err
        return (options,)


def _solvers():
    return ("ddim", "euler", "euler_ancestral", "dpmpp_2m", "unipc")


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
                                  "tooltip": "Classifier-free guidance scale (Champ: 3.5; <= 1 turns it off)."}),
                "solver": (_solvers(), {"default": "ddim", "tooltip": "Sampler; ddim is Champ's."}),
                "beta_schedule": (("linear", "scaled_linear"), {"default": "linear",
                                                                 "tooltip": "Noise schedule; linear is Champ's "
                                                                            "inference setting."}),
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
        from ..champ_core.pipeline.sampling import ChampPipeline, SamplingOptions
        from ..champ_core.pipeline.windows import WindowOptions

        models = champ_model.load()
        pipeline = ChampPipeline(models, None, None)
        width, height = reference["width"], reference["height"]
        layers = {name: image_to_uint8(img, name) for name, img in guidance["layers"].items()}
        missing = [name for name in layers if name not in models.guidance_encoders]
        usable = [name for name in layers if name in models.guidance_encoders]
        if not usable:
            raise ChampNodeError(
                f"Champ Sampler: the guidance has only {', '.join(missing)}, but the loaded weights have encoders "
                f"for {', '.join(models.guidance_encoders) or 'none'}"
            )
        if missing:
            log.warning("Champ Sampler: no guidance encoder for %s in the loaded weights; those layers are ignored",
                        ", ".join(missing))
        # A layer at strength 0 adds exactly nothing: skip encoding it (unless every layer is at 0).
        active = [name for name in usable if guidance["strengths"][name] != 0] or usable
        strengths = {name: guidance["strengths"][name] for name in active}
        options = SamplingOptions(steps=int(steps), guidance_scale=float(cfg), seed=int(seed), solver=solver,
                                  beta_schedule=beta_schedule, windows=context_options or WindowOptions(),
                                  guidance_strengths=strengths)
        source = ArrayGuidance({name: layers[name] for name in active})
        bar = comfy.utils.ProgressBar(1)

        def progress(event):
            # Cancel is honoured between windows: ComfyUI raises InterruptProcessingException here.
            mm.throw_exception_if_processing_interrupted()
            if event.phase == "denoise":
                bar.update_absolute(event.done, event.total)

        try:
            latents = pipeline.denoise(reference["encoding"], source, width, height, options,
                                       fit=reference["fit"], progress=progress)
        except ValueError as err:
            raise ChampNodeError(f"Champ Sampler: {err}") from err
        # Unscaled latents, one per frame: ComfyUI's LATENT convention for SD1.5 (VAE Decode divides nothing).
        samples = (latents[0].permute(1, 0, 2, 3).float() / 0.18215).to(mm.intermediate_device())
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

        codec = vae.load()
        samples = latent["samples"]
        if samples.ndim != 4 or samples.shape[1] != 4:
            raise ChampNodeError(f"Champ Decode: expected SD latents (frames, 4, h, w), got {tuple(samples.shape)}")
        bar = comfy.utils.ProgressBar(samples.shape[0])
        chunks = []
        for start in range(0, samples.shape[0], frames_per_chunk):
            mm.throw_exception_if_processing_interrupted()
            images = codec.decode(samples[start:start + frames_per_chunk])
            chunks.append(images.permute(0, 2, 3, 1).float().cpu())
            bar.update_absolute(start + images.shape[0])
        return (torch.cat(chunks),)


NODES = [ChampGuidanceLayers, ChampGuidanceFrame, ChampEncodeReference, ChampContextOptions, ChampSampler,
         ChampDecode]
