"""DWPose pre- and post-processing as small pure functions (numpy, OpenCV for resizing/warping).

Detector (YOLOX-L, 640x640): the image is letterboxed (scaled to fit, padded with grey 114 at the
bottom/right), fed as float32 0-255 BGR; the 8400 rows of its output are (cx, cy, w, h) offsets
on the 8/16/32-stride grids (log-size), objectness and 80 class scores.

Pose estimator (RTMPose-L whole-body "DWPose", 288x384): each person box is padded by 1.25, widened
or heightened to the input's 3:4 aspect, cropped by an affine warp to 288x384, normalised with
ImageNet's RGB mean and std. The outputs are SimCC vectors per keypoint: 2 bins per input pixel
(576 in x, 768 in y); the argmax bin / 2 is the keypoint in the crop, its value the score (the
smaller of the x and y maxima).

Coordinates are continuous pixels: pixel (i, j) spans [i, i + 1) x [j, j + 1).
"""

from __future__ import annotations

import numpy as np

DETECTOR_INPUT = (640, 640)  # (width, height)
ESTIMATOR_INPUT = (288, 384)  # (width, height)
SIMCC_SPLIT = 2.0
BOX_PADDING = 1.25
PAD_VALUE = 114
MEAN_RGB = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD_RGB = np.array([58.395, 57.12, 57.375], dtype=np.float32)
STRIDES = (8, 16, 32)


# ------------------------------------------------------------------------------------- detector
def letterbox(image: np.ndarray, size: tuple[int, int] = DETECTOR_INPUT) -> tuple[np.ndarray, float]:
    """RGB uint8 (H, W, 3) -> detector input (1, 3, h, w) float32 BGR 0-255, and the resize ratio."""
    import cv2

    width, height = size
    ratio = min(width / image.shape[1], height / image.shape[0])
    new_w, new_h = max(1, int(round(image.shape[1] * ratio))), max(1, int(round(image.shape[0] * ratio)))
    canvas = np.full((height, width, 3), PAD_VALUE, dtype=np.uint8)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas[:new_h, :new_w] = resized
    bgr = canvas[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1))[None], ratio


def yolox_grid(size: tuple[int, int] = DETECTOR_INPUT, strides=STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell origins (N, 2) and their strides (N, 1) in the order of YOLOX's output rows."""
    width, height = size
    cells, steps = [], []
    for stride in strides:
        gy, gx = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        cells.append(np.stack([gx.reshape(-1), gy.reshape(-1)], -1))
        steps.append(np.full((cells[-1].shape[0], 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


def yolox_decode(raw: np.ndarray, ratio: float, size: tuple[int, int] = DETECTOR_INPUT,
                 person_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX output rows (N, 5 + classes) -> person boxes (N, 4) x0, y0, x1, y1 in image pixels, scores (N,)."""
    raw = np.asarray(raw, dtype=np.float32).reshape(-1, raw.shape[-1])
    cells, steps = yolox_grid(size)
    if raw.shape[0] != cells.shape[0]:
        raise ValueError(f"detector output has {raw.shape[0]} rows; a {size[0]}x{size[1]} YOLOX gives {cells.shape[0]}")
    centre = (raw[:, :2] + cells) * steps
    wh = np.exp(np.clip(raw[:, 2:4], -20.0, 20.0)) * steps
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], -1) / ratio
    scores = raw[:, 4] * raw[:, 5 + person_class]
    return boxes, scores


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with each of boxes (N, 4), x0, y0, x1, y1."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.45) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def select_people(boxes: np.ndarray, scores: np.ndarray, width: int, height: int, score_threshold: float = 0.3,
                  candidate_threshold: float = 0.1, iou_threshold: float = 0.45) -> np.ndarray:
    """Person boxes (M, 5: box + score) after score filtering, NMS and clipping to the image."""
    ok = np.isfinite(scores) & (scores > candidate_threshold) & np.isfinite(boxes).all(-1)
    boxes, scores = boxes[ok], scores[ok]
    keep = nms(boxes, scores, iou_threshold)
    boxes, scores = boxes[keep], scores[keep]
    good = scores > score_threshold
    boxes = boxes[good].copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    real = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return np.concatenate([boxes[real], scores[good][real, None]], -1)


# ------------------------------------------------------------------------------------ estimator
def box_center_scale(box: np.ndarray, input_size: tuple[int, int] = ESTIMATOR_INPUT,
                     padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Box x0, y0, x1, y1 -> crop centre (2,) and size (2,) padded and matched to the input's aspect."""
    box = np.asarray(box, dtype=np.float64)
    centre = 0.5 * (box[:2] + box[2:4])
    w, h = (box[2:4] - box[:2]) * padding
    aspect = input_size[0] / input_size[1]
    scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    return centre, scale


def crop_matrix(centre: np.ndarray, scale: np.ndarray, input_size: tuple[int, int] = ESTIMATOR_INPUT) -> np.ndarray:
    """2x3 affine map from image pixels to crop pixels (the crop's box [c - s/2, c + s/2] -> [0, size])."""
    k = input_size[0] / scale[0]  # equal to input_size[1] / scale[1] after `box_center_scale`
    origin = centre - scale / 2
    return np.array([[k, 0.0, -k * origin[0]], [0.0, k, -k * origin[1]]], dtype=np.float64)


def crop_person(image: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                input_size: tuple[int, int] = ESTIMATOR_INPUT) -> np.ndarray:
    """RGB uint8 image -> normalised crop (3, h, w) float32 for the pose estimator."""
    import cv2

    matrix = crop_matrix(centre, scale, input_size)
    crop = cv2.warpAffine(image, matrix, (int(input_size[0]), int(input_size[1])), flags=cv2.INTER_LINEAR)
    crop = (crop.astype(np.float32) - MEAN_RGB) / STD_RGB
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray, split: float = SIMCC_SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """SimCC vectors (N, K, Wx), (N, K, Wy) -> keypoints (N, K, 2) in crop pixels and scores (N, K).

    Location = argmax bin / split; score = the smaller of the two maxima; keypoints whose score is
    not positive get location -1."""
    simcc_x, simcc_y = np.asarray(simcc_x, dtype=np.float32), np.asarray(simcc_y, dtype=np.float32)
    locs = np.stack([simcc_x.argmax(-1), simcc_y.argmax(-1)], -1).astype(np.float32) / split
    scores = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    locs[scores <= 0] = -1.0
    return locs, scores


def simcc_index(point_crop: np.ndarray, split: float = SIMCC_SPLIT) -> np.ndarray:
    """The SimCC bins (x, y) at which a crop-pixel location peaks (inverse of `simcc_decode`)."""
    return np.floor(np.asarray(point_crop, dtype=np.float64) * split + 1e-9).astype(np.int64)


def crop_to_image(points: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                  input_size: tuple[int, int] = ESTIMATOR_INPUT) -> np.ndarray:
    """Crop-pixel points (..., 2) -> image pixels."""
    size = np.asarray(input_size, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) / size * scale + centre - scale / 2


def image_to_crop(points: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                  input_size: tuple[int, int] = ESTIMATOR_INPUT) -> np.ndarray:
    """Image pixels (..., 2) -> crop pixels (inverse of `crop_to_image`)."""
    size = np.asarray(input_size, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - centre + scale / 2) / scale * size
