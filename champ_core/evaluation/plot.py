"""A picture of an evaluation: the figures as text, and one per-frame curve per frame metric."""

from __future__ import annotations

import numpy as np

from .definitions import FRAME, METRICS
from .evaluator import EvaluationResult

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRID = (210, 210, 210)
CURVE = (31, 119, 180)
LINE_HEIGHT = 14


def plot_result(result: EvaluationResult, width: int = 640, panel_height: int = 110) -> np.ndarray:
    """uint8 (H, width, 3) RGB image: a header with every figure, then a per-frame panel per frame metric.

    Panels follow the frames of all videos in order (videos separated by a vertical line).
    """
    from PIL import Image, ImageDraw

    header = [f"{name}: {value:.6g}" for name, value in result.values.items()] or ["no metric computed"]
    header_lines = [", ".join(header[i:i + 3]) for i in range(0, len(header), 3)]
    panels = [m for m in result.values if METRICS[m].kind == FRAME]
    height = 10 + LINE_HEIGHT * len(header_lines) + 10 + panel_height * len(panels)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    y = 8
    for line in header_lines:
        draw.text((8, y), line, fill=INK)
        y += LINE_HEIGHT
    y += 10
    for metric in panels:
        series = [np.asarray(frames[metric], float) for frames in result.per_frame.values() if metric in frames]
        _panel(draw, (8, y, width - 8, y + panel_height - 8), metric, series)
        y += panel_height
    return np.array(image)  # a writable copy (torch.from_numpy warns on read-only arrays)


def _panel(draw, box: tuple[int, int, int, int], metric: str, series: list[np.ndarray]) -> None:
    left, top, right, bottom = box
    values = np.concatenate(series) if series else np.zeros(1)
    low, high = float(values.min()), float(values.max())
    span = high - low or 1.0
    draw.text((left, top), f"{metric} per frame (min {low:.4g}, max {high:.4g})", fill=INK)
    plot_top = top + LINE_HEIGHT + 2
    draw.rectangle((left, plot_top, right, bottom), outline=GRID)
    count = len(values)
    inner_w = right - left - 4

    def x_of(index: int) -> float:
        return left + 2 + (inner_w * index / (count - 1) if count > 1 else inner_w / 2)

    def y_of(value: float) -> float:
        return bottom - 2 - (bottom - plot_top - 4) * (value - low) / span

    start = 0
    for part in series:
        if start:
            draw.line((x_of(start) - 0.5, plot_top, x_of(start) - 0.5, bottom), fill=GRID)
        points = [(x_of(start + i), y_of(v)) for i, v in enumerate(part)]
        if len(points) > 1:
            draw.line(points, fill=CURVE, width=2)
        elif points:
            x, y = points[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=CURVE)
        start += len(part)
