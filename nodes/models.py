"""Model nodes: the Champ networks, the image encoder and VAE (pack loaders or ComfyUI's own)."""

from __future__ import annotations

import os

import torch

from ..champ_core.models.builtin import BUILTIN_CHOICE, CHAMP_SUBDIR, CLIP_SUBDIR, VAE_SUBDIR
from ..champ_core.pipeline.codecs import SD_VAE_SCALING_FACTOR
from ._common import (
    CATEGORY,
    CHAMP_FOLDER,
    CHAMP_IMAGE_ENCODER,
    CHAMP_MODEL,
    CHAMP_VAE,
    ChampNodeError,
    folder_fingerprint,
    model_folder_paths,
)

DTYPES = ("auto", "fp32", "fp16", "bf16")
CHAMP_STEMS = ("denoising_unet",)
WEIGHT_SUFFIXES = (".pth", ".safetensors", ".bin", ".pt")
CLIP_FILES = ("model.safetensors", "pytorch_model.bin")
VAE_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
             "diffusion_pytorch_model.fp16.safetensors")
MISSING = "(none found in models/champ)"
MAX_DEPTH = 3


def _builtin_folder(subdir: str) -> str:
    """A part of the pack's built-in model (ChampNodeError when the pack's copy is incomplete)."""
    from ..champ_core.models.builtin import builtin_model_dir
    from ..champ_core.models.errors import CheckpointError

    try:
        return str(builtin_model_dir() / subdir)
    except CheckpointError as err:
        raise ChampNodeError(str(err)) from None


def _choices(predicate) -> list[str]:
    """The built-in model first (works out of the box), then the user's folders under models/champ."""
    return [BUILTIN_CHOICE] + [c for c in _candidate_folders(predicate) if c != MISSING]


def _candidate_folders(predicate) -> list[str]:
    """Folders under every models/champ search path (depth <= 3) for which predicate(folder) holds,
    as paths relative to their search path ("." for the search path itself)."""
    found = []
    for root in model_folder_paths(CHAMP_FOLDER):
        if not os.path.isdir(root):
            continue
        for current, dirs, _files in os.walk(root, followlinks=True):
            depth = os.path.relpath(current, root).count(os.sep) + (current != root)
            if depth >= MAX_DEPTH:
                dirs[:] = []
            dirs.sort()
            if predicate(current):
                rel = os.path.relpath(current, root)
                if rel not in found:
                    found.append(rel.replace(os.sep, "/"))
    return found or [MISSING]


def _has_champ_weights(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, stem + suffix)) for stem in CHAMP_STEMS for suffix in WEIGHT_SUFFIXES)


def _has_files(folder: str, names) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) and any(
        os.path.isfile(os.path.join(folder, n)) for n in names
    )


CHAMP_FILES_TEXT = ("denoising_unet.pth, reference_unet.pth, motion_module.pth and guidance_encoder_<type>.pth "
                    "(depth, normal, semantic_map, dwpose)")


def _missing_champ_files(folder: str) -> list[str]:
    """The released Champ files a weights folder lacks (.safetensors conversions count as present)."""
    from ..champ_core.guidance import GUIDANCE_TYPES
    from ..champ_core.models.loading import find_weight_file

    missing = [f"{stem}.pth" for stem in ("denoising_unet", "reference_unet", "motion_module")
               if find_weight_file(folder, stem) is None]
    encoders = [f"guidance_encoder_{t}.pth" for t in GUIDANCE_TYPES]
    if all(find_weight_file(folder, name[:-4]) is None for name in encoders):
        missing += encoders
    if "motion_module.pth" in missing and any(
            p.suffix == ".safetensors" for p in filter(None, [find_weight_file(folder, "denoising_unet")])):
        missing.remove("motion_module.pth")  # converted files hold the motion modules
    return missing


def _check_champ_weights(choice: str) -> str:
    """The weights folder for a combo value, or ChampNodeError naming the missing files and the folder."""
    if choice == BUILTIN_CHOICE:
        return _builtin_folder(CHAMP_SUBDIR)
    roots = model_folder_paths(CHAMP_FOLDER)
    wanted = os.path.join(roots[0], "champ" if choice == MISSING else choice)
    if choice != MISSING:
        for root in roots:
            folder = os.path.normpath(os.path.join(root, choice))
            if os.path.isdir(folder):
                missing = _missing_champ_files(folder)
                if not missing:
                    return folder
                raise ChampNodeError(
                    f"Champ weights incomplete: {', '.join(missing)} missing in {folder}; put the released Champ "
                    "files there (the champ/ folder of the Hugging Face repository fudan-generative-ai/champ), "
                    "then press R to refresh")
    raise ChampNodeError(
        f"Champ weights missing: put {CHAMP_FILES_TEXT} into {os.path.normpath(wanted)} (the champ/ folder of the "
        f"Hugging Face repository fudan-generative-ai/champ; searched {' and '.join(roots)}), then press R to "
        "refresh")


