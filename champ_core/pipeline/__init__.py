"""Sampling: from a reference image and guidance frames to video frames (see docs/pipeline.md).

Submodules: `windows` (temporal window planner), `scheduler` (noise schedules), `codecs` (VAE and
image-encoder interfaces), `inputs` (image and guidance preprocessing, guidance sources), `sampling`
(the denoising loop), `loading` (the released weights layout). Names below are imported lazily, so
importing this package stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ChampPipeline": ".sampling",
    "ChampDenoiser": ".sampling",
    "encode_reference": ".sampling",
    "decode_latents": ".sampling",
    "unscaled_latents": ".sampling",
    "scaled_latents": ".sampling",
    "usable_guidance_types": ".sampling",
    "SamplingOptions": ".sampling",
    "ProgressEvent": ".sampling",
    "AnimationResult": ".sampling",
    "ReferenceEncoding": ".sampling",
    "WindowOptions": ".windows",
    "WindowPlan": ".windows",
    "WindowError": ".windows",
    "plan_windows": ".windows",
    "make_scheduler": ".scheduler",
    "LatentCodec": ".codecs",
    "ImageEmbedder": ".codecs",
    "DiffusersVAE": ".codecs",
    "TransformersCLIP": ".codecs",
    "ArrayGuidance": ".inputs",
    "FolderGuidance": ".inputs",
    "GuidanceSource": ".inputs",
    "InputError": ".inputs",
    "load_pipeline": ".loading",
    "WeightsError": ".loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
