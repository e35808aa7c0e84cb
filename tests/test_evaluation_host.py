"""Champ Evaluate in a real ComfyUI 0.3.75 (in-process): two IMAGE batches -> report and plot, the
figures equal to the library's, missing backbones named, bad metric names refused at validation."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.host

FRAMES = 3


def write_inputs(folder):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-30, 31, gt.shape), 0, 255).astype(np.uint8)
    Image.fromarray(gt).save(os.path.join(folder, "champ_eval_gt.png"))
    Image.fromarray(pred).save(os.path.join(folder, "champ_eval_pred.png"))
    return pred, gt


def prompt(metrics: str) -> dict:
    return {
        "pred_image": {"class_type": "LoadImage", "inputs": {"image": "champ_eval_pred.png"}},
        "gt_image": {"class_type": "LoadImage", "inputs": {"image": "champ_eval_gt.png"}},
        "pred": {"class_type": "RepeatImageBatch", "inputs": {"image": ["pred_image", 0], "amount": FRAMES}},
        "gt": {"class_type": "RepeatImageBatch", "inputs": {"image": ["gt_image", 0], "amount": FRAMES}},
        "evaluate": {"class_type": "ChampEvaluate",
                     "inputs": {"prediction": ["pred", 0], "ground_truth": ["gt", 0], "metrics": metrics,
                                "gif_palette": False}},
    }


def test_evaluate_node_reports_the_library_figures(comfy_host):
    import folder_paths

    from champ_core.evaluation import evaluate_frames

    pred, gt = write_inputs(folder_paths.get_input_directory())
    result = comfy_host.run(prompt(""))  # default: every metric whose backbone is present (none here)
    assert result.success, result.error()
    report, plot = comfy_host.cached_output("evaluate")[0][0], comfy_host.cached_output("evaluate")[1][0]
    expected = evaluate_frames(np.stack([pred] * FRAMES), np.stack([gt] * FRAMES),
                               metrics=["l1", "psnr", "psnr_legacy", "ssim"], device="cpu")  # fmt: skip
    for name, value in expected.values.items():
        assert f"{value:.6g}" in report, (name, report)
    assert "vgg16-397923af.pth" in report and os.path.join("models", "champ", "eval") in report
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[2] == 640
    assert float(plot.min()) < 0.5 < float(plot.max())  # text and curves on white
    assert result.outputs["evaluate"]["images"][0]["type"] == "temp"


def test_explicit_metric_without_backbone_names_the_file(comfy_host):
    import folder_paths

    write_inputs(folder_paths.get_input_directory())
    result = comfy_host.run(prompt("psnr, fvd"))
    assert not result.success
    message = result.error()["exception_message"]
    assert "i3d_pretrained_400.pt" in message and os.path.join("champ", "eval") in message


def test_unknown_metric_is_refused_before_running(comfy_host):
    import folder_paths

    write_inputs(folder_paths.get_input_directory())
    result = comfy_host.run(prompt("psnr_star"))
    assert not result.success and result.validation_error is not None
    assert "psnr_star" in str(result.node_errors)


def test_lpips_from_models_champ_eval_under_comfyui(comfy_host):
    """A backbone in ComfyUI's models/champ/eval, loaded on ComfyUI's worker thread under inference mode."""
    import shutil

    import folder_paths
    import torch
    from test_evaluation_networks import write_vgg

    from champ_core.evaluation import evaluate_frames

    pred, gt = write_inputs(folder_paths.get_input_directory())
    eval_dir = comfy_host.base / "models" / "champ" / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_vgg(eval_dir, torch.Generator().manual_seed(1))
        result = comfy_host.run(prompt("lpips,lpips_legacy"))
        assert result.success, result.error()
        report = comfy_host.cached_output("evaluate")[0][0]
        expected = evaluate_frames(np.stack([pred] * FRAMES), np.stack([gt] * FRAMES),
                                   metrics=["lpips", "lpips_legacy"], models_dir=eval_dir, device="cpu")  # fmt: skip
        assert expected.values["lpips"] > 0
        for value in expected.values.values():
            assert f"{value:.6g}" in report, report
    finally:
        shutil.rmtree(eval_dir, ignore_errors=True)
