"""The quality bench: its metrics on cases with known answers, its targets and exit codes, and the
bench end to end on the tiny parity-fixture networks with two tiny held-out generated people.

Sizes come from the fixture set (parity_fixture); nothing here hard-codes one.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from parity_fixture import FIXTURE, HEIGHT, PIPE, WIDTH

from champ_core.evaluation import quality as q
from champ_core.evaluation.foreground import (
    binary_dilate,
    binary_open,
    foreground_region,
    mask_iou,
    masked_psnr,
    person_mask,
    region_radius,
    temporal_error,
    temporal_errors,
)

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "quality.py"
FRAMES = 3  # the fewest the bench accepts: reference + 2 evaluated frames (one temporal pair)


def load_bench(path: Path = BENCH):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- metrics on constructed cases -------------------------------------------------------------

def test_person_mask_threshold_any_channel_and_opening():
    background = np.full((20, 20, 3), 100, np.uint8)
    frame = background.copy()
    frame[2:5, 2:5] = 100 + 25  # 3x3, 25 levels above: kept by the opening
    frame[2:5, 10:13] = 100 + 24  # exactly 24: not the person
    frame[10:13, 2:5, 1] = 100 - 30  # one channel only, 30 below: the person
    frame[15:17, 15:17] = 255  # 2x2 speck: removed by the 3x3 opening
    mask = person_mask(frame, background)
    expected = np.zeros((20, 20), bool)
    expected[2:5, 2:5] = True
    expected[10:13, 2:5] = True
    np.testing.assert_array_equal(mask, expected)


def test_opening_and_dilation_match_opencv():
    rng = np.random.default_rng(3)
    kernel3, kernel5 = np.ones((3, 3), np.uint8), np.ones((5, 5), np.uint8)
    for _ in range(5):
        mask = rng.random((23, 31)) < 0.6
        mask[:, :4] = True  # a region cut by the frame edge keeps its edge pixels
        opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel3) > 0
        np.testing.assert_array_equal(binary_open(mask), opened)
        np.testing.assert_array_equal(binary_dilate(mask, 2), cv2.dilate(mask.astype(np.uint8), kernel5) > 0)
    assert binary_open(np.ones((6, 6), bool)).all()


def test_mask_iou_known_values():
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[0:4, 0:4] = True
    b[2:6, 0:4] = True  # overlap 2x4 = 8, union 24
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert mask_iou(a, np.zeros_like(a)) == 0.0


def test_masked_psnr_counts_only_the_region():
    gt = np.full((6, 7, 3), 50, np.uint8)
    pred = np.full_like(gt, 150)  # 100 off outside the region
    region = np.zeros((6, 7), bool)
    region[1:4, 2:5] = True
    pred[region] = 60  # 10 off inside: MSE 100
    assert masked_psnr(pred, gt, region) == pytest.approx(20 * math.log10(255 / 10))
    assert masked_psnr(gt, gt, region) == 100.0
    with pytest.raises(ValueError, match="empty"):
        masked_psnr(pred, gt, np.zeros_like(region))


def test_foreground_region_is_the_dilated_union():
    masks = np.zeros((2, 12, 12), bool)
    masks[0, 2, 2] = True
    masks[1, 8, 9] = True
    region = foreground_region(masks, radius=1)
    expected = np.zeros((12, 12), bool)
    expected[1:4, 1:4] = True
    expected[7:10, 8:11] = True
    np.testing.assert_array_equal(region, expected)
    assert region_radius(128, 128) == 4 and region_radius(48, 32) == 1
    np.testing.assert_array_equal(foreground_region(masks), binary_dilate(masks.any(0), region_radius(12, 12)))


def test_temporal_error_zero_when_generated_equals_ground_truth():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (4, 9, 10, 3), dtype=np.uint8)
    masks = rng.random((4, 9, 10)) < 0.5
    assert temporal_error(gt, gt, masks) == 0.0
    # a constant offset of every generated frame changes no frame difference either
    assert temporal_error(np.clip(gt, 0, 200) + 40, np.clip(gt, 0, 200), masks) == 0.0


def test_temporal_error_of_a_shifted_dot_by_hand():
    # one row, a dot of 90 in the red channel: the truth moves 1 px per frame, the generation 2 px
    gt = np.zeros((3, 1, 6, 3), np.uint8)
    gen = np.zeros_like(gt)
    for t in range(3):
        gt[t, 0, t, 0] = 90
        gen[t, 0, 2 * t, 0] = 90
    masks = gt[..., 0] > 0
    # pair 0: union {x0, x1}: |(-90) - (-90)| + |0 - 90| = 90 over 2 px x 3 channels = 15
    # pair 1: union {x1, x2}: |0 - (-90)| + |(-90) - 90| = 270 over 6 values = 45
    np.testing.assert_allclose(temporal_errors(gen, gt, masks), [15.0, 45.0])
    assert temporal_error(gen, gt, masks) == pytest.approx(30.0)
    empty = np.zeros_like(masks)
    empty[0, 0, 1] = True  # pair 0 over x1 alone: 90 over 3 values; pair 1 has an empty union: left out
    np.testing.assert_allclose(temporal_errors(gen, gt, empty), [30.0, np.nan])
    assert temporal_error(gen, gt, empty) == pytest.approx(30.0)


# -- targets and --check -----------------------------------------------------------------------

def passing_methods() -> dict:
    base = {"ssim": 0.5, "lpips": None}
    return {
        "stage2": {**base, "fg_psnr": 24.0, "psnr": 26.0, "fg_iou": 0.9, "temporal_error": 6.0},
        "stage1": {**base, "fg_psnr": 24.2, "psnr": 26.0, "fg_iou": 0.9, "temporal_error": 10.0},
        "stage2_zero_embedding": {**base, "fg_psnr": 20.0, "psnr": 24.0, "fg_iou": 0.8, "temporal_error": 7.0},
        "reference_repeated": {**base, "fg_psnr": 19.5, "psnr": 24.9, "fg_iou": 0.6, "temporal_error": 12.0},
        "vae_reconstruction": {**base, "fg_psnr": 30.0, "psnr": 32.0, "fg_iou": 0.95, "temporal_error": 2.0},
    }


def test_targets_pass_and_each_one_can_fail():
    targets = q.check_targets(passing_methods())
    assert [t["name"] for t in targets] == list(q.TARGET_NAMES)
    assert all(t["passed"] for t in targets)
    values = {t["name"]: t["value"] for t in targets}
    assert values == pytest.approx({"fg_psnr_over_reference": 4.5, "psnr_over_reference": 1.1, "fg_iou": 0.9,
                                    "temporal_error_ratio": 0.6, "fg_psnr_vs_stage1": -0.2})
    changes = {
        "fg_psnr_over_reference": ("reference_repeated", "fg_psnr", 20.5),
        "psnr_over_reference": ("reference_repeated", "psnr", 25.5),
        "fg_iou": ("stage2", "fg_iou", 0.84),
        "temporal_error_ratio": ("stage1", "temporal_error", 8.0),
        "fg_psnr_vs_stage1": ("stage1", "fg_psnr", 24.6),
    }
    for name, (method, score, value) in changes.items():
        methods = passing_methods()
        methods[method][score] = value
        failed = [t["name"] for t in q.check_targets(methods) if not t["passed"]]
        assert failed == [name]


def write_result(path: Path, methods: dict) -> Path:
    path.write_text(json.dumps({"format": q.FORMAT, "version": q.VERSION, "methods": methods, "passed": True}))
    return path


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)


def test_check_exit_codes_on_a_constructed_json(tmp_path):
    good = write_result(tmp_path / "good.json", passing_methods())
    missed = passing_methods()
    missed["stage2"]["fg_iou"] = 0.5
    bad = write_result(tmp_path / "bad.json", missed)  # its own "passed": true is not trusted
    broken = passing_methods()
    del broken["stage1"]
    broken_path = write_result(tmp_path / "broken.json", broken)

    result = run_bench("--from-json", str(good), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("PASS") == len(q.TARGETS)
    result = run_bench("--from-json", str(bad), "--check")
    assert result.returncode == 1 and "MISS  fg_iou" in result.stdout
    assert run_bench("--from-json", str(bad)).returncode == 0  # without --check the figures are only printed
    result = run_bench("--from-json", str(broken_path), "--check")
    assert result.returncode == 2 and "methods.stage1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# -- user errors ---------------------------------------------------------------------------------

def test_missing_builtin_model_is_one_line_naming_the_folder(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "models" / "champ" / "builtin"
    monkeypatch.setattr(q, "BUILTIN_MODEL_DIR", missing)
    bench = load_bench()
    assert bench.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "built-in model" in err
    assert bench.main(["--weights", str(tmp_path / "elsewhere")]) == 2
    assert str(tmp_path / "elsewhere") in capsys.readouterr().err


def test_sequence_seeds_below_the_reserved_range_are_refused(tiny_weights, capsys):
    bench = load_bench()
    code = bench.main(["--weights", str(tiny_weights), "--sequence-seed", str(q.HELD_OUT_SEED - 1)])
    assert code == 2
    assert f"{q.HELD_OUT_SEED}" in capsys.readouterr().err


def test_defaults_are_the_shipped_templates_sampler_settings():
    settings = q.QualitySettings()
    found = 0
    for path in sorted((REPO / "example_workflows").glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] == "ChampSampler":
                seed, _, steps, cfg, solver, beta_schedule = node["widgets_values"][:6]
                assert (seed, steps, cfg, solver, beta_schedule) == (
                    settings.seed, settings.steps, settings.guidance_scale, settings.solver, settings.beta_schedule)
                found += 1
    assert found >= 2  # both animation templates


# -- end to end on tiny weights -----------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny networks and renders gain nothing from threads; on a shared, busy CPU extra threads
    only wait for each other (20x slower measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """The parity fixture's tiny networks (stage 2: with motion modules) in the released layout."""
    root = tmp_path_factory.mktemp("quality-weights") / "weights"
    champ = root / "champ"
    champ.mkdir(parents=True)
    for name in ("denoising_unet", "motion_module", "reference_unet"):
        shutil.copy(FIXTURE / "unet" / f"{name}.safetensors", champ)
    for path in PIPE.glob("guidance_encoder_*.safetensors"):
        shutil.copy(path, champ)
    shutil.copytree(PIPE / "image_encoder", root / "image_encoder")
    shutil.copytree(PIPE / "vae", root / "sd-vae-ft-mse")
    return root


