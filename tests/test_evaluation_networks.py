"""The learned metrics with their real architectures on fixed random weights, saved by the test in the
published files' formats: strict loading, no network access, and each figure recomputed by hand."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from champ_core.evaluation import BackboneError, evaluate_frames
from champ_core.evaluation.frechet import frechet_distance_features, gaussian_stats

VGG_FILE = "vgg16-397923af.pth"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
RESNET_FILE = "resnet-50-kinetics.pth"
I3D_FILE = "i3d_pretrained_400.pt"


def _kaiming(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Random weights that keep activations alive through deep stacks (default inits fade to ~0)."""
    for sub in module.modules():
        if isinstance(sub, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            fan_in = sub.weight[0].numel()
            with torch.no_grad():
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if sub.bias is not None:
                    sub.bias.copy_(torch.randn(sub.bias.shape, generator=generator) * 0.01)


def _without_counters(state):
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def write_vgg(folder, generator: torch.Generator) -> None:
    """torchvision's VGG16 file: legacy (pre-zip) serialisation, features.* and classifier.* keys. The
    classifier (unused by LPIPS, 120M numbers) is stored as one broadcast value to keep the file small."""
    import torchvision

    with torch.device("meta"):
        vgg = torchvision.models.vgg16(weights=None)
    state = {}
    for name, value in vgg.state_dict().items():
        if name.startswith("features."):
            fan_in = value[0].numel() if name.endswith("weight") else 1
            scale = (2.0 / fan_in) ** 0.5 if name.endswith("weight") else 0.01
            state[name] = torch.randn(value.shape, generator=generator) * scale
        else:
            state[name] = torch.full((1,), 0.01).expand(value.shape)
    torch.save(state, folder / VGG_FILE, _use_new_zipfile_serialization=False)


def write_models(folder) -> None:
    """The four backbone files with random weights, each in its published file's layout."""
    from champ_core.evaluation.i3d import InceptionI3d
    from champ_core.evaluation.loading import build_fid_inception
    from champ_core.evaluation.resnet3d import ResNet3d50

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    write_vgg(folder, generator)
    # pytorch-fid's file: the state dict of its FID Inception (1008-class fc included).
    inception = build_fid_inception()
    _kaiming(inception, generator)
    torch.save(inception.state_dict(), folder / INCEPTION_FILE)
    # Hara et al.'s file: saved from DataParallel (module. prefix) inside a training checkpoint, by a
    # PyTorch older than BatchNorm's num_batches_tracked counters.
    resnet = ResNet3d50()
    _kaiming(resnet, generator)
    weights = {f"module.{k}": v for k, v in _without_counters(resnet.state_dict()).items()}
    checkpoint = {"arch": "resnet-50", "epoch": 200, "state_dict": weights,
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}
    torch.save(checkpoint, folder / RESNET_FILE, _use_new_zipfile_serialization=False)
    # The I3D file: a plain state dict without the counters.
    i3d = InceptionI3d()
    _kaiming(i3d, generator)
    torch.save(_without_counters(i3d.state_dict()), folder / I3D_FILE, _use_new_zipfile_serialization=False)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-models")
    write_models(folder)
    return folder


@pytest.fixture(scope="module")
def frames():
    """17 frames (two 16-frame clips) of a moving pattern and a noisy prediction of them."""
    rng = np.random.default_rng(0)
    t, y, x = np.mgrid[0:17, 0:40, 0:48]
    base = 128 + 100 * np.sin((x[..., None] + 2 * t[..., None]) / 6.0 + np.arange(3)) * np.cos(y[..., None] / 8.0)
    gt = np.clip(base, 0, 255).astype(np.uint8)
    pred = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return pred, gt


def pil_bicubic(frame: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's float resize written out: each channel a Pillow 'F' image, bicubic."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(frame[..., c].astype(np.float32))
                                .resize((size, size), Image.Resampling.BICUBIC)) for c in range(3)], axis=-1)


@pytest.fixture()
def no_network(monkeypatch):
    import socket
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_every_backbone_loads_strictly_without_network(models_dir, no_network):
    from champ_core.evaluation.loading import LOADERS

    for key, filename in (("vgg16", VGG_FILE), ("inception", INCEPTION_FILE), ("resnet3d50", RESNET_FILE),
                          ("i3d", I3D_FILE)):  # fmt: skip
        model = LOADERS[key](models_dir / filename)
        assert not model.training
        assert all(p.device.type == "cpu" for p in model.parameters())


