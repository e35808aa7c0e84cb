"""`python -m champ_core prepare`: videos rendered from built-in motions -> the training layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from champ_core.body.keypoints import openpose18_from_body, project
from champ_core.body.model import open_body_model
from champ_core.body.motion import Motion
from champ_core.cli import main
from champ_core.guidance import GUIDANCE_TYPES
from champ_core.train.layout import check_dataset, find_videos
from champ_core.train.prepare import DONE_FILE, driving_video_from_motion
from champ_core.video import write_video

SECONDS, FPS, SIZE = 1.4, 15.0, 256


@pytest.fixture(scope="module")
def driving(tmp_path_factory):
    """Two driving videos made from built-in motions (mp4 and a frame folder) and their keypoints;
    plus a corrupt mp4 that sorts second."""
    from PIL import Image

    root = tmp_path_factory.mktemp("driving")
    videos, keypoints = root / "videos", root / "keypoints"
    videos.mkdir()
    keypoints.mkdir()
    made = {}
    for name, motion in (("a_dance", "dance"), ("c_wave", "wave")):
        frames, kp, _ = driving_video_from_motion(motion, seconds=SECONDS, fps=FPS, width=SIZE, height=SIZE)
        made[name] = (frames, kp)
        (keypoints / f"{name}.json").write_text(json.dumps(kp))
    write_video(videos / "a_dance.mp4", made["a_dance"][0], FPS)
    folder = videos / "c_wave"
    folder.mkdir()
    for i, frame in enumerate(made["c_wave"][0][:12]):  # a frame folder of 12 frames, numbered from 1
        Image.fromarray(frame).save(folder / f"{i + 1}.png")
    (keypoints / "c_wave.json").write_text(json.dumps(made["c_wave"][1][:12]))
    (videos / "b_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 4000)
    (keypoints / "b_broken.json").write_text(json.dumps(made["a_dance"][1]))
    return videos, keypoints, made


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def test_prepare_with_keypoints_layout_motion_rerun_and_corrupt_video(driving, tmp_path, capsys):
    videos, keypoints, made = driving
    out = tmp_path / "out"
    assert main(["prepare", str(videos), str(out), "--keypoints", str(keypoints)]) == 1
    captured = capsys.readouterr()
    assert "b_broken: skipped: cannot decode the video" in captured.out + captured.err
    assert "2 prepared" in captured.out and "1 failed" in captured.out
    # the layout the training schema check accepts; the broken video left nothing behind
    summary = check_dataset(out, GUIDANCE_TYPES, bbox_crop=True)
    assert summary.videos == 2 and sorted(v.name for v in find_videos(out)) == ["a_dance", "c_wave"]
    assert _leftovers(out) == [] and not (out / "b_broken").exists()
    body = open_body_model()
    for name, count in (("a_dance", int(SECONDS * FPS)), ("c_wave", 12)):
        video = out / name
        assert (video / DONE_FILE).is_file()
        for layer in ("images", *GUIDANCE_TYPES, "mask"):
            assert len(list((video / layer).glob("*.png"))) == count, (name, layer)
        boxes = json.loads((video / "human_bbox.json").read_text())
        assert len(boxes) == count and all(0 <= b[0] < b[2] <= SIZE and 0 <= b[1] < b[3] <= SIZE for b in boxes)
        # motion.npz re-renders onto the source keypoints
        motion = Motion.load(video / "motion.npz")
        assert motion.num_frames == count and (motion.camera.width, motion.camera.height) == (SIZE, SIZE)
        posed = motion.pose(body)
        uv = project(openpose18_from_body(posed.vertices.numpy(), posed.joints.numpy()).astype(np.float64), motion.camera)
        source = np.array([f["people"][0]["pose_keypoints_2d"] for f in made[name][1][:count]]).reshape(count, 18, 3)
        seen = source[..., 2] > 0
        err = np.linalg.norm(uv - source[..., :2], axis=-1)[seen]
        assert np.median(err) <= 3.0, (name, np.median(err))
        assert np.percentile(err, 90) <= 6.0, (name, np.percentile(err, 90))
        # the skeleton layer is drawn where the body is
        from PIL import Image

        skeleton = np.asarray(Image.open(video / "dwpose" / "0001.png"))
        mask = np.asarray(Image.open(video / "mask" / "0001.png"))
        assert skeleton.any() and (skeleton.max(-1) > 0)[mask > 0].mean() > 0.05
    # a rerun skips the finished videos (their files untouched) and again reports the broken one
    stamp = (out / "a_dance" / "images" / "0001.png").stat().st_mtime_ns
    assert main(["prepare", str(videos), str(out), "--keypoints", str(keypoints)]) == 1
    captured = capsys.readouterr()
    assert "a_dance: already prepared" in captured.out + captured.err and "0 prepared" in captured.out
    assert (out / "a_dance" / "images" / "0001.png").stat().st_mtime_ns == stamp
    # only finished videos: exit 0
    assert main(["prepare", str(videos / "a_dance.mp4"), str(out), "--keypoints", str(keypoints)]) == 0


def test_unfinished_video_folder_is_redone(driving, tmp_path, capsys):
    videos, keypoints, _ = driving
    out = tmp_path / "out"
    (out / "c_wave" / "images").mkdir(parents=True)  # e.g. killed after the rename, before .done
    (out / "c_wave" / "images" / "stale.png").write_bytes(b"x")
    assert main(["prepare", str(videos / "c_wave"), str(out), "--keypoints", str(keypoints)]) == 0
    assert not (out / "c_wave" / "images" / "stale.png").exists() and (out / "c_wave" / DONE_FILE).is_file()
    check_dataset(out, GUIDANCE_TYPES)


def test_named_errors_and_nothing_half_written(driving, tmp_path, capsys, monkeypatch):
    videos, keypoints, _ = driving
    monkeypatch.delenv("CHAMP_POSE_MODELS", raising=False)
    out = tmp_path / "out"
    # missing model files: one line naming the files and every folder searched, nothing written
    empty = tmp_path / "no_models"
    empty.mkdir()
    assert main(["prepare", str(videos / "c_wave"), str(out), "--pose-models", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "yolox_l.onnx" in err[0] and "dw-ll_ucoco_384.onnx" in err[0] and str(empty) in err[0]
    assert not out.exists()
    # an unwritable OUT (a file, or below a file)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker, blocker / "sub"):
        assert main(["prepare", str(videos), str(target), "--keypoints", str(keypoints)]) == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("error: OUT") and str(blocker) in line and "\n" not in line
    # missing inputs
    assert main(["prepare", str(tmp_path / "nothing"), str(out), "--keypoints", str(keypoints)]) == 2
    assert "VIDEOS" in capsys.readouterr().err
    assert main(["prepare", str(videos), str(out), "--keypoints", str(tmp_path / "nope")]) == 2
    assert "--keypoints" in capsys.readouterr().err
    # keypoints for a different number of frames: named, skipped
    bad = tmp_path / "bad_kp"
    bad.mkdir()
    (bad / "c_wave.json").write_text(json.dumps(json.loads((keypoints / "c_wave.json").read_text())[:5]))
    assert main(["prepare", str(videos / "c_wave"), str(out), "--keypoints", str(bad)]) == 1
    text = capsys.readouterr().out
    assert "c_wave: skipped: c_wave.json: 5 keypoint frames for 12 video frames" in text
    assert not (out / "c_wave").exists() and _leftovers(out) == []


def test_prepare_with_dwpose_on_random_graphs(driving, tmp_path, capsys):
    """Detection plumbing end to end: the random networks' planted box and keypoints (the driving
    video's first frame) come back as the fitted body's skeleton, plus detected hands."""
    pytest.importorskip("onnx")
    from pose_graphs import make_dwpose, make_yolox, wholebody_points, yolox_rows

    from champ_core.pose import processing as P

    videos, _, made = driving
    frames, kp = made["c_wave"]
    first = kp[0]["people"][0]
    points = wholebody_points(first)
    x0, y0 = points.min(0) - 4
    x1, y1 = points.max(0) + 4
    models = tmp_path / "models"
    models.mkdir()
    ratio = 640 / SIZE  # letterbox scale of a 256 x 256 frame
    make_yolox(models / "yolox_l.onnx", planted=yolox_rows([((x0 + x1) / 2 * ratio, (y0 + y1) / 2 * ratio,
                                                             (x1 - x0) * ratio, (y1 - y0) * ratio, 0.95)]))
    # the crop the pipeline will take of that box (the detector's tiny random part moves it < 1 px)
    centre, scale = P.box_center_scale(np.array([x0, y0, x1, y1]))
    make_dwpose(models / "dw-ll_ucoco_384.onnx", points_crop=P.image_to_crop(points, centre, scale))
    out = tmp_path / "out"
    assert main(["prepare", str(videos / "c_wave"), str(out), "--pose-models", str(models)]) == 0
    check_dataset(out, GUIDANCE_TYPES, bbox_crop=True)
    motion = Motion.load(out / "c_wave" / "motion.npz")
    body = open_body_model()
    posed = motion.pose(body)
    uv = project(openpose18_from_body(posed.vertices.numpy(), posed.joints.numpy()).astype(np.float64), motion.camera)
    target = np.asarray(first["pose_keypoints_2d"]).reshape(18, 3)
    err = np.linalg.norm(uv - target[None, :, :2], axis=-1)[:, target[:, 2] > 0]
    assert np.median(err) <= 4.0  # SimCC bins are ~0.3 px here; the rest is the fit
    info = json.loads((out / "c_wave" / DONE_FILE).read_text())
    assert info["keypoints"] == "dwpose" and info["frames"] == 12


def test_video_with_nobody_is_skipped(driving, tmp_path, capsys):
    pytest.importorskip("onnx")
    from pose_graphs import make_dwpose, make_yolox

    videos, _, _ = driving
    models = tmp_path / "models"
    models.mkdir()
    make_yolox(models / "yolox_l.onnx")  # scores ~0 everywhere: nobody
    make_dwpose(models / "dw-ll_ucoco_384.onnx")
    out = tmp_path / "out"
    assert main(["prepare", str(videos / "c_wave"), str(out), "--pose-models", str(models)]) == 1
    assert "c_wave: skipped: no person detected in any of the 12 frames" in capsys.readouterr().out
    assert not (out / "c_wave").exists() and _leftovers(out) == []


def test_person_rank_means_the_same_for_keypoint_files():
    from champ_core.train.prepare import PrepareError, _index_of_rank

    def person(size):
        return {"pose_keypoints_2d": [10, 10, 1, 10 + size, 10 + size, 1] + [0] * 48}

    frames = [{"people": []}, {"people": [person(5), person(80), person(30)]}]
    assert [_index_of_rank(frames, r) for r in (0, 1, 2)] == [1, 2, 0]
    with pytest.raises(PrepareError, match="--person 3: frame 1 .* has 3 people"):
        _index_of_rank(frames, 3)