@pytest.fixture(scope="module")
def held_out_folder(tmp_path_factory) -> Path:
    """Two tiny held-out people written by synth-data's own writer (the CHAMP_QUALITY_DIR route)."""
    from champ_core.train.synth import generate_dataset

    root = tmp_path_factory.mktemp("quality-data") / "held_out"
    generate_dataset(root, q.held_out_options(2, FRAMES, WIDTH, HEIGHT))
    return root


def test_stage1_baseline_is_the_2d_networks_and_a_stage1_folder_is_refused_as_the_model(tiny_weights, tmp_path):
    import torch

    run = tmp_path / "run"
    final = run / "weights" / "final"  # a stage-1 training run's layout
    final.mkdir(parents=True)
    for path in (tiny_weights / "champ").glob("*.safetensors"):
        if not path.name.startswith("motion_module"):
            shutil.copy(path, final)
    (final / "champ_weights.json").write_text(json.dumps({"stage": 1, "motion_modules": False}))
    models = q.load_models(q.QualitySettings(weights=tiny_weights, stage1_weights=run))
    assert models.stage1_dir == final
    stage1, stage2 = models.stage1.models.denoising_unet, models.stage2.models.denoising_unet
    assert stage2.has_motion_modules and not stage1.has_motion_modules
    own = stage2.state_dict()
    weights = stage1.state_dict()
    assert weights and all(torch.equal(tensor, own[name]) for name, tensor in weights.items())
    default = q.load_models(q.QualitySettings(weights=tiny_weights))  # the same networks without motion modules
    assert default.stage1_dir == tiny_weights / "champ"
    assert all(torch.equal(t, weights[n]) for n, t in default.stage1.models.denoising_unet.state_dict().items())
    shutil.copytree(tiny_weights / "image_encoder", run / "weights" / "image_encoder")
    shutil.copytree(tiny_weights / "sd-vae-ft-mse", run / "weights" / "sd-vae-ft-mse")
    with pytest.raises(q.QualityError, match="stage-1 weights"):
        q.load_models(q.QualitySettings(weights=final))


