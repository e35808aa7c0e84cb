"""Champ's networks on current diffusers: guidance encoders, ReferenceNet, denoising UNet3D, loaders.

Public names (imported lazily, so `import champ_core.models` stays light):
- `GuidanceEncoder`                                  (guidance_encoder.py)
- `ReferenceUNet`, `DenoisingUNet3D`, `ReferenceFeatures`, `ReferenceContext`   (unet.py)
- `UNetConfig`, `MotionModuleConfig`, `GuidanceEncoderConfig`, `ChampConfig`     (config.py)
- `ChampModel` (the networks + THE Champ forward)                                (champ.py)
- `ChampModels` (alias of ChampModel), `load_champ_models`, `load_denoising_unet`, `load_reference_unet`,
  `load_guidance_encoder`, `load_motion_modules`, `resolve_dtype`               (loading.py)
- `load_image_encoder`, `load_vae`, `clip_preprocess`                           (external.py)
- `CheckpointError`, `ModelInputError`, `WindowTooLongError`                    (errors.py)
See docs/models.md.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GuidanceEncoder": ".guidance_encoder",
    "ReferenceUNet": ".unet",
    "DenoisingUNet3D": ".unet",
    "ReferenceFeatures": ".unet",
    "ReferenceContext": ".unet",
    "UNetConfig": ".config",
    "MotionModuleConfig": ".config",
    "GuidanceEncoderConfig": ".config",
    "ChampConfig": ".config",
    "ChampModels": ".loading",
    "ChampModel": ".champ",
    "load_champ_models": ".loading",
    "load_denoising_unet": ".loading",
    "load_reference_unet": ".loading",
    "load_guidance_encoder": ".loading",
    "load_motion_modules": ".loading",
    "resolve_dtype": ".loading",
    "load_image_encoder": ".external",
    "load_vae": ".external",
    "clip_preprocess": ".external",
    "CheckpointError": ".errors",
    "ModelInputError": ".errors",
    "WindowTooLongError": ".errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
