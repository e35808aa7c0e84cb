"""Convert released Champ weights (`.pth`) into the project's safetensors layout.

Output folder:
    denoising_unet.safetensors        2D weights + motion modules (module names of DenoisingUNet3D)
    reference_unet.safetensors        ReferenceUNet (no output head)
    guidance_encoder_<type>.safetensors   GuidanceEncoder (`attention.*` = the reference's last
                                      `attentions.N`; never-run blocks left out)
    champ_weights.json                manifest: format, dtype, configs, dropped tensors and why
Every file is checked against its network built on the meta device before anything is written;
files are written under temporary names and renamed at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ..guidance import GUIDANCE_TYPES
from .checkpoints import TensorFile
from .errors import CheckpointError
from .loading import (
    MANIFEST_NAME,
    ComponentPlan,
    find_weight_file,
    plan_denoising_unet,
    plan_guidance_encoder,
    plan_reference_unet,
    require_weight_file,
    resolve_dtype,
)

FORMAT_NAME = "champ_core.weights"
FORMAT_VERSION = 1


def plan_folder(src: str | Path, guidance_types: Sequence[str] | None = None) -> dict[str, ComponentPlan]:
    """Plans for every component found in a released-layout (or converted) folder."""
    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"source folder {src} does not exist")
    plans = {}
    motion = find_weight_file(src, "motion_module")
    plans["denoising_unet"] = plan_denoising_unet(
        TensorFile(require_weight_file(src, "denoising_unet", "denoising UNet weights")),
        TensorFile(motion) if motion is not None else None,
    )
    plans["reference_unet"] = plan_reference_unet(
        TensorFile(require_weight_file(src, "reference_unet", "reference UNet weights"))
    )
    types = guidance_types or [t for t in GUIDANCE_TYPES if find_weight_file(src, f"guidance_encoder_{t}")]
    for guidance_type in types:
        stem = f"guidance_encoder_{guidance_type}"
        plans[stem] = plan_guidance_encoder(TensorFile(require_weight_file(src, stem, f"{guidance_type} guidance encoder")))
    return plans


def convert_weights(
    src: str | Path,
    dst: str | Path,
    dtype: torch.dtype | str | None = None,
    guidance_types: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Convert `src` into `dst` (created); returns the manifest. dtype None keeps each tensor's dtype."""
    from safetensors.torch import save_file

    target_dtype = resolve_dtype(dtype) if dtype is not None else None
    plans = plan_folder(src, guidance_types)
    for plan in plans.values():  # check every component before writing anything
        plan.check(plan.build_meta())
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, Path]] = []
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "dtype": str(target_dtype).replace("torch.", "") if target_dtype else "as source",
        "source": str(Path(src).resolve()),
        "components": {},
    }
    try:
        for i, (name, plan) in enumerate(plans.items()):
            if progress:
                progress(name, i, len(plans))
            tensors = {}
            for key, (tensor_file, source_name) in plan.sources.items():
                tensor = tensor_file.get_checked(source_name)  # NaN/inf refused, named
                if target_dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(target_dtype)
                tensors[key] = tensor.contiguous()
            final = dst / f"{name}.safetensors"
            temporary = dst / f".{name}.safetensors.partial"
            save_file(tensors, str(temporary), metadata={"format": FORMAT_NAME, "component": plan.kind})
            del tensors
            written.append((temporary, final))
            manifest["components"][name] = {
                "kind": plan.kind,
                "config": asdict(plan.config),
                "tensors": len(plan.sources),
                "sources": [str(f.path.name) for f in plan.files],
                "dropped_unused": plan.dropped,
            }
        manifest_tmp = dst / f".{MANIFEST_NAME}.partial"
        manifest_tmp.write_text(json.dumps(manifest, indent=1))
        written.append((manifest_tmp, dst / MANIFEST_NAME))
        umask = os.umask(0)
        os.umask(umask)
        for temporary, final in written:
            os.chmod(temporary, 0o666 & ~umask)  # safetensors creates private files; use the usual mode
            os.replace(temporary, final)
    except BaseException:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        for leftover in dst.glob(".*.partial"):
            leftover.unlink(missing_ok=True)
        raise
    return manifest
