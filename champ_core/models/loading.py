"""Loading Champ's networks from the released layout or from the project's converted safetensors.

Released layout (HF fudan-generative-ai/champ, folder `champ/`):
    denoising_unet.pth  reference_unet.pth  motion_module.pth  guidance_encoder_<type>.pth
Converted layout (`python -m champ_core convert-weights`): the same stems as `.safetensors`
(`denoising_unet.safetensors` then already holds the motion modules) plus `champ_weights.json`.
Each component is looked up as <stem>.safetensors, then .pth/.pt/.ckpt/.bin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..guidance import GUIDANCE_TYPES
from .champ import ChampModel
from .checkpoints import (
    OUTPUT_HEAD_RULE,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIX,
    TensorFile,
    assign_weights,
    build_on_meta,
    check_names,
    gather_sources,
    guidance_encoder_renames,
    source_dtypes,
)
from .config import (
    ChampConfig,
    GuidanceEncoderConfig,
    UNetConfig,
    infer_guidance_encoder_config,
    infer_unet_config,
)
from .errors import CheckpointError, ModelInputError
from .guidance_encoder import GuidanceEncoder
from .unet import DenoisingUNet3D, ReferenceUNet

WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES)
MANIFEST_NAME = "champ_weights.json"
GUIDANCE_CHANNELS = 3  # every guidance map (depth, normal, semantic_map, dwpose) reaches its encoder as RGB

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ModelInputError(f"unsupported dtype {dtype}; use float32, float16 or bfloat16")
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ModelInputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}") from None


def find_weight_file(folder: str | Path, stem: str) -> Path | None:
    """<folder>/<stem>.safetensors, else .pth/.pt/.ckpt/.bin, else None."""
    for suffix in WEIGHT_SUFFIXES:
        path = Path(folder) / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def require_weight_file(folder: str | Path, stem: str, what: str) -> Path:
    path = find_weight_file(folder, stem)
    if path is None:
        raise CheckpointError(
            f"{what} not found: put {stem}.pth (released Champ weights, HF fudan-generative-ai/champ, "
            f"folder champ/) or {stem}.safetensors (converted) into {Path(folder).resolve()}"
        )
    return path


def _is_motion_key(name: str) -> bool:
    return ".motion_modules." in name


# ----------------------------------------------------------------------------------------------
# One component at a time


@dataclass
class ComponentPlan:
    """How one network is filled from its file(s): module name -> (file, name in file)."""

    kind: str  # "guidance_encoder" | "reference_unet" | "denoising_unet"
    config: UNetConfig | GuidanceEncoderConfig
    sources: dict
    shapes: dict[str, tuple]
    dropped: list[str]  # file names left out by a documented UNUSED rule
    files: list

    def build_meta(self, round_reference_to_fp16: bool = True) -> torch.nn.Module:
        if self.kind == "guidance_encoder":
            return build_on_meta(lambda: GuidanceEncoder(self.config))
        if self.kind == "reference_unet":
            return build_on_meta(lambda: ReferenceUNet(self.config))
        return build_on_meta(lambda: DenoisingUNet3D(self.config, round_reference_to_fp16=round_reference_to_fp16))

    @property
    def what(self) -> str:
        return f"{self.kind.replace('_', ' ')} ({', '.join(str(f.path) for f in self.files)})"

    def check(self, module: torch.nn.Module) -> None:
        check_names(module, self.shapes, self.what, source_dtypes(self.sources))


def _infer(infer, shapes, what: str, files):
    try:
        return infer(shapes)
    except CheckpointError as exc:
        names = ", ".join(str(f.path) for f in files)
        raise CheckpointError(f"{names} does not look like Champ's {what}: {exc}") from None


def plan_guidance_encoder(tensor_file, config: GuidanceEncoderConfig | None = None) -> ComponentPlan:
    if config is None:
        config = _infer(infer_guidance_encoder_config, tensor_file.shapes, "guidance encoder", [tensor_file])
        if config.in_channels != GUIDANCE_CHANNELS:  # Champ's guidance maps are RGB images (3 channels)
            raise CheckpointError(
                f"{tensor_file.path}: conv_in.weight takes {config.in_channels} input channels, but Champ's guidance "
                f"encoders take {GUIDANCE_CHANNELS}-channel (RGB) guidance maps; this is not a Champ guidance "
                "encoder (or it is damaged): use the released guidance_encoder_<type>.pth"
            )
    renames, unused = guidance_encoder_renames(2 * (len(config.block_out_channels) - 1))
    sources, shapes, dropped = gather_sources([tensor_file], renames, unused)
    return ComponentPlan("guidance_encoder", config, sources, shapes, dropped, [tensor_file])


def plan_reference_unet(tensor_file, config: UNetConfig | None = None, drop_output_head: bool = False) -> ComponentPlan:
    head = [k for k in tensor_file.keys() if k.startswith(("conv_norm_out.", "conv_out."))]
    if head and not drop_output_head:
        raise CheckpointError(
            f"{tensor_file.path} has an output head ({', '.join(head)}), which Champ's reference UNet does not "
            "have: it looks like a denoising UNet or a plain SD1.5 UNet, not reference_unet.pth. Check the file "
            "(to start from an SD1.5 UNet on purpose, use load_reference_unet(..., drop_output_head=True))."
        )
    sources, shapes, dropped = gather_sources([tensor_file], unused=[OUTPUT_HEAD_RULE] if drop_output_head else [])
    config = config or _infer(infer_unet_config, shapes, "reference UNet", [tensor_file])
    return ComponentPlan("reference_unet", config, sources, shapes, dropped, [tensor_file])


def plan_denoising_unet(base, motion=None, config: UNetConfig | None = None,
                        without_motion_modules: bool = False) -> ComponentPlan:
    """2D weights from `base`; motion modules from `motion` if given (it then replaces any in `base`).

    without_motion_modules: the stage-1 denoiser (2D weights only; motion-module tensors in `base`
    are left out, and `motion` must be None).
    """
    if without_motion_modules:
        if motion is not None:
            raise CheckpointError(f"{motion.path}: a denoising UNet without motion modules takes no motion-module file")
        sources, shapes, _ = gather_sources([base], select=lambda name: not _is_motion_key(name))
        if config is not None and config.motion is not None:
            raise CheckpointError("without_motion_modules needs a config without motion modules")
        config = config or _infer(infer_unet_config, shapes, "denoising UNet", [base])
        return ComponentPlan("denoising_unet", config, sources, shapes, [], [base])
    if motion is not None:
        non_motion = [k for k in motion.keys() if not _is_motion_key(k)]
        if non_motion:
            raise CheckpointError(f"{motion.path} is not a motion-module file: it holds "
                                  f"{len(non_motion)} other tensors, e.g. {', '.join(non_motion[:5])}")
        base_sources, base_shapes, _ = gather_sources([base], select=lambda name: not _is_motion_key(name))
        motion_sources, motion_shapes, _ = gather_sources([motion])
        sources, shapes = {**base_sources, **motion_sources}, {**base_shapes, **motion_shapes}
        files = [base, motion]
    else:
        sources, shapes, _ = gather_sources([base])
        files = [base]
    if not any(_is_motion_key(k) for k in shapes):
        raise CheckpointError(
            f"{base.path} holds no motion modules: pass the motion-module file (released motion_module.pth, "
            "or an AnimateDiff mm_sd_v15_v2 checkpoint) next to it"
        )
    config = config or _infer(infer_unet_config, shapes, "denoising UNet", files)
    return ComponentPlan("denoising_unet", config, sources, shapes, [], files)


def _load(plan: ComponentPlan, dtype, device, round_reference_to_fp16: bool = True):
    module = plan.build_meta(round_reference_to_fp16)
    return assign_weights(module, plan.sources, what=plan.what, dtype=resolve_dtype(dtype), device=device)


def load_guidance_encoder(
    path: str | Path, dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
    config: GuidanceEncoderConfig | None = None,
) -> GuidanceEncoder:
    return _load(plan_guidance_encoder(TensorFile(path), config), dtype, device)


def load_reference_unet(
    path: str | Path, dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
    config: UNetConfig | None = None, drop_output_head: bool = False,
) -> ReferenceUNet:
    """drop_output_head: accept and drop an SD1.5 output head (conv_norm_out/conv_out), e.g. to
    initialise the ReferenceNet from an SD1.5 UNet for training; refused by default."""
    return _load(plan_reference_unet(TensorFile(path), config, drop_output_head), dtype, device)


def load_denoising_unet(
    path: str | Path, motion_module_path: str | Path | None = None,
    dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
    config: UNetConfig | None = None, round_reference_to_fp16: bool = True,
    without_motion_modules: bool = False,
) -> DenoisingUNet3D:
    """The 2D weights from `path`, the motion modules from `motion_module_path` (or from `path` itself
    when it already holds them, as converted files do; an explicit `motion_module_path` wins).

    without_motion_modules: load the 2D weights only (stage-1 weights; frames are independent)."""
    motion = TensorFile(motion_module_path) if motion_module_path is not None else None
    plan = plan_denoising_unet(TensorFile(path), motion, config, without_motion_modules)
    return _load(plan, dtype, device, round_reference_to_fp16)


@torch.no_grad()
def load_motion_modules(unet: DenoisingUNet3D, path: str | Path) -> DenoisingUNet3D:
    """Replace every motion module's weights of `unet` (strict: exactly its motion-module tensors).

    Reads Champ's motion_module.pth and AnimateDiff `mm_sd_v15_v2`-format checkpoints (same names).
    """
    tensor_file = TensorFile(path)
    targets = {k: v for k, v in unet.state_dict().items() if _is_motion_key(k)}

    class _View(torch.nn.Module):  # check_names wants a module; present just the motion tensors
        def state_dict(self, *args, **kwargs):
            return targets

    check_names(_View(), tensor_file.shapes, f"motion modules {tensor_file.path}")
    for key, target in targets.items():
        target.copy_(tensor_file.get(key).to(device=target.device, dtype=target.dtype))
    return unet


# ----------------------------------------------------------------------------------------------
# Everything at once


def manifest_says_no_motion_modules(folder: Path) -> bool:
    """True when `folder/champ_weights.json` records weights without motion modules (stage-1 output)."""
    import json

    try:
        manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("motion_modules") is False


# The loaders' return type; one class with the training wrapper (see champ.py).
ChampModels = ChampModel


def load_champ_models(
    folder: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    guidance_types: Sequence[str] | None = None,
    *,
    guidance_folder: str | Path | None = None,
    motion_module: str | Path | None = None,
    config: ChampConfig | None = None,
    round_reference_to_fp16: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    without_motion_modules: bool | None = None,
) -> ChampModel:
    """Load ReferenceNet, denoising UNet3D (with motion modules) and guidance encoders from `folder`.

    guidance_types: None = every guidance_encoder_<type> file present (at least one); otherwise
    exactly those types (each file must exist). guidance_folder: where those files are (default:
    `folder`). motion_module: a motion-module file to use instead of `folder`'s. config: skip the
    architecture inference (strict loading still checks every tensor). progress(name, i, n) is
    called before each component. without_motion_modules: the stage-1 mode: the denoiser's 2D
    weights only (a motion-module file is not needed and not used); every frame is denoised on its
    own, so a video is a sequence of independently generated frames sharing the reference. None
    (default): on when the folder's champ_weights.json says it holds no motion modules (stage-1
    training output), off otherwise.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"weights folder {folder} does not exist (expected the released Champ files "
                              "denoising_unet.pth, reference_unet.pth, motion_module.pth, guidance_encoder_*.pth)")
    dtype = resolve_dtype(dtype)
    device = torch.device(device)
    guidance_folder = Path(guidance_folder) if guidance_folder is not None else folder
    if guidance_types is None:
        types = [t for t in GUIDANCE_TYPES if find_weight_file(guidance_folder, f"guidance_encoder_{t}")]
        if not types:
            raise CheckpointError(
                f"no guidance encoder found in {guidance_folder.resolve()}: put at least one of "
                + ", ".join(f"guidance_encoder_{t}.pth" for t in GUIDANCE_TYPES) + " there (released Champ weights)"
            )
    else:
        types = list(guidance_types)
        unknown = [t for t in types if t not in GUIDANCE_TYPES]
        if unknown:
            raise ModelInputError(f"unknown guidance type(s) {unknown}; expected some of {list(GUIDANCE_TYPES)}")
    denoising_path = require_weight_file(folder, "denoising_unet", "denoising UNet weights")
    reference_path = require_weight_file(folder, "reference_unet", "reference UNet weights")
    guidance_paths = {t: require_weight_file(guidance_folder, f"guidance_encoder_{t}", f"{t} guidance encoder")
                      for t in types}
    motion_path = Path(motion_module) if motion_module is not None else find_weight_file(folder, "motion_module")
    if without_motion_modules is None:
        without_motion_modules = motion_module is None and manifest_says_no_motion_modules(folder)
    if without_motion_modules:
        if motion_module is not None:
            raise ModelInputError("without_motion_modules loads no motion modules: do not pass motion_module")
        motion_path = None
    elif motion_path is not None and motion_module is None and denoising_path.suffix == SAFETENSORS_SUFFIX:
        # converted files already hold the motion modules; a separate file next to one is not used
        if any(_is_motion_key(k) for k in TensorFile(denoising_path).keys()):
            motion_path = None

    steps = 2 + len(types)
    report = progress or (lambda name, i, n: None)
    report("reference_unet", 0, steps)
    reference = load_reference_unet(reference_path, dtype, device, config.reference_unet if config else None)
    report("denoising_unet", 1, steps)
    denoising = load_denoising_unet(denoising_path, motion_path, dtype, device,
                                    config.denoising_unet if config else None, round_reference_to_fp16,
                                    without_motion_modules=without_motion_modules)
    encoders = {}
    for i, guidance_type in enumerate(types):
        report(f"guidance_encoder_{guidance_type}", 2 + i, steps)
        encoders[guidance_type] = load_guidance_encoder(guidance_paths[guidance_type], dtype, device,
                                                        config.guidance_encoder if config else None)
    return ChampModel(reference, denoising, encoders)
