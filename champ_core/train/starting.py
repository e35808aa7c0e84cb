"""Starting points of the two training stages, and the weight files training writes.

Stage 1 starts both UNets from a user's SD1.5 UNet folder in diffusers format (`unet/config.json`
+ `diffusion_pytorch_model.safetensors` or `.bin`), loaded strictly into the denoiser (2D, no
motion modules) and into the ReferenceNet (its output head dropped by the documented rule), or
from a seeded random init for tiny configs; guidance encoders start fresh with a zero `conv_out`
(as the reference's), so they add nothing at first.

Stage 2 starts from stage 1's output files (strict) plus motion modules: an AnimateDiff
`mm_sd_v15_v2.ckpt` / Champ `motion_module.pth` file (weights_only loading, every tensor mapped or
named), or fresh ones (default init, `proj_out` zeroed as AnimateDiff does: each module starts as
the identity).

`save_champ_weights` writes the released file names (`denoising_unet.pth`, `reference_unet.pth`,
`guidance_encoder_<type>.pth`, and in stage 2 `motion_module.pth`; tensor names as the reference's,
so the reference's own loader reads them too) plus a `.safetensors` of each, and a
`champ_weights.json` manifest (stage, motion modules present). `load_champ_models` reads such a
folder as it is; a stage-1 folder (no motion modules) loads in frame-by-frame mode.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_dir
from ..guidance import GUIDANCE_TYPES
from ..models.champ import ENCODER_PREFIX, ChampModel
from ..models.checkpoints import OUTPUT_HEAD_RULE, TensorFile, check_names, gather_sources
from ..models.config import ChampConfig, MotionModuleConfig, unet_config_from_diffusers
from ..models.errors import CheckpointError
from ..models.guidance_encoder import GuidanceEncoder
from ..models.loading import (
    MANIFEST_NAME,
    find_weight_file,
    load_champ_models,
    resolve_dtype,
)
from ..models.unet import DenoisingUNet3D, ReferenceUNet

FORMAT_NAME = "champ_core.weights"
FORMAT_VERSION = 1
SD_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _is_motion(name: str) -> bool:
    return ".motion_modules." in name or name.startswith("motion_modules.")


# ----------------------------------------------------------------------------------------------
# Building blocks


def _seeded(seed: int | None, factory):
    if seed is None:
        return factory()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return factory()


def _fresh_guidance_encoder(config, seed: int | None) -> GuidanceEncoder:
    encoder = _seeded(seed, lambda: GuidanceEncoder(config))
    with torch.no_grad():  # the reference zero-initialises conv_out: no contribution at the start
        encoder.conv_out.weight.zero_()
        encoder.conv_out.bias.zero_()
    return encoder


def zero_motion_module_outputs(unet: DenoisingUNet3D) -> None:
    """AnimateDiff's init: every motion module's proj_out is zero, so the module is the identity."""
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if _is_motion(name) and ".temporal_transformer.proj_out." in name:
                parameter.zero_()


def _load_strict(module: nn.Module, sources: dict, what: str, select=None) -> None:
    """Copy file tensors into `module`'s tensors (all of them, or those `select` picks), strictly."""
    targets = {k: v for k, v in module.state_dict().items() if select is None or select(k)}

    class _View(nn.Module):
        def state_dict(self, *args, **kwargs):
            return targets

    check_names(_View(), {k: f.shapes[n] for k, (f, n) in sources.items()}, what)
    with torch.no_grad():
        for key, (tensor_file, name) in sources.items():
            tensor = tensor_file.get(name)
            if tensor.is_floating_point() != targets[key].is_floating_point():
                raise CheckpointError(f"{what}: tensor {name} has dtype {tensor.dtype}, the network {targets[key].dtype}")
            targets[key].copy_(tensor)


def sd15_unet_weights(folder: str | Path) -> Path:
    folder = Path(folder)
    for name in SD_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"no SD1.5 UNet weights in {folder}: expected {' or '.join(SD_WEIGHT_NAMES)} "
                          "(the unet/ folder of a diffusers Stable Diffusion 1.5 checkpoint) next to config.json")


def sd15_champ_config(unet_folder: str | Path, base: ChampConfig | None = None) -> ChampConfig:
    """ChampConfig whose UNets follow an SD1.5 `unet/config.json` (stage-1 denoiser: no motion modules)."""
    config_path = Path(unet_folder) / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} does not exist: the SD1.5 UNet folder needs its config.json")
    unet = json.loads(config_path.read_text(encoding="utf-8"))
    base = base or ChampConfig()
    return replace(base, denoising_unet=unet_config_from_diffusers(unet, motion=False, output_head=True),
                   reference_unet=unet_config_from_diffusers(unet, motion=False, output_head=False))