def test_generated_sequences_equal_the_synth_data_folder(held_out_folder):
    in_memory = q.generated_sequences(1, FRAMES, WIDTH, HEIGHT)
    from_folder = q.folder_sequences(held_out_folder, FRAMES, WIDTH, HEIGHT)
    assert [s.name for s in from_folder] == ["synth_00000", "synth_00001"]
    a, b = in_memory[0], from_folder[0]
    assert a.images.shape == (FRAMES, HEIGHT, WIDTH, 3) and a.masks.shape == (FRAMES, HEIGHT, WIDTH)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.background, b.background)
    assert sorted(a.layers) == sorted(b.layers)
    for kind in a.layers:
        np.testing.assert_array_equal(a.layers[kind], b.layers[kind])
    assert a.masks.any() and (a.images != a.background).any()


def test_bench_end_to_end_on_tiny_weights(tiny_weights, held_out_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(q.QUALITY_DIR_ENV, str(held_out_folder))
    out, frames_dir = tmp_path / "quality.json", tmp_path / "frames"
    bench = load_bench()
    code = bench.main(["--weights", str(tiny_weights), "--size", f"{WIDTH}x{HEIGHT}", "--frames", str(FRAMES),
                       "--steps", "2", "--device", "cpu", "--threads", "1", "--json", str(out), "--save-frames", str(frames_dir)])
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads(out.read_text())
    assert tuple(results) == q.RESULT_KEYS
    assert tuple(results["methods"]) == q.METHODS
    assert results["sequences"]["source"] == "folder" and results["sequences"]["videos"] == ["synth_00000", "synth_00001"]
    for method, scores in results["methods"].items():
        assert tuple(scores) == q.SCORES
        for name, value in scores.items():
            if name == "lpips" and value is None:  # LPIPS's VGG16 file is not shipped
                continue
            assert math.isfinite(value), (method, name)
    for video in results["per_video"].values():
        assert tuple(video) == q.METHODS
    assert [t["name"] for t in results["targets"]] == list(q.TARGET_NAMES)
    assert results["passed"] == all(t["passed"] for t in results["targets"])
    assert all(v > 0 for v in results["speed"].values())
    # the repeated reference is frame 0 itself; random tiny networks are far from the truth, and the
    # VAE's reconstruction beats them
    ref = results["methods"]["reference_repeated"]
    assert ref["fg_psnr"] < 100 and results["methods"]["vae_reconstruction"]["psnr"] > results["methods"]["stage2"]["psnr"]
    # stage 1 ran frame by frame (other numbers than stage 2 from the same noise), and zeroing the
    # image embedding changed the result
    s2, s1, zero = (results["methods"][m] for m in ("stage2", "stage1", "stage2_zero_embedding"))
    assert s1["temporal_error"] != s2["temporal_error"] and zero["psnr"] != s2["psnr"]
    assert "fg_iou" in printed and "s/frame" in printed
    for video in ("synth_00000", "synth_00001"):
        for method in ("ground_truth", *q.METHODS):
            assert len(list((frames_dir / video / method).glob("*.png"))) == FRAMES
        assert (frames_dir / video / "strip.png").is_file()
    # --check on this result: exit 0 or 1 as its targets say
    assert bench.main(["--from-json", str(out), "--check"]) == (0 if results["passed"] else 1)


def load_noise_sharing_bench():
    return load_bench(REPO / "bench" / "noise_sharing.py")


def test_shared_noise_repeats_frame_zero_over_every_frame():
    import torch

    bench = load_noise_sharing_bench()
    latents = torch.randn(1, 4, 5, 3, 2, generator=torch.Generator().manual_seed(0))
    shared = bench.shared_noise(latents)
    assert shared.shape == latents.shape and shared.is_contiguous()
    for t in range(latents.shape[2]):
        assert torch.equal(shared[:, :, t], latents[:, :, 0])


def test_noise_sharing_bench_end_to_end_on_tiny_weights(tiny_weights, held_out_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(q.QUALITY_DIR_ENV, str(held_out_folder))
    bench = load_noise_sharing_bench()
    assert bench.main(["--check"]) == 2  # the quality bench's own flags are refused in one line
    assert "belongs to bench/quality.py" in capsys.readouterr().err
    out = tmp_path / "noise.json"
    code = bench.main(["--weights", str(tiny_weights), "--size", f"{WIDTH}x{HEIGHT}", "--frames", str(FRAMES),
                       "--steps", "2", "--device", "cpu", "--threads", "1", "--json", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert tuple(results["runs"]) == bench.RUNS and results["videos"] == ["synth_00000", "synth_00001"]
    for run, scores in results["runs"].items():
        assert tuple(scores) == bench.SCORES and all(math.isfinite(v) for v in scores.values()), run
    runs = results["runs"]
    # the shared noise is another start than the independent one: other frames, other errors
    assert runs["stage1_shared"]["temporal_error"] != runs["stage1_independent"]["temporal_error"]
    for kind in ("independent", "shared"):
        expected = runs[f"stage2_{kind}"]["temporal_error"] / runs[f"stage1_{kind}"]["temporal_error"]
        assert results["temporal_error_ratio"][kind] == pytest.approx(expected)
    assert "shared noise" in capsys.readouterr().out
