"""Evaluating predicted frames against ground truth: one video (`evaluate_frames`) or several (`Evaluator`).

Frame metrics are computed per frame and averaged over all frames of all videos; FID pools the
frames of all videos into one set per side; FID-VID and FVD pool the 16-frame clips of all videos.
Videos are added one at a time and only features are kept, so memory stays bounded by one video.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import pixel
from .backbones import BACKBONES, as_dirs, find_backbone, missing_message
from .clips import CLIP_LENGTH, clip_starts, gif_palette
from .definitions import FRAME, METRIC_NAMES, METRICS, SET, VIDEO, metric_version
from .errors import EvaluationError, MissingBackboneError
from .frechet import frechet_distance_features

log = logging.getLogger("champ.evaluation")

# Fewer samples than feature dimensions make the covariance rank-deficient (FID then biased upwards).
FID_RECOMMENDED_FRAMES = 2048

SSIM_WINDOW = 7  # scikit-image's default window

Progress = Callable[[int, int], None]

# Loaded backbones, kept between evaluations (a bench evaluating video after video loads each once).
# Key: backbone, resolved path, file size and mtime (a replaced file is read again), device.
_MODEL_CACHE: dict[tuple, object] = {}
_MODEL_CACHE_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Drop the backbones kept between evaluations (frees their memory)."""
    with _MODEL_CACHE_LOCK:
        _MODEL_CACHE.clear()

_PIXEL_FUNCTIONS = {
    "l1": pixel.l1_frame,
    "psnr": pixel.psnr_frame,
    "psnr_legacy": pixel.psnr_legacy_frame,
    "ssim": pixel.ssim_frame,
}


