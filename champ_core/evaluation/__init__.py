"""Evaluation: the paper's metrics (L1, PSNR, SSIM, LPIPS, FID, FID-VID, FVD) with DisCo's definitions.

See docs/evaluation.md. Heavy libraries (torch models, lpips, pytorch-fid, PyAV) load on first use.
"""

from __future__ import annotations

from .definitions import METRIC_NAMES, METRICS, MetricSpec
from .errors import BackboneError, EvaluationError, MissingBackboneError
from .evaluator import EvaluationResult, Evaluator, clear_model_cache, evaluate_frames, evaluate_videos

__all__ = [
    "METRIC_NAMES",
    "METRICS",
    "BackboneError",
    "EvaluationError",
    "EvaluationResult",
    "Evaluator",
    "clear_model_cache",
    "MetricSpec",
    "MissingBackboneError",
    "evaluate_frames",
    "evaluate_videos",
]
