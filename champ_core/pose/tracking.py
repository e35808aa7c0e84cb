"""Following one person through a video by box overlap."""

from __future__ import annotations

import numpy as np

from .errors import PoseDetectionError
from .processing import box_iou

MIN_IOU = 0.1  # below this overlap with the last seen box, the person counts as not found


def box_area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def track_person(boxes_per_frame: list[np.ndarray], person: int = 0, min_iou: float = MIN_IOU) -> list[int | None]:
    """Per frame, the index of the tracked person's box (or None when not found).

    In the first frame with anybody the people are ranked by box area, largest first, and
    `person` picks one (0 = the largest); later frames take the box overlapping the last seen box
    most, if its IoU is at least `min_iou`.
    """
    chosen: list[int | None] = []
    last = None
    for t, boxes in enumerate(boxes_per_frame):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if boxes.shape[0] == 0:
            chosen.append(None)
            continue
        if last is None:
            order = sorted(range(boxes.shape[0]), key=lambda i: -box_area(boxes[i]))
            if person < 0 or person >= len(order):
                raise PoseDetectionError(f"person {person} asked for, but frame {t} (the first with anybody) has "
                                         f"{len(order)} people; choose 0..{len(order) - 1}")
            index = order[person]
        else:
            iou = box_iou(last, boxes)
            index = int(iou.argmax())
            if iou[index] < min_iou:
                chosen.append(None)
                continue
        chosen.append(index)
        last = boxes[index]
    return chosen