def _check_component(choice: str, what: str, names, expected: str, builtin_subdir: str) -> str:
    if choice == BUILTIN_CHOICE:
        return _builtin_folder(builtin_subdir)
    roots = model_folder_paths(CHAMP_FOLDER)
    if choice != MISSING:
        for root in roots:
            folder = os.path.normpath(os.path.join(root, choice))
            if os.path.isdir(folder):
                if _has_files(folder, names):
                    return folder
                raise ChampNodeError(f"{what} incomplete in {folder}: put {expected} there, then press R to refresh")
    raise ChampNodeError(f"{what} missing: put {expected} into a folder under {' or '.join(roots)} (e.g. "
                         f"{os.path.join(roots[0], choice if choice != MISSING else '<folder>')}), then press R to "
                         "refresh")


CLIP_EXPECTED = "image_encoder/ (config.json + model.safetensors or pytorch_model.bin)"
VAE_EXPECTED = "sd-vae-ft-mse/ (config.json + diffusion_pytorch_model.safetensors)"


def _validation(check) -> bool | str:
    try:
        check()
    except ChampNodeError as err:
        return str(err)
    return True


def _torch_dtype(choice: str, device) -> torch.dtype:
    import comfy.model_management as mm

    if choice == "auto":
        if mm.should_use_fp16(device):
            return torch.float16
        if mm.should_use_bf16(device):
            return torch.bfloat16
        return torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[choice]


class ManagedModules:
    """Modules handed to ComfyUI's model manager (ModelPatcher), so they load and offload like
    core models; `load()` puts them on the compute device and returns the wrapped object."""

    def __init__(self, payload, modules: dict[str, torch.nn.Module], on_device=None):
        import comfy.model_management as mm
        import comfy.model_patcher

        self.payload = payload
        self.container = torch.nn.ModuleDict(modules)
        self.on_device = on_device
        self.patcher = comfy.model_patcher.ModelPatcher(
            self.container, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
        )

    def load(self):
        import comfy.model_management as mm

        mm.load_models_gpu([self.patcher], force_full_load=True)
        if self.on_device is not None:
            self.on_device(self.payload, self.patcher.load_device)
        return self.payload


def _set_models_device(models, device) -> None:
    models.device = torch.device(device)


