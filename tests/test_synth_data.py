"""`synth-data`: generated people in the training layout, fixed by (seed, video index)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from champ_core.cli import main
from champ_core.train.people import generate_video
from champ_core.train.synth import SynthError, SynthOptions

SMALL = SynthOptions(videos=3, frames=6, size=64, seed=7)


@pytest.fixture(scope="module")
def videos():
    return [generate_video(SMALL, i) for i in range(SMALL.videos)]


def test_video_depends_only_on_seed_and_index(videos):
    again = generate_video(SynthOptions(videos=9, frames=6, size=64, seed=7), 1)
    assert np.array_equal(again.images, videos[1].images)
    for name, layer in videos[1].layers.items():
        assert np.array_equal(again.layers[name], layer), name
    assert not np.array_equal(videos[0].images, videos[1].images)
    other_seed = generate_video(SynthOptions(videos=3, frames=6, size=64, seed=8), 1)
    assert not np.array_equal(other_seed.images, videos[1].images)


def test_person_pixels_are_the_mask(videos):
    for video in videos:
        person = video.layers["mask"] > 0
        assert person.any(axis=(1, 2)).all()
        # outside the mask the frame is exactly the empty background
        assert np.array_equal(video.images[~person], np.broadcast_to(video.background, video.images.shape)[~person])
        # inside it the person is drawn (almost nowhere equal to the background by chance)
        inside = np.abs(video.images.astype(int) - video.background[None].astype(int)).max(-1)[person]
        assert (inside > 0).mean() > 0.97


def test_layers_and_boxes_have_the_training_shapes(videos):
    s = SMALL.size
    for video in videos:
        assert video.images.shape == (SMALL.frames, s, s, 3) and video.images.dtype == np.uint8
        for name in ("depth", "normal", "semantic_map", "dwpose"):
            assert video.layers[name].shape == (SMALL.frames, s, s, 3), name
        assert video.layers["mask"].shape == (SMALL.frames, s, s)
        mask = video.layers["mask"] > 0
        for t, (x0, y0, x1, y1) in enumerate(video.bboxes):
            rows, cols = np.flatnonzero(mask[t].any(1)), np.flatnonzero(mask[t].any(0))
            assert (x0, y0, x1, y1) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        height = (video.bboxes[:, 3] - video.bboxes[:, 1]).max() / s
        assert 0.3 <= height <= 1.0


def test_random_motions_only():
    video = generate_video(SynthOptions(videos=1, frames=4, size=64, seed=3, motions="random"), 0)
    assert video.description["motion"] == "random"
    builtin = generate_video(SynthOptions(videos=1, frames=4, size=64, seed=3, motions="builtin"), 0)
    assert builtin.description["motion"] in ("walk", "wave", "turn", "dance", "idle")


def test_cli_writes_a_layout_the_schema_check_accepts(tmp_path, capsys):
    from champ_core.train.layout import check_dataset

    out = tmp_path / "synth"
    argv = ["synth-data", str(out), "--videos", "2", "--frames", "5", "--size", "64", "--seed", "4"]
    assert main(argv) == 0
    summary = check_dataset(out, bbox_crop=True)
    assert summary.videos == 2 and summary.frames == 10
    video = out / "synth_00001"
    for name in ("images", "depth", "normal", "semantic_map", "dwpose", "mask"):
        assert len(list((video / name).glob("*.png"))) == 5, name
    assert len(json.loads((video / "human_bbox.json").read_text())) == 5
    assert (video / "background.png").is_file() and (video / "motion.npz").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left
    # a second run keeps the finished videos; different options on the same OUT are refused
    before = (video / "images" / "0001.png").stat().st_mtime_ns
    assert main(argv) == 0
    assert (video / "images" / "0001.png").stat().st_mtime_ns == before
    capsys.readouterr()
    assert main(["synth-data", str(out), "--videos", "2", "--frames", "6", "--size", "64", "--seed", "4"]) == 2
    assert "was not generated with these options" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "60"], "--size must be a multiple of 8"),
        (["--frames", "1"], "--frames must be at least 2"),
        (["--videos", "0"], "--videos must be at least 1"),
        (["--fps", "0"], "--fps"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, args, message):
    assert main(["synth-data", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_options_validate():
    with pytest.raises(SynthError, match="--motions"):
        SynthOptions(motions="dance").validate()