def test_lpips_equals_the_lpips_package_on_both_input_ranges(models_dir, frames, no_network):
    import lpips

    pred, gt = frames[0][:3], frames[1][:3]
    result = evaluate_frames(pred, gt, metrics=["lpips", "lpips_legacy"], models_dir=models_dir, device="cpu")
    # the package's own loading path: its linear heads from the wheel, our VGG16 trunk weights
    reference = lpips.LPIPS(pretrained=True, net="vgg", pnet_rand=True, verbose=False)
    vgg = torch.load(models_dir / VGG_FILE, weights_only=True)
    reference.net.load_state_dict({n: vgg["features." + n.split(".", 1)[1]] for n in reference.net.state_dict()})
    a = torch.from_numpy(pred).permute(0, 3, 1, 2).float() / 255
    b = torch.from_numpy(gt).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        documented = reference(a, b, normalize=True).flatten().numpy()
        legacy = reference(a, b).flatten().numpy()
    assert result.per_frame["video"]["lpips"] == pytest.approx(documented.tolist(), rel=1e-5)
    assert result.per_frame["video"]["lpips_legacy"] == pytest.approx(legacy.tolist(), rel=1e-5)
    assert result.values["lpips"] > 0 and result.values["lpips"] != pytest.approx(result.values["lpips_legacy"])
    same = evaluate_frames(gt, gt, metrics=["lpips"], models_dir=models_dir, device="cpu")
    assert same.values["lpips"] == pytest.approx(0.0, abs=1e-7)


def test_fid_features_are_pytorch_fid_pool3_and_identical_sets_give_zero(models_dir, frames, monkeypatch):
    from pytorch_fid import inception as fid_module

    from champ_core.evaluation.features import inception_features
    from champ_core.evaluation.loading import load_fid_inception

    gt = frames[1][:2]
    model = load_fid_inception(models_dir / INCEPTION_FILE)
    # pytorch-fid's own InceptionV3 block stack over the same network (its download swapped for our file)
    monkeypatch.setattr(fid_module, "fid_inception_v3", lambda: model.inception)
    blocks = fid_module.InceptionV3([3], resize_input=False, normalize_input=False)
    resized = np.stack([np.clip(pil_bicubic(f, 299), 0, 255) for f in gt])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = blocks((x - 128) / 128)[0].flatten(1).double().numpy()
    ours = inception_features(model, gt, torch.device("cpu"))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    assert ours.std(axis=0).mean() > 1e-3  # the random network is not degenerate

    same = evaluate_frames(gt, gt.copy(), metrics=["fid"], models_dir=models_dir, device="cpu")
    trace = np.trace(gaussian_stats(ours)[1])
    assert abs(same.values["fid"]) <= 1e-6 * trace
    assert any("fewer" in w or "< 2048" in w for w in same.warnings)
    different = evaluate_frames(frames[0][:2], gt, metrics=["fid"], models_dir=models_dir, device="cpu")
    assert different.values["fid"] > 1e-3 * trace


def resnet_clip_by_hand(net, frames, start):
    clip = np.stack([pil_bicubic(f, 112) for f in frames[start:start + 16]]) - np.array([114.7748, 107.7354, 99.4750])
    x = torch.from_numpy(clip.astype(np.float32)).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        return net(x)[0].double().numpy()


def _evaluate_keeping_features(pred, gt, metric, models_dir, **kwargs):
    from champ_core.evaluation import Evaluator

    evaluator = Evaluator(metrics=[metric], models_dir=models_dir, device="cpu", **kwargs)
    evaluator.add("video", pred, gt)
    pred_feats, gt_feats = (np.concatenate(side) for side in evaluator._features[metric])
    return evaluator.result(), pred_feats, gt_feats


def test_fid_vid_clips_start_at_every_frame_and_follow_the_definition(models_dir, frames):
    from champ_core.evaluation.loading import load_resnet3d50

    pred, gt = frames
    result, pred_feats, gt_feats = _evaluate_keeping_features(pred, gt, "fid_vid", models_dir)
    assert result.counts["fid_vid"] == 2 and gt_feats.shape == (2, 2048)  # 17 frames: clips at 0 and 1
    net = load_resnet3d50(models_dir / RESNET_FILE)
    by_hand = np.stack([resnet_clip_by_hand(net, gt, s) for s in (0, 1)])
    np.testing.assert_allclose(gt_feats, by_hand, rtol=1e-4, atol=1e-4 * np.abs(by_hand).max())
    assert result.values["fid_vid"] == pytest.approx(frechet_distance_features(pred_feats, gt_feats), rel=1e-9)
    assert result.values["fid_vid"] > 1e-3 * np.trace(gaussian_stats(gt_feats)[1])

    quantised = evaluate_frames(pred, gt, metrics=["fid_vid"], models_dir=models_dir, device="cpu", gif_palette=True)
    assert quantised.values["fid_vid"] != pytest.approx(result.values["fid_vid"], rel=1e-9)
    assert "gif-palette" in quantised.to_json()["metrics"]["fid_vid"]["version"]