# ----------------------------------------------------------------------------------------------
# Stage starting points


def build_champ_model_for_stage(
    stage: int,
    config: ChampConfig | None = None,
    *,
    guidance_types: Sequence[str] = GUIDANCE_TYPES,
    sd15_unet_dir: str | Path | None = None,
    stage1_dir: str | Path | None = None,
    stage1_step: str | int | None = None,
    motion_module_path: str | Path | None = None,
    seed: int | None = 0,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
) -> ChampModel:
    """The `ChampModel` a stage starts from (requires_grad off; see `prepare_for_training`).

    Stage 1: `sd15_unet_dir` (diffusers SD1.5 `unet/` folder) loaded strictly into both UNets, or,
    when None, a seeded random init of `config` (the ReferenceNet then starts as a copy of the
    denoiser's 2D weights, as both would from one SD1.5 UNet). Stage 2: `stage1_dir` (a folder of
    `save_champ_weights` output, or a training output with `step-N/` folders and `stage1_step`
    "latest" or N) plus `motion_module_path` or fresh motion modules (`config.denoising_unet.motion`,
    default AnimateDiff v2's).
    """
    types = [t for t in GUIDANCE_TYPES if t in guidance_types]
    unknown = [t for t in guidance_types if t not in GUIDANCE_TYPES]
    if unknown or not types:
        raise ValueError(f"guidance types {list(guidance_types)}: use some of {list(GUIDANCE_TYPES)}")
    dtype = resolve_dtype(dtype)
    if stage == 1:
        model = _stage1_model(config, types, sd15_unet_dir, seed)
    elif stage == 2:
        if stage1_dir is None:
            raise ValueError("stage 2 starts from stage-1 weights: pass stage1_dir")
        model = _stage2_model(config, types, find_stage1_weights(stage1_dir, stage1_step), motion_module_path, seed)
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype)


def _stage1_model(config: ChampConfig | None, types, sd15_unet_dir, seed) -> ChampModel:
    if sd15_unet_dir is not None:
        config = config or sd15_champ_config(sd15_unet_dir)
    config = config or ChampConfig()
    denoising_config = replace(config.denoising_unet, motion=None)
    if denoising_config.out_channels is None:
        raise ValueError("the denoising UNet config needs an output head (out_channels)")
    reference_config = replace(config.reference_unet, motion=None, out_channels=None)
    denoiser = _seeded(seed, lambda: DenoisingUNet3D(denoising_config))
    reference = ReferenceUNet(reference_config)
    if sd15_unet_dir is not None:
        weights = TensorFile(sd15_unet_weights(sd15_unet_dir))
        what = f"SD1.5 UNet {weights.path}"
        sources, _, _ = gather_sources([weights])
        _load_strict(denoiser, sources, what)
        reference_sources, _, _ = gather_sources([weights], unused=[OUTPUT_HEAD_RULE])
        _load_strict(reference, reference_sources, what + " (ReferenceNet: output head dropped)")
    else:  # both UNets from the same random 2D weights
        state = {k: v for k, v in denoiser.state_dict().items() if not k.startswith(("conv_norm_out.", "conv_out."))}
        reference.load_state_dict(state, strict=True)
    encoders = {t: _fresh_guidance_encoder(config.guidance_encoder, None if seed is None else seed + 1 + i)
                for i, t in enumerate(types)}
    return ChampModel(reference, denoiser, encoders)


def _stage2_model(config: ChampConfig | None, types, folder: Path, motion_module_path, seed) -> ChampModel:
    stage1 = load_champ_models(folder, guidance_types=types, without_motion_modules=True,
                               config=_without_motion(config))
    motion = (config.denoising_unet.motion if config is not None else None) or MotionModuleConfig()
    denoiser = _seeded(seed, lambda: DenoisingUNet3D(replace(stage1.denoising_unet.config, motion=motion)))
    zero_motion_module_outputs(denoiser)
    two_d = {k: v for k, v in stage1.denoising_unet.state_dict().items()}
    missing = sorted(k for k in denoiser.state_dict() if not _is_motion(k) and k not in two_d)
    if missing:
        raise CheckpointError(f"stage-1 denoising UNet in {folder} lacks {', '.join(missing[:5])}")
    denoiser.load_state_dict({**{k: v for k, v in denoiser.state_dict().items() if _is_motion(k)}, **two_d},
                             strict=True)
    if motion_module_path is not None:
        motion_file = TensorFile(motion_module_path)
        not_motion = [k for k in motion_file.keys() if not _is_motion(k)]
        if not_motion:
            raise CheckpointError(f"{motion_file.path} is not a motion-module file: it holds {len(not_motion)} other "
                                  f"tensors, e.g. {', '.join(not_motion[:5])}")
        sources, _, _ = gather_sources([motion_file])
        _load_strict(denoiser, sources, f"motion modules {motion_file.path}", select=_is_motion)
    return ChampModel(stage1.reference_unet, denoiser, stage1.guidance_encoders)


