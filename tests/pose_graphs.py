"""Small ONNX graphs with the exact input/output signatures of DWPose's two model files.

`yolox_l.onnx`: input `images` (1, 3, 640, 640) float32 -> `output` (1, 8400, 85): per grid cell
(strides 8, 16, 32) box offsets, log sizes, then objectness and 80 class scores (sigmoid inside).
`dw-ll_ucoco_384.onnx`: input `input` (1, 3, 384, 288) -> `simcc_x` (1, 133, 576), `simcc_y`
(1, 133, 768).

Random weights (kept small), plus optional planted values so a test knows what the networks
"see": detector rows set to a given box and score, SimCC peaks at given crop locations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 17


def _tensor(name, array):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def yolox_rows(boxes: list[tuple[float, float, float, float, float]], size: int = 640) -> np.ndarray:
    """Planted detector logits (8400, 85): each (cx, cy, w, h, score) in letterboxed pixels set on
    the stride-32 cell containing its centre; every other row scores ~0."""
    rows = np.zeros((8400, 85), dtype=np.float32)
    rows[:, 4] = -12.0
    rows[:, 5:] = -12.0
    start = (size // 8) ** 2 + (size // 16) ** 2
    for cx, cy, w, h, score in boxes:
        gx, gy = int(cx // 32), int(cy // 32)
        row = start + gy * (size // 32) + gx
        rows[row, 0], rows[row, 1] = cx / 32 - gx, cy / 32 - gy
        rows[row, 2], rows[row, 3] = np.log(w / 32), np.log(h / 32)
        logit = np.log(np.sqrt(score) / (1 - np.sqrt(score)))
        rows[row, 4], rows[row, 5] = logit, logit
    return rows


def make_yolox(path: str | Path, seed: int = 0, planted: np.ndarray | None = None, batch: int | str = 1) -> Path:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    parts = []
    for i, stride in enumerate((8, 16, 32)):
        w = rng.normal(0, 1e-7, size=(85, 3, stride, stride))
        inits += [_tensor(f"w{i}", w), _tensor(f"b{i}", rng.normal(0, 0.01, size=85))]
        nodes.append(helper.make_node("Conv", ["images", f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[stride, stride],
                                      strides=[stride, stride]))
        inits.append(helper.make_tensor(f"s{i}", TensorProto.INT64, [3], [0, 85, -1]))
        nodes.append(helper.make_node("Reshape", [f"c{i}", f"s{i}"], [f"r{i}"]))
        parts.append(f"r{i}")
    nodes.append(helper.make_node("Concat", parts, ["cat"], axis=2))
    nodes.append(helper.make_node("Transpose", ["cat"], ["rows"], perm=[0, 2, 1]))
    plant = planted if planted is not None else yolox_rows([])
    inits.append(_tensor("planted", plant[None]))
    nodes.append(helper.make_node("Add", ["rows", "planted"], ["logits"]))
    inits.append(helper.make_tensor("split", TensorProto.INT64, [2], [4, 81]))
    nodes.append(helper.make_node("Split", ["logits", "split"], ["box", "cls_logit"], axis=2))
    nodes.append(helper.make_node("Sigmoid", ["cls_logit"], ["cls"]))
    nodes.append(helper.make_node("Concat", ["box", "cls"], ["output"], axis=2))
    graph = helper.make_graph(nodes, "yolox_l_random",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 640, 640])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 8400, 85])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def simcc_planted(points_crop: np.ndarray | None, height: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Planted SimCC vectors (133, 576) and (133, 768): a peak of `height` at each point's bins
    (points (133, 2) in crop pixels; NaN rows = no peak)."""
    sx, sy = np.zeros((133, 576), np.float32), np.zeros((133, 768), np.float32)
    if points_crop is not None:
        for k, (x, y) in enumerate(np.asarray(points_crop)):
            if np.isfinite(x) and np.isfinite(y):
                sx[k, int(np.floor(x * 2))] = height
                sy[k, int(np.floor(y * 2))] = height
    return sx, sy


def make_dwpose(path: str | Path, seed: int = 0, points_crop: np.ndarray | None = None, batch: int | str = 1,
                names: tuple[str, str] = ("simcc_x", "simcc_y")) -> Path:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed + 1)
    px, py = simcc_planted(points_crop)
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1)]
    inits = []
    for axis, bins, plant, out in ((0, 576, px, names[0]), (1, 768, py, names[1])):
        inits.append(_tensor(f"w{axis}", rng.normal(0, 1e-3, size=(3, 133 * bins))))
        inits.append(helper.make_tensor(f"shape{axis}", TensorProto.INT64, [3], [-1, 133, bins]))
        inits.append(_tensor(f"p{axis}", plant[None] + rng.uniform(0, 0.05, size=(1, 133, bins))))
        nodes += [helper.make_node("MatMul", ["flat", f"w{axis}"], [f"m{axis}"]),
                  helper.make_node("Reshape", [f"m{axis}", f"shape{axis}"], [f"r{axis}"]),
                  helper.make_node("Add", [f"r{axis}", f"p{axis}"], [out])]
    graph = helper.make_graph(nodes, "dwpose_random",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 384, 288])],
                              [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [batch, 133, 576]),
                               helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [batch, 133, 768])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


# COCO-17 index -> OpenPose-18 index
_COCO_FROM_OP18 = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)


def wholebody_points(person: dict) -> np.ndarray:
    """(133, 2) whole-body points from a POSE_KEYPOINT person (OpenPose-18 body, optional feet and
    hands); points the person lacks (and the face) are put at the nose, so they stay inside the box."""
    body = np.asarray(person["pose_keypoints_2d"], dtype=np.float64).reshape(18, 3)
    out = np.tile(body[0, :2], (133, 1))
    for coco, op in enumerate(_COCO_FROM_OP18):
        if body[op, 2] > 0:
            out[coco] = body[op, :2]
    for key, first, count in (("foot_keypoints_2d", 17, 6), ("hand_left_keypoints_2d", 91, 21),
                              ("hand_right_keypoints_2d", 112, 21)):
        values = person.get(key)
        if values:
            pts = np.asarray(values, dtype=np.float64).reshape(count, 3)
            ok = pts[:, 2] > 0
            out[first:first + count][ok] = pts[ok, :2]
    return out
