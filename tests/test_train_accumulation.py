"""Gradient accumulation: an optimizer step over N micro-batches sees the same micro-batches (data,
noise, timesteps, dropout) as N steps without accumulation, and logs the mean of their losses.

With a learning rate of 1e-10 the weights do not move measurably, so both runs compute every micro-batch's
loss on the same weights and the comparison holds to float rounding."""

from __future__ import annotations

import pytest
from train_run_helpers import TINY_STAGE1, make_videos, read_log

from champ_core.cli import main


def _losses(tmp_path, data, name: str, accumulation: int, steps: int, capsys) -> list[float]:
    out = tmp_path / name
    code = main(["train", "stage1", "--config", str(TINY_STAGE1), "--no-progress",
                 "--set", f"data.video_folder={data}", "--set", f"output_dir={out}", "--set", "data.train_bs=2",
                 "--set", f"solver.gradient_accumulation_steps={accumulation}",
                 "--set", f"solver.max_train_steps={steps}", "--set", "solver.learning_rate=1e-10",
                 "--set", "validation.validation_steps=100000", "--set", "checkpointing_steps=100000"])
    assert code == 0, capsys.readouterr().err[-3000:]
    entries = read_log(out)
    assert [e["step"] for e in entries] == list(range(1, steps + 1))
    return [e["loss"] for e in entries]


def test_accumulated_step_logs_the_mean_of_the_same_micro_batches(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHAMP_TINY_CACHE", str(tmp_path / "tiny-cache"))
    data = make_videos(tmp_path / "data", videos=2, frames=6)
    single = _losses(tmp_path, data, "single", accumulation=1, steps=6, capsys=capsys)
    accumulated = _losses(tmp_path, data, "accumulated", accumulation=3, steps=2, capsys=capsys)
    expected = [sum(single[i:i + 3]) / 3 for i in (0, 3)]
    assert accumulated == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert len(set(single)) == 6  # the micro-batches differ, so the check is not trivially true