class ChampModelLoader:
    NODE_ID = "ChampModelLoader"
    DISPLAY_NAME = "Champ Model Loader"
    CATEGORY = f"{CATEGORY}/models"
    DESCRIPTION = (
        "Loads the Champ networks (ReferenceNet, denoising UNet with motion modules, guidance encoders) from a "
        "folder under models/champ holding the released files (denoising_unet.pth, reference_unet.pth, "
        "motion_module.pth, guidance_encoder_<type>.pth) or converted .safetensors. Loading is strict: a "
        "missing or unexpected tensor is an error naming it. The networks are handed to ComfyUI's model "
        "management, so they are moved to the GPU when sampling and offloaded like core models."
    )
    RETURN_TYPES = (CHAMP_MODEL,)
    RETURN_NAMES = ("champ_model",)
    OUTPUT_TOOLTIPS = ("The Champ networks, for Champ Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weights": (
                    _choices(_has_champ_weights),
                    {"tooltip": "The pack's built-in small model (128 px, trained on generated people: real photos "
                                "are outside its domain), or a folder under models/champ with the Champ weight "
                                "files ('.' = models/champ itself)."},
                ),
                "dtype": (DTYPES, {"default": "auto", "tooltip": "Compute precision; auto = fp16/bf16 on GPUs that "
                                                                 "support it, fp32 otherwise."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, weights):
        # Runs before anything executes: the first message names the missing files and the folder.
        return _validation(lambda: _check_champ_weights(weights))

    @classmethod
    def IS_CHANGED(cls, weights, **_):
        try:
            return folder_fingerprint(_check_champ_weights(weights))
        except ChampNodeError:
            return weights

    def load(self, weights, dtype):
        import comfy.model_management as mm

        from ..champ_core.models import load_champ_models

        folder = _check_champ_weights(weights)
        torch_dtype = _torch_dtype(dtype, mm.get_torch_device())
        try:
            models = load_champ_models(folder, dtype=torch_dtype, device=mm.unet_offload_device())
        except (ValueError, FileNotFoundError) as err:
            raise ChampNodeError(f"Champ Model Loader: {err}") from err
        modules = {"reference_unet": models.reference_unet, "denoising_unet": models.denoising_unet,
                   "guidance_encoders": torch.nn.ModuleDict(models.guidance_encoders)}
        return (ManagedModules(models, modules, _set_models_device),)


class ChampImageEncoderVAELoader:
    NODE_ID = "ChampImageEncoderVAELoader"
    DISPLAY_NAME = "Champ Image Encoder & VAE Loader"
    CATEGORY = f"{CATEGORY}/models"
    DESCRIPTION = (
        "Loads the CLIP image encoder (the released image_encoder/ folder: config.json + model.safetensors or "
        "pytorch_model.bin) and the SD VAE (sd-vae-ft-mse/: config.json + diffusion_pytorch_model.*) from "
        "folders under models/champ. Alternative: Champ Use Core Encoders, with ComfyUI's own CLIP Vision "
        "and VAE loaders."
    )
    RETURN_TYPES = (CHAMP_IMAGE_ENCODER, CHAMP_VAE)
    RETURN_NAMES = ("image_encoder", "vae")
    OUTPUT_TOOLTIPS = ("CLIP image encoder for Champ Encode Reference.", "VAE for encoding and decoding.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image_encoder": (
                    _choices(lambda f: _has_files(f, CLIP_FILES)),
                    {"tooltip": "The built-in model's image encoder, or a folder under models/champ with the CLIP "
                                "image encoder (transformers layout)."},
                ),
                "vae": (
                    _choices(lambda f: _has_files(f, VAE_FILES)),
                    {"tooltip": "The built-in model's VAE, or a folder under models/champ with the VAE (diffusers "
                                "layout)."},
                ),
                "dtype": (DTYPES, {"default": "auto", "tooltip": "Precision of both modules."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, image_encoder, vae):
        def check():
            _check_component(image_encoder, "CLIP image encoder", CLIP_FILES, CLIP_EXPECTED, CLIP_SUBDIR)
            _check_component(vae, "VAE", VAE_FILES, VAE_EXPECTED, VAE_SUBDIR)

        return _validation(check)

    def load(self, image_encoder, vae, dtype):
        import comfy.model_management as mm

        from ..champ_core.models import load_image_encoder, load_vae
        from ..champ_core.pipeline.codecs import DiffusersVAE, TransformersCLIP

        clip_folder = _check_component(image_encoder, "CLIP image encoder", CLIP_FILES, CLIP_EXPECTED, CLIP_SUBDIR)
        vae_folder = _check_component(vae, "VAE", VAE_FILES, VAE_EXPECTED, VAE_SUBDIR)
        if clip_folder == vae_folder:
            raise ChampNodeError("Champ Image Encoder & VAE Loader: the image encoder and the VAE must be different folders")
        torch_dtype = _torch_dtype(dtype, mm.get_torch_device())
        offload = mm.unet_offload_device()
        try:
            clip = TransformersCLIP(load_image_encoder(clip_folder, torch_dtype, offload))
            codec = DiffusersVAE(load_vae(vae_folder, torch_dtype, offload))
        except (ValueError, OSError) as err:
            raise ChampNodeError(f"Champ Image Encoder & VAE Loader: {err}") from err
        return (ManagedModules(clip, {"model": clip.model}), ManagedModules(codec, {"vae": codec.vae}))


class ComfyCLIPVisionEmbedder:
    """champ_core ImageEmbedder over ComfyUI's CLIP_VISION (crop "none": squash to 224, as Champ does)."""

    def __init__(self, clip_vision):
        self.clip_vision = clip_vision

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        output = self.clip_vision.encode_image(images.permute(0, 2, 3, 1).float(), crop=False)
        return output["image_embeds"].float()[:, None]


class ComfyVAECodec:
    """champ_core LatentCodec over ComfyUI's VAE (latent mean; unscaled latents as in LATENT)."""

    scaling_factor = SD_VAE_SCALING_FACTOR

    def __init__(self, vae):
        channels = getattr(vae, "latent_channels", 4)
        if channels != 4:
            raise ChampNodeError(f"Champ needs the SD1.5 VAE (4 latent channels); this VAE has {channels}")
        self.vae = vae

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images.permute(0, 2, 3, 1).float()).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents.float())
        return images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2).float().clamp(0, 1).cpu()


class _Direct:
    """Same interface as ManagedModules for objects ComfyUI already manages itself."""

    def __init__(self, payload):
        self.payload = payload

    def load(self):
        return self.payload


class ChampUseCoreEncoders:
    NODE_ID = "ChampUseCoreEncoders"
    DISPLAY_NAME = "Champ Use Core CLIP Vision & VAE"
    CATEGORY = f"{CATEGORY}/models"
    DESCRIPTION = (
        "Uses ComfyUI's own CLIP_VISION (Load CLIP Vision, from models/clip_vision) and VAE (Load VAE, from "
        "models/vae) as Champ's image encoder and VAE, for users who keep those files there. The CLIP image is "
        "squashed to 224x224 (crop 'none'), as Champ does."
    )
    RETURN_TYPES = (CHAMP_IMAGE_ENCODER, CHAMP_VAE)
    RETURN_NAMES = ("image_encoder", "vae")
    OUTPUT_TOOLTIPS = ("CLIP image encoder for Champ Encode Reference.", "VAE for encoding and decoding.")
    FUNCTION = "wrap"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_vision": ("CLIP_VISION", {"tooltip": "The CLIP ViT-L/14 vision model (Champ's image_encoder)."}),
                "vae": ("VAE", {"tooltip": "The SD1.5 VAE (sd-vae-ft-mse)."}),
            }
        }

    def wrap(self, clip_vision, vae):
        return (_Direct(ComfyCLIPVisionEmbedder(clip_vision)), _Direct(ComfyVAECodec(vae)))


NODES = [ChampModelLoader, ChampImageEncoderVAELoader, ChampUseCoreEncoders]
