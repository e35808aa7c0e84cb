"""The metrics: names, what each needs, and the definition text reported with every figure."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

# Bumped whenever a definition below changes in a way that changes figures.
DEFINITIONS_VERSION = "champ-eval/1"

FRAME, SET, VIDEO = "frame", "set", "video"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # FRAME: per frame, averaged; SET: one figure from all frames; VIDEO: one figure from all clips
    backbone: str | None  # key in backbones.BACKBONES, None when no network is needed
    libraries: tuple[str, ...]  # distributions whose code computes it (their versions go into "version")
    higher_is_better: bool
    definition: str


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("l1", FRAME, None, ("numpy",), False,
                   "DisCo L1: per frame, mean over H, W and channels of |pred - gt| on 0-255 values, divided again "
                   "by H*W (resolution dependent: ~3e-4 at 256x256), averaged over frames"),
        MetricSpec("psnr", FRAME, None, ("numpy",), True,
                   "PSNR* (corrected): per frame 20*log10(255/sqrt(mse)) with mse over pixels and channels in "
                   "float64, 100 when mse is 0, averaged over frames"),
        MetricSpec("psnr_legacy", FRAME, None, ("numpy",), True,
                   "PSNR as published by DisCo, MagicAnimate and Champ (Table 1): per frame the difference and its "
                   "square both computed in uint8 (wrapping modulo 256), mean over pixels and channels, "
                   "20*log10(255/sqrt(mse)), 100 when mse is 0, averaged over frames"),
        MetricSpec("ssim", FRAME, None, ("scikit-image", "opencv-python-headless"), True,
                   "per frame on OpenCV's BGR->GRAY uint8 image, scikit-image structural_similarity defaults "
                   "(7x7 window, data range 255), averaged over frames"),
        MetricSpec("lpips", FRAME, "vgg16", ("lpips", "torch"), False,
                   "lpips VGG (v0.1 linear heads, torchvision VGG16 trunk) with the documented [-1, 1] inputs, "
                   "per frame, averaged over frames"),
        MetricSpec("lpips_legacy", FRAME, "vgg16", ("lpips", "torch"), False,
                   "DisCo's LPIPS: lpips VGG fed [0, 1] inputs without normalising, per frame, averaged over frames"),
        MetricSpec("fid", SET, "inception", ("pytorch-fid", "torch", "scipy"), False,
                   "Frechet distance of Inception pool3 (2048-d) features of all frames; frames resized to 299 as "
                   "clean-fid's 'clean' mode (Pillow bicubic per float channel, clipped), (x-128)/128 input; "
                   "pytorch-fid's pt_inception-2015-12-05 weights (a port of the same TensorFlow graph as clean-fid's "
                   "file; pytorch-fid documents 0.08 absolute, 0.09% relative FID difference from TensorFlow on LSUN)"),
        MetricSpec("fid_vid", VIDEO, "resnet3d50", ("torch",), False,
                   "Frechet distance of 3D ResNet-50 (Kinetics-400, shortcut B, fc removed) 2048-d features of "
                   "16-frame clips starting at every frame; frames bicubic to 112 (float, unclipped), mean "
                   "[114.7748, 107.7354, 99.4750] subtracted, features averaged per clip"),
        MetricSpec("fvd", VIDEO, "i3d", ("torch",), False,
                   "Frechet distance of I3D (Kinetics-400) 400-d logits of 16-frame clips starting at every frame; "
                   "frames bicubic to 224 (float, unclipped) and scaled to [-1, 1]"),
    )
}

METRIC_NAMES: tuple[str, ...] = tuple(METRICS)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def metric_version(name: str, gif_palette: bool = False) -> str:
    """The definitions version plus the versions of the libraries computing the metric."""
    spec = METRICS[name]
    parts = [DEFINITIONS_VERSION] + [f"{lib} {_version(lib)}" for lib in spec.libraries]
    if gif_palette and spec.kind == VIDEO:
        parts.append("gif-palette")
    return "; ".join(parts)
