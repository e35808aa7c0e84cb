"""Where the DWPose model files are looked for.

The files comfyui_controlnet_aux users already have, in the folders it downloads them to:

| file | role | controlnet_aux folder (under custom_nodes/comfyui_controlnet_aux/ckpts/) |
|---|---|---|
| `yolox_l.onnx` | person detector (YOLOX-L) | `yzd-v/DWPose/`, `hr16/yolox-onnx/` |
| `dw-ll_ucoco_384.onnx` | whole-body pose (RTMPose-L, 133 points) | `yzd-v/DWPose/` |
| `dw-ll_ucoco_384_bs5.torchscript.pt` | the same pose network as TorchScript (batch 5) | `hr16/DWPose-TorchScript-BatchSize5/` |

plus the pack's own `models/champ/pose/` (any of them). The ONNX pose file is preferred over the
TorchScript one when both are found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import PoseModelError

DETECTOR_FILES = ("yolox_l.onnx",)
ESTIMATOR_FILES = ("dw-ll_ucoco_384.onnx", "dw-ll_ucoco_384_bs5.torchscript.pt")
CONTROLNET_AUX_SUBFOLDERS = ("yzd-v/DWPose", "hr16/yolox-onnx", "hr16/DWPose-TorchScript-BatchSize5")
PACK_SUBFOLDER = "champ/pose"  # under ComfyUI's models folder
ENV_VAR = "CHAMP_POSE_MODELS"  # extra folders, separated by os.pathsep


@dataclass(frozen=True)
class PoseModelFiles:
    detector: Path
    estimator: Path

    @property
    def estimator_kind(self) -> str:
        return "torchscript" if self.estimator.name.endswith(".pt") else "onnx"


def comfyui_folders(comfy_root: str | os.PathLike | None = None, models_dir: str | os.PathLike | None = None) -> list[Path]:
    """The pack's `models/champ/pose` and controlnet_aux's checkpoint folders of a ComfyUI install."""
    folders = []
    if models_dir is not None:
        folders.append(Path(models_dir) / PACK_SUBFOLDER)
    if comfy_root is not None:
        root = Path(comfy_root)
        if models_dir is None:
            folders.append(root / "models" / PACK_SUBFOLDER)
        ckpts = root / "custom_nodes" / "comfyui_controlnet_aux" / "ckpts"
        folders.extend(ckpts / sub for sub in CONTROLNET_AUX_SUBFOLDERS)
    return folders


def guess_comfyui_root() -> Path | None:
    """ComfyUI's folder when this pack sits in its custom_nodes/ (None otherwise)."""
    pack = Path(__file__).resolve().parents[2]
    if pack.parent.name == "custom_nodes":
        return pack.parent.parent
    return None


def default_folders(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """`extra`, then `CHAMP_POSE_MODELS`, then the ComfyUI install around the pack (when there is one)."""
    folders = [Path(f) for f in extra]
    folders += [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    root = guess_comfyui_root()
    if root is not None:
        folders += comfyui_folders(root)
    return folders


def _first(folders: Sequence[Path], names: Sequence[str]) -> Path | None:
    for name in names:
        for folder in folders:
            path = folder / name
            if path.is_file():
                return path
    return None


def find_pose_models(folders: Sequence[str | os.PathLike]) -> PoseModelFiles:
    """The detector and pose files from the first folder holding each; PoseModelError naming every
    missing file and every folder searched otherwise."""
    folders = list(dict.fromkeys(Path(f) for f in folders))
    detector, estimator = _first(folders, DETECTOR_FILES), _first(folders, ESTIMATOR_FILES)
    if detector is None or estimator is None:
        missing = []
        if detector is None:
            missing.append(" or ".join(DETECTOR_FILES))
        if estimator is None:
            missing.append(" or ".join(ESTIMATOR_FILES))
        searched = ", ".join(str(f) for f in folders) or "(no folder given)"
        raise PoseModelError(
            f"DWPose model file(s) not found: {'; '.join(missing)}. Searched: {searched}. Put yolox_l.onnx and "
            "dw-ll_ucoco_384.onnx (the files comfyui_controlnet_aux downloads) into ComfyUI's models/champ/pose/ "
            f"or name their folder with {ENV_VAR} (CLI: --pose-models DIR)")
    return PoseModelFiles(detector, estimator)
