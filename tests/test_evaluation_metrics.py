"""Evaluation definitions without networks: pixel metrics against known answers, the Frechet distance
against scipy's sqrtm route, clip segmentation, GIF quantisation, pooling and missing backbones."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from champ_core.evaluation import EvaluationError, Evaluator, evaluate_frames
from champ_core.evaluation.clips import clip_starts, gif_palette, segments
from champ_core.evaluation.frechet import frechet_distance, frechet_distance_features, gaussian_stats
from champ_core.evaluation.pixel import l1_frame, psnr_frame, psnr_legacy_frame, ssim_frame


def noisy_pair(seed=0, shape=(48, 64, 3), sigma=12.0):
    """A smooth 'image' and a noisy copy: typical generated-vs-real frames."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    base = 128 + 90 * np.sin(x[..., None] / 7.0 + np.arange(3)) * np.cos(y[..., None] / 9.0)
    gt = np.clip(base, 0, 255).astype(np.uint8)
    pred = np.clip(base + rng.normal(0, sigma, shape), 0, 255).astype(np.uint8)
    return pred, gt


def test_psnr_matches_scikit_image_on_random_frames():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(1)
    for _ in range(5):
        a = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
        b = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
        assert psnr_frame(a, b) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=255), abs=1e-10)


def test_ssim_matches_scikit_image_on_opencv_gray():
    import cv2
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    pred, gt = noisy_pair(3)
    for a, b in ((pred, gt), (rng.integers(0, 256, gt.shape, dtype=np.uint8), gt)):
        # DisCo read frames with cv2.imread (BGR) and converted BGR->GRAY
        gray_a = cv2.cvtColor(np.ascontiguousarray(a[..., ::-1]), cv2.COLOR_BGR2GRAY)
        gray_b = cv2.cvtColor(np.ascontiguousarray(b[..., ::-1]), cv2.COLOR_BGR2GRAY)
        expected = structural_similarity(gray_a, gray_b)
        assert ssim_frame(a, b) == pytest.approx(expected, abs=1e-12)
    # the gray image weighs R, G, B as 0.299, 0.587, 0.114: swapping R and B changes it
    assert ssim_frame(pred, gt) != pytest.approx(ssim_frame(pred[..., ::-1].copy(), gt), abs=1e-6)


def legacy_psnr_by_hand(pred, gt, wrap_square=True):
    """DisCo's psnr_eval on cv2 uint8 arrays, written out element by element."""
    a, b = pred.astype(np.int64).ravel(), gt.astype(np.int64).ravel()
    diff = (a - b) % 256
    square = (diff * diff) % 256 if wrap_square else diff * diff
    mse = square.sum() / square.size
    return 100.0 if mse == 0 else 20 * math.log10(255.0 / math.sqrt(mse))


def test_psnr_legacy_wraps_difference_and_square():
    pred, gt = noisy_pair(4)
    legacy = psnr_legacy_frame(pred, gt)
    assert legacy == pytest.approx(legacy_psnr_by_hand(pred, gt), abs=1e-9)
    corrected = psnr_frame(pred, gt)
    diff_only = legacy_psnr_by_hand(pred, gt, wrap_square=False)
    # typical noisy frames: the published figure sits several dB above the float one ...
    assert legacy - corrected > 3.0
    # ... and a reading that wraps only the difference lands far lower still
    assert legacy - diff_only > legacy - corrected + 3.0
    assert abs(diff_only - corrected) > 3.0


def test_l1_by_hand_and_identical_frames():
    pred, gt = noisy_pair(5, shape=(6, 5, 3))
    total = 0.0
    for value_p, value_g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        total += abs(value_p - value_g)
    assert l1_frame(pred, gt) == pytest.approx(total / pred.size / (6 * 5), rel=1e-12)
    assert l1_frame(gt, gt) == 0.0
    assert psnr_legacy_frame(gt, gt) == 100.0
    assert psnr_frame(gt, gt) == 100.0
    big = noisy_pair(5)[1]
    assert ssim_frame(big, big) == pytest.approx(1.0)


