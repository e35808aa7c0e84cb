"""Ctrl-C leaves a resumable checkpoint; `--resume latest` repeats the uninterrupted run bit for bit.

Three real CLI processes on the tiny stage-1 config: an uninterrupted run of N steps, a run that
gets SIGINT once N/2 steps are logged (it finishes the step, writes a checkpoint and exits 130),
and its continuation with `--resume latest`. Per-step losses, learning rates and gradient norms
(log.jsonl) and every tensor of weights/final/ must be bitwise equal; the data order follows from
the step number alone, so equal losses at every step also mean the same samples in the same order.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch
from train_run_helpers import (
    TINY_STAGE1,
    cli_env,
    make_videos,
    read_log,
    read_weights,
    run_cli,
    train_command,
)

STEPS = 8


@pytest.mark.slow
def test_sigint_then_resume_equals_uninterrupted_run(tmp_path):
    data = make_videos(tmp_path / "data", videos=3, frames=6)
    env = cli_env(tmp_path)
    common = [f"data.video_folder={data}", f"solver.max_train_steps={STEPS}", "checkpointing_steps=1000",
              "validation.validation_steps=1000", "uncond_ratio=0.3", "data.train_bs=2"]  # both dropout branches get used
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"

    first = run_cli(train_command("stage1", TINY_STAGE1, *common, f"output_dir={straight}"), env)
    assert first.returncode == 0, first.stderr[-2000:]

    process = subprocess.Popen(train_command("stage1", TINY_STAGE1, *common, f"output_dir={stopped}"), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = stopped / "log.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= STEPS // 2:
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err[-2000:]
    assert "--resume latest" in err and "Traceback" not in err
    interrupted_at = len(read_log(stopped))
    assert STEPS // 2 <= interrupted_at < STEPS
    checkpoints = sorted(p.name for p in (stopped / "checkpoints").iterdir())
    assert checkpoints == [f"checkpoint-{interrupted_at}"]
    assert not (stopped / "weights" / "final").exists()

    resumed = run_cli(train_command("stage1", TINY_STAGE1, *common, f"output_dir={stopped}", resume="latest"), env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    expected, got = read_log(straight), read_log(stopped)
    assert [e["step"] for e in got] == list(range(1, STEPS + 1))
    for a, b in zip(expected, got):
        assert (a["loss"], a["lr"], a["grad_norm"]) == (b["loss"], b["lr"], b["grad_norm"]), (a, b)
    want, have = read_weights(straight / "weights" / "final"), read_weights(stopped / "weights" / "final")
    assert want and sorted(want) == sorted(have)
    for key in want:
        assert torch.equal(want[key], have[key]), key


def test_resume_without_checkpoint_is_one_line(tmp_path):
    data = make_videos(tmp_path / "data", videos=1, frames=3)
    env = cli_env(tmp_path)
    result = run_cli(train_command("stage1", TINY_STAGE1, f"data.video_folder={data}", f"output_dir={tmp_path / 'r'}",
                                   resume="latest"), env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no checkpoint" in lines[0] and "Traceback" not in result.stderr