def resolve_device(device=None):
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EvaluationError(f"--device {device!r} is not a torch device (use cpu, cuda, cuda:1, ...)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"device {device} asked for but CUDA is not available here; use --device cpu")
    return device


def as_frames(frames, what: str) -> np.ndarray:
    """uint8 (T, H, W, 3) from an array or a list of (H, W, 3) frames."""
    array = np.stack(frames) if isinstance(frames, (list, tuple)) else np.asarray(frames)
    if array.ndim == 3 and array.shape[-1] == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise EvaluationError(f"{what}: expected RGB frames (T, H, W, 3), got shape {array.shape}")
    if array.dtype != np.uint8:
        raise EvaluationError(f"{what}: expected uint8 frames (0-255), got {array.dtype}")
    if array.shape[0] == 0:
        raise EvaluationError(f"{what}: no frames")
    return np.ascontiguousarray(array)


def check_pair(pred: np.ndarray, gt: np.ndarray, name: str) -> None:
    if len(pred) != len(gt):
        raise EvaluationError(f"{name}: prediction has {len(pred)} frames, ground truth {len(gt)}; "
                              f"evaluate videos of equal length")
    if pred.shape[1:] != gt.shape[1:]:
        raise EvaluationError(f"{name}: prediction frames are {pred.shape[2]}x{pred.shape[1]}, ground truth "
                              f"{gt.shape[2]}x{gt.shape[1]}; resize one side first")


@dataclass
class EvaluationResult:
    values: dict[str, float]
    per_video: dict[str, dict[str, float]]
    per_frame: dict[str, dict[str, list[float]]]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # explicitly requested metrics that could not be computed
    gif_palette: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # samples entering each set/video metric

    def to_json(self) -> dict:
        return {
            "metrics": {
                name: {"value": value, "definition": METRICS[name].definition,
                       "version": metric_version(name, self.gif_palette)}
                for name, value in self.values.items()
            },
            "per_video": self.per_video,
            "per_frame": self.per_frame,
            "samples": self.counts,
            "warnings": self.warnings,
            "errors": self.errors,
        }

    def table(self) -> str:
        if not self.values:
            return "no metric computed"
        rows = [("metric", "value", "better", "samples")]
        for name, value in self.values.items():
            spec = METRICS[name]
            better = "higher" if spec.higher_is_better else "lower"
            rows.append((name, f"{value:.6g}", better, str(self.counts.get(name, ""))))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise MissingBackboneError("; ".join(self.errors))


class Evaluator:
    """Accumulates videos (`add`) and computes every selected metric (`result`)."""

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        models_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        device=None,
        gif_palette: bool = False,
        cache_models: bool = True,
    ) -> None:
        self.explicit = metrics is not None
        names = list(METRIC_NAMES if metrics is None else metrics)
        unknown = [m for m in names if m not in METRICS]
        if unknown:
            raise EvaluationError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_NAMES)}")
        if not names:
            raise EvaluationError("no metric selected")
        self.dirs = as_dirs(models_dir)
        self.device = resolve_device(device)
        self.gif_palette = gif_palette
        self.cache_models = cache_models
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.paths: dict[str, Path] = {}
        missing: dict[str, list[str]] = {}
        for name in dict.fromkeys(names):
            key = METRICS[name].backbone
            if key is None:
                continue
            path = find_backbone(BACKBONES[key], self.dirs)
            if path is None:
                missing.setdefault(key, []).append(name)
            else:
                self.paths[key] = path
        for key, users in missing.items():  # one line per missing file
            message = missing_message(" and ".join(users), BACKBONES[key], self.dirs)
            (self.errors if self.explicit else self.warnings).append(message)
        self.metrics = [m for m in dict.fromkeys(names) if METRICS[m].backbone is None or METRICS[m].backbone in self.paths]
        self._models: dict[str, object] = {}
        self._frame_values: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics if METRICS[m].kind == FRAME}
        self._features: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
            m: ([], []) for m in self.metrics if METRICS[m].kind in (SET, VIDEO)
        }
        self.per_video: dict[str, dict[str, float]] = {}
        self.per_frame: dict[str, dict[str, list[float]]] = {}
        self._short_videos: list[str] = []

    # -- backbones ---------------------------------------------------------------------------
    def _model(self, key: str):
        if key not in self._models:
            from .loading import LOADERS

            path = self.paths[key].resolve()
            stat = path.stat()
            cache_key = (key, str(path), stat.st_size, stat.st_mtime_ns, str(self.device))
            with _MODEL_CACHE_LOCK:
                model = _MODEL_CACHE.get(cache_key) if self.cache_models else None
                if model is None:
                    log.info("loading %s from %s", key, path)
                    model = LOADERS[key](path).to(self.device)
                    if self.cache_models:
                        _MODEL_CACHE[cache_key] = model
            self._models[key] = model
        return self._models[key]

    @property
    def video_metrics(self) -> list[str]:
        return [m for m in self.metrics if METRICS[m].kind == VIDEO]

    def check_length(self, num_frames: int, name: str) -> bool:
        """False (with a warning) or an error when a video is too short for the selected video metrics."""
        if not self.video_metrics or num_frames >= CLIP_LENGTH:
            return True
        message = (f"{name}: {num_frames} frames, but the video metrics ({', '.join(self.video_metrics)}) need "
                   f"clips of {CLIP_LENGTH} frames; give at least {CLIP_LENGTH} frames")
        if self.explicit:
            raise EvaluationError(message)
        message += " (video metrics skip this video)"
        if message not in self.warnings:
            self.warnings.append(message)
        return False

    def work(self, num_frames: int) -> int:
        """Progress units `add` reports for a video of this length."""
        clips = len(clip_starts(num_frames))
        units = 0
        for m in self.metrics:
            kind = METRICS[m].kind
            units += num_frames if kind == FRAME else 2 * (clips if kind == VIDEO else num_frames)
        return max(units, 1)

    # -- adding videos ------------------------------------------------------------------------
    def add(self, name: str, pred, gt, progress: Progress | None = None) -> None:
        from .features import clip_features, i3d_inputs, inception_features, lpips_values, resnet3d_inputs

        pred, gt = as_frames(pred, f"{name} (prediction)"), as_frames(gt, f"{name} (ground truth)")
        check_pair(pred, gt, name)
        if name in self.per_video:
            raise EvaluationError(f"video name {name!r} given twice")
        if "ssim" in self.metrics and min(pred.shape[1:3]) < SSIM_WINDOW:
            raise EvaluationError(f"{name}: frames are {pred.shape[2]}x{pred.shape[1]}, SSIM's {SSIM_WINDOW}x"
                                  f"{SSIM_WINDOW} window needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
        long_enough = self.check_length(len(pred), name)
        total, done = self.work(len(pred)), 0

        def tick(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(min(done, total), total)

        video_values: dict[str, float] = {}
        frame_values: dict[str, list[float]] = {}
        for metric in self.metrics:
            spec = METRICS[metric]
            if spec.kind == FRAME:
                if metric in _PIXEL_FUNCTIONS:
                    function = _PIXEL_FUNCTIONS[metric]
                    values = np.empty(len(pred))
                    for index in range(len(pred)):
                        values[index] = function(pred[index], gt[index])
                        tick(1)
                else:
                    values = lpips_values(self._model("vgg16"), pred, gt, self.device,
                                          legacy=metric == "lpips_legacy", tick=tick)  # fmt: skip
                self._frame_values[metric].append(values)
                video_values[metric] = float(values.mean())
                frame_values[metric] = [float(v) for v in values]
            elif spec.kind == SET:
                model = self._model("inception")
                self._features[metric][0].append(inception_features(model, pred, self.device, tick=tick))
                self._features[metric][1].append(inception_features(model, gt, self.device, tick=tick))
            elif long_enough:
                source_pred, source_gt = (gif_palette(pred), gif_palette(gt)) if self.gif_palette else (pred, gt)
                starts = clip_starts(len(pred))
                if metric == "fid_vid":
                    model, prepare, average = self._model("resnet3d50"), resnet3d_inputs, True
                else:
                    model, prepare, average = self._model("i3d"), i3d_inputs, False
                for side, frames in enumerate((source_pred, source_gt)):
                    feats = clip_features(model, prepare(frames), starts, CLIP_LENGTH, self.device, average,
                                          tick=tick)
                    self._features[metric][side].append(feats)
        self.per_video[name] = video_values
        self.per_frame[name] = frame_values
        if progress is not None:
            progress(total, total)

    # -- the figures ---------------------------------------------------------------------------
    def result(self) -> EvaluationResult:
        if not self.per_video:
            raise EvaluationError("no video was added")
        values: dict[str, float] = {}
        counts: dict[str, int] = {}
        warnings, errors = list(self.warnings), list(self.errors)
        for metric in self.metrics:
            kind = METRICS[metric].kind
            if kind == FRAME:
                allv = np.concatenate(self._frame_values[metric])
                values[metric] = float(allv.mean())
                counts[metric] = int(allv.size)
                continue
            pred_parts, gt_parts = self._features[metric]
            count = sum(len(p) for p in pred_parts)
            unit = "frames" if kind == SET else "clips"
            if count < 2:
                message = (f"{metric}: {count} {unit} in all, a Frechet distance needs at least 2 "
                           f"(video metrics: at least {CLIP_LENGTH + 1} frames)")
                (errors if self.explicit else warnings).append(message)
                continue
            if kind == SET and count < FID_RECOMMENDED_FRAMES:
                warnings.append(f"fid: only {count} frames per side (< {FID_RECOMMENDED_FRAMES}, the feature "
                                f"dimension): the covariance is rank-deficient and FID is biased upwards; compare "
                                f"only figures computed on the same number of frames")
            values[metric] = frechet_distance_features(np.concatenate(pred_parts), np.concatenate(gt_parts))
            counts[metric] = count
        return EvaluationResult(values=values, per_video=self.per_video, per_frame=self.per_frame,
                                warnings=warnings, errors=errors, gif_palette=self.gif_palette, counts=counts)


def evaluate_frames(
    pred,
    gt,
    metrics: Sequence[str] | None = None,
    models_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    device=None,
    gif_palette: bool = False,
    progress: Progress | None = None,
    name: str = "video",
) -> EvaluationResult:
    """Evaluate one video (uint8 (T, H, W, 3) RGB arrays) against its ground truth; see `Evaluator`."""
    evaluator = Evaluator(metrics=metrics, models_dir=models_dir, device=device, gif_palette=gif_palette)
    evaluator.add(name, pred, gt, progress=progress)
    return evaluator.result()


def evaluate_videos(
    pairs: Iterable[tuple[str, object, object]],
    metrics: Sequence[str] | None = None,
    models_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    device=None,
    gif_palette: bool = False,
) -> EvaluationResult:
    """Evaluate several (name, pred, gt) videos; set and video metrics pool all of them."""
    evaluator = Evaluator(metrics=metrics, models_dir=models_dir, device=device, gif_palette=gif_palette)
    for name, pred, gt in pairs:
        evaluator.add(name, pred, gt)
    return evaluator.result()