def test_frechet_distance_matches_scipy_sqrtm_route():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(6)
    a = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64)) * 0.3
    b = rng.normal(size=(400, 64)) @ rng.normal(size=(64, 64)) * 0.3 + 0.2
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    expected = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance_features(a, b) == pytest.approx(expected, rel=1e-8)


def test_small_sets_use_the_feature_route_which_agrees_with_the_covariance_route():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(40, 64)) * 2.0
    b = rng.normal(size=(30, 64)) * 1.5 + 0.3
    by_features = frechet_distance_features(a, b)  # 40, 30 samples <= 64 dimensions
    by_stats = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    assert by_features == pytest.approx(by_stats, rel=1e-6)


def test_frechet_distance_of_identical_sets_is_zero_even_rank_deficient():
    rng = np.random.default_rng(7)
    for count in (3, 20):  # samples of 64-d features: rank-deficient covariances
        features = rng.normal(size=(count, 64)) * 5.0e-3
        trace = np.trace(gaussian_stats(features)[1])
        assert abs(frechet_distance_features(features, features.copy())) <= 1e-9 * trace


def test_clip_starts_and_segments():
    assert clip_starts(15) == []
    assert clip_starts(16) == [0]
    assert clip_starts(20) == [0, 1, 2, 3, 4]
    clip = np.arange(20)[:, None] * np.ones((1, 2))
    parts = segments(clip, 16)
    assert parts.shape == (2, 16, 2)
    assert parts[0, :, 0].tolist() == list(range(16))
    assert parts[1, :, 0].tolist() == [16, 17, 18, 19] + [19] * 12  # last frame repeated
    assert segments(clip[:16], 16).shape == (1, 16, 2)


def test_gif_palette_equals_pillow_gif_round_trip():
    from PIL import Image

    rng = np.random.default_rng(8)
    frames = rng.integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    images = [Image.fromarray(f) for f in frames]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=333, loop=0,
                   optimize=False, disposal=1)  # fmt: skip
    buffer.seek(0)
    decoded = []
    with Image.open(buffer) as gif:
        for index in range(len(frames)):
            gif.seek(index)
            decoded.append(np.asarray(gif.convert("RGB")))
    quantised = gif_palette(frames)
    assert quantised.dtype == np.uint8 and quantised.shape == frames.shape
    assert np.array_equal(quantised[0], decoded[0])
    assert len(np.unique(quantised[0].reshape(-1, 3), axis=0)) <= 256 < len(np.unique(frames[0].reshape(-1, 3), axis=0))


def test_frame_metrics_average_over_all_frames_of_all_videos(tmp_path):
    videos = {}
    for seed, count in ((10, 3), (11, 5)):
        rng = np.random.default_rng(seed)
        gt = rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)
        pred = np.clip(gt.astype(int) + rng.integers(-30, 31, gt.shape), 0, 255).astype(np.uint8)
        videos[f"v{seed}"] = (pred, gt)
    evaluator = Evaluator(metrics=["l1", "psnr", "psnr_legacy", "ssim"], models_dir=tmp_path, device="cpu")
    for name, (pred, gt) in videos.items():
        evaluator.add(name, pred, gt)
    result = evaluator.result()
    for metric, function in (("l1", l1_frame), ("psnr", psnr_frame), ("psnr_legacy", psnr_legacy_frame)):
        per_frame = [function(p, g) for pred, gt in videos.values() for p, g in zip(pred, gt)]
        assert result.values[metric] == pytest.approx(np.mean(per_frame), rel=1e-12)
        assert result.per_frame["v10"][metric] == pytest.approx(per_frame[:3], rel=1e-12)
        assert result.per_video["v11"][metric] == pytest.approx(np.mean(per_frame[3:]), rel=1e-12)
    assert result.counts["ssim"] == 8
    document = result.to_json()
    assert set(document) >= {"metrics", "per_video", "per_frame"}
    assert set(document["metrics"]["psnr_legacy"]) == {"value", "definition", "version"}
    assert "uint8" in document["metrics"]["psnr_legacy"]["definition"]