def _without_motion(config: ChampConfig | None) -> ChampConfig | None:
    if config is None:
        return None
    return replace(config, denoising_unet=replace(config.denoising_unet, motion=None))


def find_stage1_weights(root: str | Path, step: str | int | None = "latest") -> Path:
    """The stage-1 weights folder: `root` itself when it holds denoising_unet.*, else under
    `root` (or `root/weights`) `step-<N>/` (`step` = N) or, for "latest", `final/` or the highest step."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"stage-1 weights folder {root} does not exist")
    if find_weight_file(root, "denoising_unet") is not None and step in (None, "latest"):
        return root
    base = root / "weights" if (root / "weights").is_dir() else root
    if step in (None, "latest"):
        if find_weight_file(base / "final", "denoising_unet") is not None:
            return base / "final"
        steps = sorted(int(p.name[5:]) for p in base.glob("step-*") if p.name[5:].isdigit())
        if not steps:
            raise CheckpointError(f"{root} holds no stage-1 weights (denoising_unet.*, final/ or step-N/ folders)")
        return base / f"step-{steps[-1]}"
    folder = base / f"step-{int(step)}"
    if find_weight_file(folder, "denoising_unet") is None:
        raise CheckpointError(f"stage-1 step {step}: no weights in {folder}")
    return folder


# ----------------------------------------------------------------------------------------------
# Writing


def reference_state_dicts(model: ChampModel, stage: int) -> dict[str, dict[str, torch.Tensor]]:
    """Released file stem -> tensors (the reference's names, contiguous CPU copies)."""
    def cpu(tensors):
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    denoiser = model.denoising_unet.state_dict()
    files = {
        "denoising_unet": cpu({k: v for k, v in denoiser.items() if not _is_motion(k)}),
        "reference_unet": cpu(model.reference_unet.state_dict()),
    }
    for guidance_type, encoder in model.guidance_encoders.items():
        last = encoder.num_reference_attention_blocks - 1
        files[ENCODER_PREFIX + guidance_type] = cpu({
            (f"attentions.{last}." + k[len("attention."):] if k.startswith("attention.") else k): v
            for k, v in encoder.state_dict().items()
        })
    if stage == 2:
        motion = {k: v for k, v in denoiser.items() if _is_motion(k)}
        if not motion:
            raise ValueError("stage-2 weights need motion modules, but the denoiser has none")
        files["motion_module"] = cpu(motion)
    return files


def save_champ_weights(model: ChampModel, folder: str | Path, *, stage: int) -> list[Path]:
    """Write `folder` (replaced as a whole, atomically): <stem>.pth + <stem>.safetensors per released
    file, and champ_weights.json. Returns the written paths."""
    from safetensors.torch import save_file

    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    files = reference_state_dicts(model, stage)
    folder = Path(folder)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "source": "training",
        "stage": stage,
        "motion_modules": stage == 2,
        "dtype": str(model.dtype).replace("torch.", ""),
        "guidance_types": list(model.guidance_types),
        "components": {
            "denoising_unet": {"config": asdict(model.denoising_unet.config)},
            "reference_unet": {"config": asdict(model.reference_unet.config)},
            **{ENCODER_PREFIX + t: {"config": asdict(e.config)} for t, e in model.guidance_encoders.items()},
        },
    }
    names = []
    with atomic_dir(folder, overwrite=True) as staging:
        for stem, tensors in files.items():
            torch.save(tensors, staging / f"{stem}.pth")
            save_file(tensors, str(staging / f"{stem}.safetensors"), metadata={"format": FORMAT_NAME})
            names += [f"{stem}.pth", f"{stem}.safetensors"]
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        names.append(MANIFEST_NAME)
    return [folder / name for name in names]


def stage_of_folder(folder: str | Path) -> int | None:
    """The `stage` recorded in a folder's champ_weights.json (None when there is none)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        return int(json.loads(path.read_text(encoding="utf-8")).get("stage"))
    except (OSError, ValueError, TypeError):
        return None

