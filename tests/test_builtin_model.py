"""The shipped built-in model (models/champ/builtin): integrity, strict loading, recorded outputs,
deterministic training losses, the CLI defaults and the demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builtin_fixtures import (
    FIXTURES,
    LAYERS,
    denoiser_step,
    first_losses,
    placement_ious,
    sample_clip,
)

from champ_core.models.builtin import (
    BUILTIN_DIR,
    CARD_JSON,
    DOMAIN_NOTE,
    IMAGE_SIZE,
    SUMS,
    BuiltinSampling,
    builtin_model_dir,
    builtin_size,
    read_card,
    read_sums,
    verify_sums,
)


@pytest.fixture(scope="module")
def pipeline():
    from champ_core.pipeline.loading import load_pipeline

    return load_pipeline(BUILTIN_DIR)


def test_every_shipped_file_matches_its_sha256_and_is_listed():
    assert verify_sums(BUILTIN_DIR) == []
    listed = set(read_sums(BUILTIN_DIR))
    present = {str(p.relative_to(BUILTIN_DIR)) for p in BUILTIN_DIR.rglob("*") if p.is_file()} - {SUMS}
    assert listed == present


def test_a_changed_file_is_named_by_the_check(tmp_path):
    import shutil

    copy = tmp_path / "builtin"
    shutil.copytree(BUILTIN_DIR, copy)
    target = copy / "vae" / "config.json"
    target.write_text(target.read_text().replace("{", "{ ", 1))
    (copy / "champ" / "motion_module.safetensors").unlink()
    assert sorted(verify_sums(copy)) == ["champ/motion_module.safetensors (missing)", "vae/config.json (sha256 differs)"]


def test_weights_are_fp16_safetensors_under_25_mb_with_a_model_card():
    from safetensors import safe_open

    card = read_card()
    files = [p for p in BUILTIN_DIR.rglob("*.safetensors")]
    assert len(files) == 3 + len(LAYERS) + 2  # denoiser, reference net, motion modules, encoders, CLIP, VAE
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            kinds = {handle.get_slice(k).get_dtype() for k in handle.keys()}
        assert kinds == {"F16"}, (path, kinds)
    total = sum(p.stat().st_size for p in BUILTIN_DIR.rglob("*") if p.is_file())
    assert total < 25 * 2**20
    assert card["total_bytes"] == sum((BUILTIN_DIR / f).stat().st_size for f in card["files"])
    assert card["image_size"] == IMAGE_SIZE and builtin_size() == (IMAGE_SIZE, IMAGE_SIZE)
    assert card["domain"] == DOMAIN_NOTE
    training = card["training"]
    assert set(training["seconds"]) >= {"synth_data", "vae", "stage1", "stage2"}
    assert 0 < training["total_seconds"] <= 2 * 3600  # the budget on 2 CPU cores
    assert training["hardware"]["cpu_cores"] >= 1 and training["hardware"]["gpu"] is None
    text = (BUILTIN_DIR / "MODEL_CARD.md").read_text()
    assert "generated mannequins only" in text and "real photographs" in text


def test_missing_builtin_model_is_one_line_naming_the_folder(tmp_path):
    from champ_core.models.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"incomplete in .*champ/denoising_unet.safetensors, .*model_card.json"):
        builtin_model_dir(tmp_path)


def test_loads_strictly_as_a_stage2_model(pipeline):
    models = pipeline.models
    assert models.denoising_unet.has_motion_modules
    assert set(models.guidance_types) == set(LAYERS)
    assert pipeline.vae.scaling_factor == pytest.approx(
        json.loads((BUILTIN_DIR / "vae" / "config.json").read_text())["scaling_factor"])


def test_a_renamed_tensor_is_named(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from champ_core.models.errors import CheckpointError
    from champ_core.models.loading import load_champ_models

    champ = tmp_path / "champ"
    shutil.copytree(BUILTIN_DIR / "champ", champ)
    path = champ / "guidance_encoder_depth.safetensors"
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    tensors["renamed_" + first] = tensors.pop(first)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError) as caught:
        load_champ_models(champ)
    assert first in str(caught.value) and "renamed_" + first in str(caught.value)


def _fixture(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as data:
        return {k: data[k] for k in data.files}


def test_reproduces_the_recorded_denoiser_step(pipeline):
    data = _fixture("step.npz")
    guidance = {t: data[f"guidance_{t}"] for t in LAYERS}
    prediction = denoiser_step(pipeline, data["reference"], guidance, torch.from_numpy(data["noise"]),
                               int(data["timestep"]))
    assert prediction.shape == data["prediction"].shape
    torch.testing.assert_close(prediction.float(), torch.from_numpy(data["prediction"]), rtol=0, atol=1e-4)


def test_reproduces_the_recorded_clip_within_two_levels(pipeline):
    data = _fixture("clip.npz")
    guidance = {t: data[f"guidance_{t}"] for t in LAYERS}
    frames = sample_clip(pipeline, data["reference"], guidance, data["mask"])
    assert frames.shape == data["frames"].shape
    difference = np.abs(frames.astype(int) - data["frames"].astype(int))
    assert difference.max() <= 2, difference.max()


def test_the_clip_shows_the_person_where_the_guidance_puts_them():
    """The recorded clip (made by the shipped model): its person (pixels unlike the example's empty
    background) overlaps the guidance mask more than the same mask moved sideways."""
    import sys

    from PIL import Image

    sys.path.insert(0, str(FIXTURES.parents[1]))
    from comfy_examples import EXAMPLE_INPUTS, MANNEQUIN_BACKGROUND

    data = _fixture("clip.npz")
    background = np.asarray(Image.open(EXAMPLE_INPUTS / MANNEQUIN_BACKGROUND).convert("RGB"))
    placed, moved = placement_ious(data["frames"], data["mask"], background)
    assert placed > moved + 0.02, (placed, moved)


@pytest.mark.slow
def test_first_ten_losses_of_the_committed_configs_are_recorded_ones(tmp_path):
    recorded = json.loads((FIXTURES / "losses.json").read_text())
    losses = first_losses(tmp_path, len(recorded["stage1"]), len(recorded["stage2"]))
    for stage in ("stage1", "stage2"):
        assert len(losses[stage]) == len(recorded[stage]) == 10
        np.testing.assert_allclose(losses[stage], recorded[stage], rtol=1e-4, atol=1e-6)


def test_animate_without_weights_uses_the_builtin_model(tmp_path):
    import argparse

    from champ_core.cli import animate

    parser = argparse.ArgumentParser()
    animate.add_arguments(parser)
    args = parser.parse_args(["--reference", "r.png", "--guidance", "g", "--out", str(tmp_path / "o.mp4")])
    animate.apply_weight_defaults(args)
    assert args.weights == BUILTIN_DIR and (args.width, args.height) == (IMAGE_SIZE, IMAGE_SIZE)
    assert args.cfg == BuiltinSampling.guidance_scale  # the built-in model's shipped CFG
    args = parser.parse_args(["--reference", "r.png", "--guidance", "g", "--out", "o.mp4", "--weights", "w"])
    animate.apply_weight_defaults(args)
    assert (args.width, args.height) == (512, 512) and args.cfg == 3.5  # the reference's
    args = parser.parse_args(["--reference", "r.png", "--guidance", "g", "--out", "o.mp4", "--width", "256",
                              "--cfg", "2.5"])
    animate.apply_weight_defaults(args)
    assert (args.width, args.height) == (256, 256) and args.cfg == 2.5  # given: kept


def test_demo_writes_the_animation_side_by_side_reference_and_guidance(tmp_path):
    from PIL import Image

    from champ_core.cli import main
    from champ_core.video import read_video

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seconds", "0.25", "--fps", "24", "--steps", "2"]) == 0
    frames, _ = read_video(out / "animation.mp4")
    assert frames.shape == (6, IMAGE_SIZE, IMAGE_SIZE, 3)
    side, _ = read_video(out / "side_by_side.mp4")
    assert side.shape == (6, IMAGE_SIZE, 3 * IMAGE_SIZE, 3)
    assert np.asarray(Image.open(out / "reference.png")).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    for layer in (*LAYERS, "mask"):
        assert len(list((out / "guidance" / layer).glob("*.png"))) == 6
    # the middle tile is the semantic map the animation followed; the first is the reference
    reference = np.asarray(Image.open(out / "reference.png")).astype(int)
    assert np.abs(side[0, :, :IMAGE_SIZE].astype(int) - reference).mean() < 6


def test_card_json_is_what_the_quality_bench_reads_the_size_from():
    from champ_core.evaluation.quality import weights_size

    assert weights_size(BUILTIN_DIR) == (IMAGE_SIZE, IMAGE_SIZE)
    assert (BUILTIN_DIR / CARD_JSON).is_file()