def test_missing_backbones_warn_by_default_and_fail_when_asked(tmp_path):
    rng = np.random.default_rng(12)
    gt = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    pred = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    result = evaluate_frames(pred, gt, models_dir=tmp_path, device="cpu")
    assert sorted(result.values) == ["l1", "psnr", "psnr_legacy", "ssim"]
    assert len(result.warnings) == 4  # one line per missing file (lpips and lpips_legacy share VGG16)
    vgg = next(w for w in result.warnings if "vgg16-397923af.pth" in w)
    assert "lpips and lpips_legacy" in vgg and str(tmp_path) in vgg
    assert result.errors == []

    result = evaluate_frames(pred, gt, metrics=["psnr", "fvd"], models_dir=tmp_path, device="cpu")
    assert list(result.values) == ["psnr"]
    assert len(result.errors) == 1 and "i3d_pretrained_400.pt" in result.errors[0] and str(tmp_path) in result.errors[0]
    with pytest.raises(EvaluationError, match="i3d_pretrained_400.pt"):
        result.raise_for_errors()


def test_named_errors_for_bad_inputs(tmp_path):
    rng = np.random.default_rng(13)
    gt = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(EvaluationError, match="prediction has 3 frames, ground truth 4"):
        evaluate_frames(gt[:3], gt, metrics=["l1"], models_dir=tmp_path)
    with pytest.raises(EvaluationError, match="16x8"):
        evaluate_frames(gt[:, :8], gt, metrics=["l1"], models_dir=tmp_path)
    with pytest.raises(EvaluationError, match="unknown metric"):
        evaluate_frames(gt, gt, metrics=["psnr_star"], models_dir=tmp_path)
    with pytest.raises(EvaluationError, match="7x7"):
        evaluate_frames(gt[:, :6], gt[:, :6], metrics=["ssim"], models_dir=tmp_path)
    with pytest.raises(EvaluationError, match="uint8"):
        evaluate_frames(gt.astype(np.float32), gt, metrics=["l1"], models_dir=tmp_path)


def test_video_metrics_on_fewer_than_16_frames(tmp_path):
    (tmp_path / "i3d_pretrained_400.pt").write_bytes(b"never loaded: the length check comes first")
    rng = np.random.default_rng(14)
    gt = rng.integers(0, 256, (15, 16, 16, 3), dtype=np.uint8)
    result = evaluate_frames(gt, gt, models_dir=tmp_path, device="cpu", name="clip7")  # default: skipped
    assert "fvd" not in result.values and result.values["psnr_legacy"] == 100.0
    short = [w for w in result.warnings if w.startswith("clip7: 15 frames")]
    assert len(short) == 1 and "fvd" in short[0] and "16" in short[0]
    assert any(w.startswith("fvd: 0 clips") for w in result.warnings) and result.errors == []
    with pytest.raises(EvaluationError, match=r"clip7: 15 frames, but the video metrics \(fvd\) need clips of 16 frames"):
        evaluate_frames(gt, gt, metrics=["psnr", "fvd"], models_dir=tmp_path, device="cpu", name="clip7")


def test_error_outside_person_splits_a_ring_from_the_rest():
    from champ_core.evaluation.foreground import error_outside_person

    truth = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[8:12, 8:12] = True
    frame = truth.copy()
    frame[mask] = 0  # errors inside the person do not count
    frame[7, 8:12] = 125  # 4 of the ring's 2-px pixels, 25 levels off
    frame[6, 8:12] = 124  # 24 levels: not more than the threshold
    frame[0, :10] = 200  # 10 far pixels
    ring, far = error_outside_person(frame, truth, mask, ring=2)
    ring_size = 8 * 8 - 16
    assert ring == pytest.approx(4 / ring_size)
    assert far == pytest.approx(10 / (400 - 64))
    ring, far = error_outside_person(truth, truth, np.zeros((20, 20), bool))
    assert np.isnan(ring) and far == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        error_outside_person(frame, truth, mask[:10])
