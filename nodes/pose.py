"""Pose nodes: DWPose whole-body keypoints of an IMAGE batch, as POSE_KEYPOINT."""

from __future__ import annotations

import os

import numpy as np

from ._common import (
    CATEGORY,
    ChampNodeError,
    comfy_progress,
    image_to_uint8,
    log,
    model_folder_paths,
    uint8_to_image,
)

DEVICES = ("auto", "cpu", "cuda")
_CACHE: dict = {}  # (files, their mtimes and sizes, device) -> DWPose: sessions load once per process


def pose_model_folders() -> list[str]:
    """The pack's models/champ/pose (every path ComfyUI knows for models/champ) and
    comfyui_controlnet_aux's checkpoint folders in every custom_nodes path."""
    import folder_paths

    from ..champ_core.pose.files import CONTROLNET_AUX_SUBFOLDERS, PACK_SUBFOLDER, default_folders

    folders = [os.path.join(p, "pose") for p in model_folder_paths("champ")]
    folders.append(os.path.join(folder_paths.models_dir, *PACK_SUBFOLDER.split("/")))
    for root in folder_paths.get_folder_paths("custom_nodes"):
        ckpts = os.path.join(root, "comfyui_controlnet_aux", "ckpts")
        folders += [os.path.join(ckpts, *sub.split("/")) for sub in CONTROLNET_AUX_SUBFOLDERS]
    folders += [str(f) for f in default_folders()]  # CHAMP_POSE_MODELS
    return list(dict.fromkeys(folders))


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _detector(device: str):
    from ..champ_core.pose import DWPose, find_pose_models

    files = find_pose_models(pose_model_folders())
    stamp = [(os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in (files.detector, files.estimator)]
    key = (str(files.detector), str(files.estimator), *stamp, device)  # a replaced file is loaded again
    if key not in _CACHE:
        _CACHE.clear()
        log.info("Champ Detect Pose: loading %s and %s on %s", files.detector, files.estimator, device)
        _CACHE[key] = DWPose(files, device=device)
    return _CACHE[key]


class ChampDetectPose:
    NODE_ID = "ChampDetectPose"
    DISPLAY_NAME = "Champ Detect Pose (DWPose)"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Whole-body keypoints (DWPose: YOLOX person boxes + RTMPose, 133 points) of every frame, as POSE_KEYPOINT "
        "in comfyui_controlnet_aux's format, for Champ Fit Motion / Champ Fit Reference. One person is tracked "
        "through the video by box overlap: 0 = the largest in the first frame with anybody. Model files (not "
        "downloaded): yolox_l.onnx and dw-ll_ucoco_384.onnx (or dw-ll_ucoco_384_bs5.torchscript.pt) in "
        "ComfyUI/models/champ/pose/, or where comfyui_controlnet_aux keeps them (its ckpts/yzd-v/DWPose/, "
        "ckpts/hr16/yolox-onnx/, ckpts/hr16/DWPose-TorchScript-BatchSize5/)."
    )
    RETURN_TYPES = ("POSE_KEYPOINT", "IMAGE")
    RETURN_NAMES = ("pose_keypoint", "pose_image")
    OUTPUT_TOOLTIPS = ("Keypoints per frame: the tracked person (body, hands, face, feet), or everybody.",
                       "The detected skeletons drawn DWPose-style on black.")
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Video frames (or one image), e.g. from core Load Video + Get "
                                                "Video Components."}),
                "person": ("INT", {"default": 0, "min": -1, "max": 100,
                                   "tooltip": "Who to track: 0 = the largest person in the first frame with "
                                              "anybody, 1 = the next largest, ...; -1 = keep everybody (no tracking)."}),
                "device": (list(DEVICES), {"default": "auto", "tooltip": "Where the networks run (CUDA needs "
                                                                         "onnxruntime-gpu for the ONNX files)."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, person=0, device="auto"):
        from ..champ_core.pose import PoseModelError, find_pose_models

        try:
            find_pose_models(pose_model_folders())
        except PoseModelError as err:
            return f"Champ Detect Pose: {err}"
        return True

    def detect(self, images, person, device):
        from ..champ_core.pose import PoseDetectionError, PoseModelError

        frames = image_to_uint8(images, "Champ Detect Pose: images")
        try:
            model = _detector(_device(device))
            progress = comfy_progress(len(frames))
            sequence = model.detect_sequence(iter(frames), person=max(person, 0), total=len(frames),
                                             progress=progress)
        except (PoseModelError, PoseDetectionError) as err:
            raise ChampNodeError(f"Champ Detect Pose: {err}") from err
        keypoints = sequence.to_pose_keypoint(everyone=person < 0)
        chosen = sequence.people if person < 0 else [[] if i is None else [f[i]] for f, i in
                                                     zip(sequence.people, sequence.tracked)]
        return (keypoints, uint8_to_image(np.stack([_draw(people, sequence.width, sequence.height)
                                                    for people in chosen])))


def _draw(people, width: int, height: int) -> np.ndarray:
    from ..champ_core.pose.format import wholebody_to_openpose
    from ..champ_core.render import draw_skeleton

    if not people:
        return np.zeros((height, width, 3), np.uint8)
    parts = [wholebody_to_openpose(p.keypoints) for p in people]
    return draw_skeleton(np.stack([p["body"] for p in parts])[None], width, height,
                         hands=np.stack([p["hands"] for p in parts])[None],
                         face=np.stack([p["face"] for p in parts])[None])[0]

NODES = [ChampDetectPose]