def test_clip_features_average_segments_of_longer_clips(models_dir):
    from champ_core.evaluation.features import clip_features
    from champ_core.evaluation.loading import load_resnet3d50

    net = load_resnet3d50(models_dir / RESNET_FILE)
    rng = np.random.default_rng(3)
    inputs = rng.normal(0, 50, (20, 32, 32, 3)).astype(np.float32)
    feats = clip_features(net, inputs, [0], 20, torch.device("cpu"), average_segments=True)
    padded = np.concatenate([inputs[16:20], np.repeat(inputs[19:20], 12, axis=0)])  # last frame repeated
    batch = torch.from_numpy(np.stack([inputs[:16], padded])).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        expected = net(batch).double().numpy().mean(axis=0)
    np.testing.assert_allclose(feats[0], expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_fvd_uses_i3d_logits_of_every_clip(models_dir, frames):
    from champ_core.evaluation.loading import load_i3d

    pred, gt = frames
    result, pred_feats, gt_feats = _evaluate_keeping_features(pred, gt, "fvd", models_dir)
    assert result.counts["fvd"] == 2 and gt_feats.shape == (2, 400)
    net = load_i3d(models_dir / I3D_FILE)
    scaled = np.stack([pil_bicubic(f, 224) for f in gt]) / 127.5 - 1.0
    x = torch.from_numpy(scaled.astype(np.float32)).permute(3, 0, 1, 2)
    with torch.no_grad():
        by_hand = np.stack([net(x[:, s:s + 16][None])[0].double().numpy() for s in (0, 1)])
    np.testing.assert_allclose(gt_feats, by_hand, rtol=1e-4, atol=1e-4 * np.abs(by_hand).max())
    assert result.values["fvd"] == pytest.approx(frechet_distance_features(pred_feats, gt_feats), rel=1e-9)
    assert result.values["fvd"] > 1e-3 * np.trace(gaussian_stats(gt_feats)[1])


class Payload:
    """An object a weights-only load must refuse to rebuild."""


def test_strict_loading_names_the_problem(models_dir, tmp_path):
    from champ_core.evaluation.i3d import InceptionI3d
    from champ_core.evaluation.loading import load_i3d, load_strict

    state = torch.load(models_dir / I3D_FILE, weights_only=True)
    broken = dict(state)
    del broken["Mixed_3b.b0.conv3d.weight"]
    broken["logits.conv3d.bias"] = torch.zeros(401)
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(BackboneError) as info:
        load_strict(InceptionI3d(), broken, "fvd (I3D)", "x.pt")
    message = str(info.value)
    assert "Mixed_3b.b0.conv3d.weight" in message and "extra.weight" in message and "(401,)" in message
    assert "\n" not in message
    half = dict(state)
    half["logits.conv3d.bias"] = half["logits.conv3d.bias"].half()
    with pytest.raises(BackboneError, match="dtype"):
        load_strict(InceptionI3d(), half, "fvd (I3D)", "x.pt")

    unsafe = tmp_path / I3D_FILE
    torch.save({"weights": Payload()}, unsafe)
    with pytest.raises(BackboneError, match="weights-only"):
        load_i3d(unsafe)


def test_a_missing_file_leaves_the_other_metrics(models_dir, frames, tmp_path):
    partial = tmp_path / "eval"
    partial.mkdir()
    shutil.copy(models_dir / VGG_FILE, partial / VGG_FILE)
    pred, gt = frames[0][:2], frames[1][:2]
    result = evaluate_frames(pred, gt, models_dir=partial, device="cpu")
    assert sorted(result.values) == sorted(["l1", "psnr", "psnr_legacy", "ssim", "lpips", "lpips_legacy"])
    assert len(result.warnings) >= 3
    for name in (INCEPTION_FILE, RESNET_FILE, I3D_FILE):
        assert sum(name in w for w in result.warnings) == 1
