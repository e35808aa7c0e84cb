"""Weights trained by the tiny configs load in a real ComfyUI 0.3.75 host (in-process) through the
Champ Model Loader, as they are in weights/final/, and sample a video there."""

from __future__ import annotations

import shutil

import pytest
import torch
from comfy_host import TINY_SIZE
from test_host_generation import generation_prompt
from train_run_helpers import TINY_STAGE1, TINY_STAGE2, make_videos

from champ_core.cli import main

pytestmark = pytest.mark.host


def _train(capsys, stage, config, *sets) -> None:
    argv = ["train", stage, "--config", str(config), "--no-progress"]
    for item in sets:
        argv += ["--set", item]
    code = main(argv)
    assert code == 0, capsys.readouterr().err[-3000:]


def test_trained_weights_sample_through_the_champ_model_loader(comfy_host, tmp_path, capsys, monkeypatch):
    import folder_paths

    monkeypatch.setenv("CHAMP_TINY_CACHE", str(tmp_path / "tiny-cache"))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_videos(tmp_path / "data", videos=1, frames=4)
        common = [f"data.video_folder={data}", "solver.max_train_steps=2", "data.train_bs=1",
                  "validation.validation_steps=1000", "checkpointing_steps=1000"]
        _train(capsys, "stage1", TINY_STAGE1, *common, f"output_dir={tmp_path / 'run1'}")
        _train(capsys, "stage2", TINY_STAGE2, *common, f"output_dir={tmp_path / 'run2'}",
               f"stage1_ckpt_dir={tmp_path / 'run1'}")
    finally:
        torch.set_num_threads(previous)

    # the folder as training wrote it, under models/champ/<name>; the host's own tiny image encoder and VAE
    # (projection width 32, 4 latent channels: the shapes the tiny config trains with)
    champ_models = folder_paths.get_folder_paths("champ")[0]
    target = f"{champ_models}/trained_tiny"
    shutil.copytree(tmp_path / "run2" / "weights" / "final", target, dirs_exist_ok=True)
    prompt = generation_prompt(steps=2, length=4, overlap=1, prefix="champ_trained")
    prompt["model"]["inputs"]["weights"] = "trained_tiny"
    result = comfy_host.run(prompt)
    assert result.success, result.error or result.node_errors
    images = result.outputs["save"]["images"]
    assert len(images) == 8  # FRAMES of the generation prompt
    w, h = TINY_SIZE
    from PIL import Image

    first = Image.open(f"{folder_paths.get_output_directory()}/{images[0]['subfolder']}/{images[0]['filename']}")
    assert first.size == (w, h)
