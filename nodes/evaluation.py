"""Evaluation node: the paper's metrics between two IMAGE batches (prediction, ground truth)."""

from __future__ import annotations

import os

from ._common import (
    CATEGORY,
    CHAMP_FOLDER,
    ChampNodeError,
    image_to_uint8,
    log,
    model_folder_paths,
    temp_preview,
    uint8_to_image,
)

EVAL_SUBFOLDER = "eval"  # models/champ/eval


def _metric_names() -> tuple[str, ...]:
    from ..champ_core.evaluation.definitions import METRIC_NAMES

    return METRIC_NAMES


def parse_metrics(text: str) -> list[str] | None:
    """'' or 'default' -> None (every metric whose backbone file is present); else comma/space separated names."""
    names = [part for part in text.replace(",", " ").split() if part]
    if not names or names == ["default"]:
        return None
    unknown = [n for n in names if n not in _metric_names()]
    if unknown:
        raise ChampNodeError(f"Champ Evaluate: unknown metric(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(_metric_names())} (or leave empty for every available one)")
    return names


def eval_model_dirs() -> list[str]:
    """models/champ/eval in every models/champ search path ComfyUI knows."""
    return [os.path.join(path, EVAL_SUBFOLDER) for path in model_folder_paths(CHAMP_FOLDER)]


class ChampEvaluate:
    NODE_ID = "ChampEvaluate"
    DISPLAY_NAME = "Champ Evaluate"
    CATEGORY = f"{CATEGORY}/evaluation"
    DESCRIPTION = (
        "Compares a predicted video with its ground truth using the metrics of the human-animation papers, with "
        "the definitions of DisCo's evaluation code that Champ and MagicAnimate used: L1, PSNR (psnr = corrected "
        "float PSNR*, psnr_legacy = the published uint8 figure), SSIM, LPIPS, FID, FID-VID and FVD. The learned "
        "metrics need their backbone files in models/champ/eval (see docs/evaluation.md); by default every metric "
        "whose file is present is computed. Video metrics need at least 16 frames; FID wants 2048 or more."
    )
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("report", "plot")
    OUTPUT_TOOLTIPS = ("The figures as a table, with warnings and each metric's definition.",
                       "The figures and a per-frame curve for each frame metric.")
    FUNCTION = "evaluate"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        names = ", ".join(_metric_names())
        return {
            "required": {
                "prediction": ("IMAGE", {"tooltip": "The generated frames."}),
                "ground_truth": ("IMAGE", {"tooltip": "The real frames, same count and size."}),
                "metrics": ("STRING", {"default": "", "tooltip": f"Comma separated, from: {names}. Empty = every "
                                                                 "metric whose backbone file is present."}),
                "gif_palette": ("BOOLEAN", {"default": False, "tooltip": "Legacy: quantise colours per frame as "
                                            "DisCo's GIF step did, before FID-VID and FVD."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, metrics="", **_):
        try:
            parse_metrics(metrics)
        except ChampNodeError as exc:
            return str(exc)
        return True

    def evaluate(self, prediction, ground_truth, metrics, gif_palette):
        import comfy.model_management as mm

        from ..champ_core.evaluation import EvaluationError, Evaluator
        from ..champ_core.evaluation.definitions import METRICS
        from ..champ_core.evaluation.plot import plot_result
        from ._common import comfy_progress

        pred = image_to_uint8(prediction, "prediction")
        gt = image_to_uint8(ground_truth, "ground_truth")
        try:
            # cache_models=False: the backbones are freed after the run, ComfyUI's memory stays its own
            evaluator = Evaluator(metrics=parse_metrics(metrics), models_dir=eval_model_dirs(),
                                  device=mm.get_torch_device(), gif_palette=gif_palette,
                                  cache_models=False)  # fmt: skip
            progress = comfy_progress(evaluator.work(len(pred)))
            evaluator.add("video", pred, gt, progress=progress)
            result = evaluator.result()
        except EvaluationError as exc:
            raise ChampNodeError(f"Champ Evaluate: {exc}") from exc
        if result.errors:
            raise ChampNodeError("Champ Evaluate: " + "; ".join(result.errors))
        for line in result.warnings:
            log.warning("Champ Evaluate: %s", line)
        lines = [result.table(), ""]
        lines += [f"warning: {w}" for w in result.warnings]
        lines += [f"{name}: {METRICS[name].definition}" for name in result.values]
        report = "\n".join(lines)
        log.info("Champ Evaluate:\n%s", result.table())
        plot = plot_result(result)
        return {"ui": {"images": [temp_preview(plot, "champ_eval")]}, "result": (report, uint8_to_image(plot[None]))}


NODES = [ChampEvaluate]
