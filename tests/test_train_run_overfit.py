"""The tiny stage-1 config, as shipped, overfits one batch: over 300 steps on one flat static video,
the mean loss of the last 20 steps is at most a tenth of the first 20's."""

from __future__ import annotations

import pytest
from train_run_helpers import TINY_STAGE1, make_videos, read_log

from champ_core.cli import main
from champ_core.train.config import load_config

STEPS = 300


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as the CLI runs get (OMP_NUM_THREADS=1): stable on a shared machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_tiny_stage1_overfits_one_batch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHAMP_TINY_CACHE", str(tmp_path / "tiny-cache"))
    # one video of identical flat frames: every crop of it is the same, so every batch is the same batch
    # (only the per-sample noise, timesteps and the dropout coin change from step to step)
    data = make_videos(tmp_path / "data", videos=1, frames=3, moving=False, uniform=True)
    shipped = load_config("stage1", TINY_STAGE1)
    assert shipped.solver.max_train_steps == STEPS  # the config as shipped, only data and output set
    out = tmp_path / "run"
    code = main(["train", "stage1", "--config", str(TINY_STAGE1), "--no-progress", "--set",
                 f"data.video_folder={data}", "--set", f"output_dir={out}",
                 "--set", "validation.validation_steps=100000", "--set", "checkpointing_steps=100000"])
    assert code == 0, capsys.readouterr().err[-3000:]
    losses = [e["loss"] for e in read_log(out)]
    assert len(losses) == STEPS
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last <= 0.1 * first, (first, last)
