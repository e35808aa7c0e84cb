"""The evaluation networks' weight files: their names and the folders they are looked for in."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# The folder name under a models root (ComfyUI: models/champ/eval).
EVAL_FOLDER = os.path.join("models", "champ", "eval")


@dataclass(frozen=True)
class Backbone:
    key: str
    filename: str
    description: str


VGG16 = Backbone("vgg16", "vgg16-397923af.pth", "torchvision's ImageNet VGG16 weights, the LPIPS trunk")
INCEPTION = Backbone("inception", "pt_inception-2015-12-05-6726825d.pth",
                     "pytorch-fid's FID Inception weights (TensorFlow Inception 2015-12-05)")
RESNET3D50 = Backbone("resnet3d50", "resnet-50-kinetics.pth", "3D ResNet-50 trained on Kinetics-400 (Hara et al.)")
I3D = Backbone("i3d", "i3d_pretrained_400.pt", "I3D Inception-v1 trained on Kinetics-400")

BACKBONES = {b.key: b for b in (VGG16, INCEPTION, RESNET3D50, I3D)}


def default_models_dirs() -> list[Path]:
    """Where backbone files are looked for when no folder is given.

    ./models/champ/eval (the current directory), and ComfyUI's models/champ/eval when the pack sits
    in a ComfyUI custom_nodes folder.
    """
    dirs = [Path.cwd() / EVAL_FOLDER]
    pack = Path(__file__).resolve().parents[2]
    if pack.parent.name == "custom_nodes":
        dirs.append(pack.parent.parent / EVAL_FOLDER)
    unique: list[Path] = []
    for path in dirs:
        if path not in unique:
            unique.append(path)
    return unique


def as_dirs(models_dir: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if models_dir is None:
        return default_models_dirs()
    if isinstance(models_dir, (str, os.PathLike)):
        return [Path(models_dir)]
    return [Path(d) for d in models_dir]


def find_backbone(backbone: Backbone, dirs: Iterable[Path]) -> Path | None:
    for folder in dirs:
        path = Path(folder) / backbone.filename
        if path.is_file():
            return path
    return None


def missing_message(metric: str, backbone: Backbone, dirs: Sequence[Path]) -> str:
    where = ", ".join(str(d) for d in dirs)
    return (f"{metric}: weight file {backbone.filename} ({backbone.description}) not found in {where}; "
            f"put it there or point --models (models_dir) at the folder holding it")
