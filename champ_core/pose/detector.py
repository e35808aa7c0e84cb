"""`DWPose`: YOLOX person boxes, then RTMPose whole-body keypoints (133 per person) per box."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import processing as P
from .errors import PoseDetectionError, PoseModelError
from .files import PoseModelFiles, default_folders, find_pose_models
from .format import frame_dict
from .runtime import OnnxNetwork, TorchScriptPoseNetwork
from .tracking import track_person

ProgressFn = Callable[[int, int], None]


@dataclass
class PersonPose:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in image pixels
    score: float
    keypoints: np.ndarray  # (133, 3) x, y in image pixels, score


@dataclass
class PoseSequence:
    """Detections of a video: every person per frame, and the tracked one's index per frame."""

    people: list[list[PersonPose]]
    tracked: list[int | None]
    width: int
    height: int

    def tracked_keypoints(self) -> list[np.ndarray | None]:
        return [None if i is None else frame[i].keypoints for frame, i in zip(self.people, self.tracked)]

    def to_pose_keypoint(self, everyone: bool = False) -> list[dict]:
        """POSE_KEYPOINT frames: the tracked person only (or everybody detected)."""
        out = []
        for frame, index in zip(self.people, self.tracked):
            chosen = [p.keypoints for p in frame] if everyone else ([] if index is None else [frame[index].keypoints])
            out.append(frame_dict(chosen, self.width, self.height))
        return out


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 8:
        raise PoseDetectionError(f"pose detection needs RGB uint8 images (H, W, 3) of at least 8x8 pixels, got "
                                 f"{image.shape} {image.dtype}")
    return image


class DWPose:
    """The two DWPose networks. `DWPose.from_folders(folders)` finds the files (see `files.py`)."""

    def __init__(self, files: PoseModelFiles, device: str = "cpu", threads: int | None = None) -> None:
        self.files = files
        self.device = device
        self.detector = OnnxNetwork(files.detector, device, outputs=1, threads=threads)
        if files.estimator_kind == "torchscript":
            self.estimator = TorchScriptPoseNetwork(files.estimator, device)
        else:
            self.estimator = OnnxNetwork(files.estimator, device, outputs=2, threads=threads)
        self.detector_size = self.detector.size or P.DETECTOR_INPUT
        self.estimator_size = self.estimator.size or P.ESTIMATOR_INPUT
        if self.detector_size[0] % 32 or self.detector_size[1] % 32:
            raise PoseModelError(f"{files.detector}: input {self.detector_size} is not a YOLOX input size")

    @classmethod
    def from_folders(cls, folders: Sequence[str | os.PathLike] | None = None, device: str = "cpu",
                     threads: int | None = None) -> DWPose:
        return cls(find_pose_models(default_folders(folders or ())), device, threads)

    def detect_boxes(self, image: np.ndarray) -> np.ndarray:
        """Person boxes (M, 5): x0, y0, x1, y1, score, best first."""
        image = _check_image(image)
        batch, ratio = P.letterbox(image, self.detector_size)
        (raw,) = self.detector(batch)
        if raw.ndim != 3 or raw.shape[-1] < 6:
            raise PoseModelError(f"{self.files.detector}: output shape {raw.shape} is not YOLOX's (1, N, 85)")
        boxes, scores = P.yolox_decode(raw[0], ratio, self.detector_size)
        return P.select_people(boxes, scores, image.shape[1], image.shape[0])

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Whole-body keypoints (M, 133, 3) for person boxes (M, >= 4), in image pixels."""
        image = _check_image(image)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.asarray(boxes).shape[-1] if len(boxes) else 4)
        if boxes.shape[0] == 0:
            return np.zeros((0, 133, 3))
        cs = [P.box_center_scale(b[:4], self.estimator_size) for b in boxes]
        crops = np.stack([P.crop_person(image, c, s, self.estimator_size) for c, s in cs])
        outs = self.estimator(crops)
        if len(outs) != 2 or outs[0].ndim != 3 or outs[0].shape[:2] != outs[1].shape[:2]:
            raise PoseModelError(f"{self.files.estimator}: outputs {[o.shape for o in outs]} are not DWPose's "
                                 "(N, 133, 576) and (N, 133, 768) SimCC vectors")
        if outs[0].shape[1] != 133:
            raise PoseModelError(f"{self.files.estimator}: {outs[0].shape[1]} keypoints, DWPose gives 133 (COCO-WholeBody)")
        locs, scores = P.simcc_decode(outs[0], outs[1])
        points = np.stack([P.crop_to_image(locs[i], *cs[i], self.estimator_size) for i in range(len(cs))])
        points[locs < 0] = 0.0
        return np.concatenate([points, scores[..., None].astype(np.float64)], -1)

    def __call__(self, image: np.ndarray) -> list[PersonPose]:
        boxes = self.detect_boxes(image)
        keypoints = self.estimate(image, boxes)
        return [PersonPose(b[:4].copy(), float(b[4]), k) for b, k in zip(boxes, keypoints)]

    def detect_sequence(self, frames: Iterable[np.ndarray], person: int = 0, total: int | None = None,
                        progress: ProgressFn | None = None) -> PoseSequence:
        """Every frame's people, and one person tracked by box overlap (`person` = rank by box area
        in the first frame with anybody, 0 = largest). `progress(done, total)` after each frame may
        raise to cancel."""
        people: list[list[PersonPose]] = []
        size = None
        for t, frame in enumerate(frames):
            frame = _check_image(frame)
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise PoseDetectionError(f"frame {t} is {frame.shape[1]}x{frame.shape[0]}, the first was "
                                         f"{size[1]}x{size[0]}: all frames of a video must have one size")
            people.append(self(frame))
            if progress is not None:
                progress(t + 1, total if total is not None else t + 1)
        if size is None:
            raise PoseDetectionError("no frames given to the pose detector")
        if not any(people):
            raise PoseDetectionError(f"no person detected in any of the {len(people)} frames")
        tracked = track_person([np.array([p.box for p in f]).reshape(-1, 4) for f in people], person)
        return PoseSequence(people, tracked, int(size[1]), int(size[0]))
