"""The small VAE trainer: diffusers AutoencoderKL on a data set's frames, latent scale measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from champ_core.train.config import ConfigError
from champ_core.train.vae import VAETrainConfig, load_vae_config, train_vae


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory):
    from champ_core.train.layout import VideoLayoutWriter

    root = tmp_path_factory.mktemp("vae-data")
    rng = np.random.default_rng(0)
    for v in range(2):
        # smooth, structured frames (a blob on a gradient) an autoencoder can learn quickly
        yy, xx = np.mgrid[0:32, 0:32] / 32.0
        images = []
        for _ in range(4):
            cx, cy = rng.uniform(0.3, 0.7, 2)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
            image = np.stack([xx, yy * 0.5 + blob * 0.5, blob], -1)
            images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
        images = np.stack(images)
        mask = np.full(images.shape[:3], 255, np.uint8)
        with VideoLayoutWriter(root / f"video{v}") as writer:
            writer.add_frames(images, layers={"mask": mask})
    return root


def test_train_vae_learns_and_writes_a_diffusers_folder(frames_root, tmp_path):
    from diffusers import AutoencoderKL

    config = VAETrainConfig(video_folder=str(frames_root), output_dir=str(tmp_path / "out"), image_size=32,
                            block_out_channels=[8, 16], norm_num_groups=4, batch_size=4, max_train_steps=40,
                            learning_rate=2e-3, lr_warmup_steps=1, log_steps=1, scale_samples=8, seed=1)
    folder = train_vae(config)
    log = [json.loads(line) for line in (tmp_path / "out" / "vae_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 41))
    first = np.mean([e["reconstruction"] for e in log[:10]])
    last = np.mean([e["reconstruction"] for e in log[-10:]])
    assert last < 0.6 * first
    vae = AutoencoderKL.from_pretrained(str(folder))
    training = json.loads((folder / "training.json").read_text())
    assert vae.config.scaling_factor == pytest.approx(training["scaling_factor"])
    # the stored scale makes the data's latents unit-variance (measured on other draws here)
    from champ_core.train.vae import FramePool

    pool = FramePool(frames_root, 32)
    with torch.no_grad():
        latents = vae.encode(pool.batch(np.random.default_rng(5), 16)).latent_dist.mean * vae.config.scaling_factor
    assert 0.5 < float(latents.std()) < 2.0
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_vae_config_is_strict(tmp_path):
    path = tmp_path / "vae.yaml"
    path.write_text("video_folder: x\noutput_dir: y\nimage_size: 64\nbogus: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        load_vae_config(path)
    path.write_text("video_folder: x\noutput_dir: y\nimage_size: 60\n")
    with pytest.raises(ConfigError, match="multiple of 8"):
        load_vae_config(path)
    path.write_text("image_size: 64\n")
    with pytest.raises(ConfigError, match="set video_folder"):
        load_vae_config(path)
    config = load_vae_config(path, ["video_folder=d", "output_dir=o", "max_train_steps=7"])
    assert config.max_train_steps == 7 and config.video_folder == "d"
    path.write_text("video_folder: x\noutput_dir: y\nlr_schedule: cosyne\n")
    with pytest.raises(ConfigError, match="lr_schedule 'cosyne' is not one of constant, cosine"):
        load_vae_config(path)


def test_vae_learning_rate_schedules():
    from champ_core.train.vae import lr_factor

    constant = VAETrainConfig(max_train_steps=100, lr_warmup_steps=10)
    cosine = VAETrainConfig(max_train_steps=100, lr_warmup_steps=10, lr_schedule="cosine")
    for config in (constant, cosine):  # the same linear warm-up
        assert [lr_factor(s, config) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert [lr_factor(s, constant) for s in (10, 50, 99)] == [1.0, 1.0, 1.0]
    # cosine: from 1 after the warm-up down to 0 at the last step, halfway at the middle
    assert lr_factor(10, cosine) == pytest.approx(0.5 * (1 + np.cos(np.pi / 90)))
    assert lr_factor(54, cosine) == pytest.approx(0.5)
    assert lr_factor(99, cosine) == pytest.approx(0.0, abs=1e-12)
    factors = [lr_factor(s, cosine) for s in range(10, 100)]
    assert all(a > b for a, b in zip(factors, factors[1:]))
