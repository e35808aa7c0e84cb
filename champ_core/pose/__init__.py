"""Whole-body pose detection (DWPose: YOLOX-L person boxes + RTMPose-L, 133 keypoints) on
onnxruntime, from the model files comfyui_controlnet_aux users already have. See docs/body.md (Pose).

- `files`: where the model files are looked for; `find_pose_models` names every folder searched.
- `processing`: letterbox, YOLOX decoding, NMS, the affine person crop, SimCC decoding (pure functions).
- `runtime`: onnxruntime sessions and the TorchScript pose export behind one call.
- `detector`: `DWPose` (image -> people), `detect_sequence` (frames -> tracked `PoseSequence`).
- `tracking`: one person followed by box overlap.
- `format`: 133 keypoints -> POSE_KEYPOINT (comfyui_controlnet_aux's DWPose JSON).
"""

from .detector import DWPose, PersonPose, PoseSequence
from .errors import PoseDetectionError, PoseModelError
from .files import PoseModelFiles, default_folders, find_pose_models
from .format import frame_dict, wholebody_to_openpose

__all__ = [
    "DWPose",
    "PersonPose",
    "PoseDetectionError",
    "PoseModelError",
    "PoseModelFiles",
    "PoseSequence",
    "default_folders",
    "find_pose_models",
    "frame_dict",
    "wholebody_to_openpose",
]
