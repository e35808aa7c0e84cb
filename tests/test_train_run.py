"""Short real runs of both tiny configs: outputs, TensorBoard scalars and validation media, the weights
loading in the pack's own pipeline (`animate --weights`), checkpoint rotation and log.jsonl."""

from __future__ import annotations

import json

import pytest
from train_run_helpers import TINY_STAGE1, TINY_STAGE2, make_videos, read_log

from champ_core.cli import main

STEPS = 20
RELEASED_STAGE1 = ["denoising_unet", "reference_unet", "guidance_encoder_depth", "guidance_encoder_normal",
                   "guidance_encoder_semantic_map", "guidance_encoder_dwpose"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as the CLI runs get (OMP_NUM_THREADS=1): stable on a shared machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = [p for p in folder.rglob("events.out.tfevents.*")]
    assert runs, f"no TensorBoard event file under {folder}"
    acc = EventAccumulator(str(runs[0].parent), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, \
        acc.Tags()["images"]


def _train(capsys, stage, config, *sets) -> str:
    argv = ["train", stage, "--config", str(config), "--no-progress"]
    for item in sets:
        argv += ["--set", item]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("train-data") / "data", videos=2, frames=6)


@pytest.mark.slow
def test_tiny_stage1_then_stage2_write_every_output(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setenv("CHAMP_TINY_CACHE", str(tmp_path / "tiny-cache"))
    run1 = tmp_path / "stage1"
    err = _train(capsys, "stage1", TINY_STAGE1, f"data.video_folder={data}", f"output_dir={run1}",
                 f"solver.max_train_steps={STEPS}", "checkpointing_steps=5", "checkpoints_total_limit=2", "data.train_bs=2",
                 f"validation.validation_steps={STEPS}")
    assert "dataset: " in err  # the schema check ran (before the first step)

    log = read_log(run1)
    assert [e["step"] for e in log] == list(range(1, STEPS + 1))
    for entry in log:
        assert set(entry) >= {"step", "loss", "lr", "grad_norm"}
        assert entry["loss"] > 0 and entry["grad_norm"] > 0 and entry["lr"] == pytest.approx(2e-3)
    scalars, images = _scalars(run1 / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, STEPS + 1))
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([e["loss"] for e in log], rel=1e-6)
    assert "train/lr" in scalars and "train/grad_norm" in scalars
    assert images == ["validation/0"]
    from PIL import Image

    grid = Image.open(run1 / "validation" / f"step-{STEPS}" / "val-0.png")
    assert grid.size == (64 * 6, 64 * 2)  # reference | sample | 4 maps, one row per guidance index (0, 2)

    # checkpoints rotated to the newest 2 (5, 10, 15 written; the final one at 20)
    assert sorted(p.name for p in (run1 / "checkpoints").iterdir()) == ["checkpoint-15", "checkpoint-20"]
    for step in (5, 10, 15):
        assert (run1 / "weights" / f"step-{step}" / "denoising_unet.pth").is_file()
    final = run1 / "weights" / "final"
    for stem in RELEASED_STAGE1:
        assert (final / f"{stem}.pth").is_file() and (final / f"{stem}.safetensors").is_file()
    assert not (final / "motion_module.pth").exists()
    manifest = json.loads((final / "champ_weights.json").read_text())
    assert manifest["stage"] == 1

    # stage 1 weights sample through the pack's own pipeline (frame by frame)
    from champ_core.pipeline.inputs import FolderGuidance
    from champ_core.pipeline.loading import load_pipeline
    from champ_core.pipeline.sampling import SamplingOptions

    pipeline = load_pipeline(final)
    result = pipeline.animate(data / "video00" / "images" / "0001.png", FolderGuidance(data / "video00"), 64, 64,
                              SamplingOptions(steps=2, guidance_scale=1.0))
    assert tuple(result.frames.shape) == (6, 64, 64, 3)

    run2 = tmp_path / "stage2"
    _train(capsys, "stage2", TINY_STAGE2, f"data.video_folder={data}", f"output_dir={run2}",
           f"stage1_ckpt_dir={run1}", f"solver.max_train_steps={STEPS}", "checkpointing_steps=1000",
           f"validation.validation_steps={STEPS}")
    log2 = read_log(run2)
    assert [e["step"] for e in log2] == list(range(1, STEPS + 1))
    scalars2, images2 = _scalars(run2 / "tensorboard")
    assert len(scalars2["train/loss"]) == STEPS and images2 == ["validation/0"]
    video = run2 / "validation" / f"step-{STEPS}" / "val-0.mp4"
    import av

    with av.open(str(video)) as container:
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (64, 64)
    final2 = run2 / "weights" / "final"
    for stem in RELEASED_STAGE1 + ["motion_module"]:
        assert (final2 / f"{stem}.pth").is_file() and (final2 / f"{stem}.safetensors").is_file()

    # stage 2 weights through `animate --weights` (VAE and image encoder sit next to the weights)
    out = tmp_path / "anim.mp4"
    code = main(["animate", "--reference", str(data / "video00" / "images" / "0001.png"), "--guidance",
                 str(data / "video01"), "--weights", str(final2), "--out", str(out), "--width", "64", "--height",
                 "64", "--steps", "2", "--window-length", "4", "--window-overlap", "1"])
    assert code == 0, capsys.readouterr().err[-2000:]
    with av.open(str(out)) as container:
        assert len([f for f in container.decode(video=0)]) == 6


def test_bf16_mixed_precision_on_cpu_trains_and_validates(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setenv("CHAMP_TINY_CACHE", str(tmp_path / "tiny-cache"))
    out = tmp_path / "bf16"
    err = _train(capsys, "stage1", TINY_STAGE1, f"data.video_folder={data}", f"output_dir={out}",
                 "solver.max_train_steps=2", "solver.mixed_precision=bf16", "weight_dtype=bf16", "data.train_bs=2",
                 "validation.validation_steps=2", "validation.num_inference_steps=2")
    assert "mixed precision bf16" in err
    losses = [e["loss"] for e in read_log(out)]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    assert (out / "validation" / "step-2" / "val-0.png").is_file()
    assert (out / "weights" / "final" / "denoising_unet.safetensors").is_file()
