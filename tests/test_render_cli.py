"""Motion-folder writing and `python -m champ_core render` end to end (open body, real PyAV, PNGs)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from champ_core.guidance import GUIDANCE_TYPES, MASK, check_frame_lists, layer_frame_names
from champ_core.render.writer import MotionFolderError, write_motion_folder
from champ_core.video import read_video


def _layers(frames=3, h=40, w=56):
    rng = np.random.default_rng(0)
    out = {name: rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8) for name in GUIDANCE_TYPES}
    out["depth"] = np.repeat(out["depth"][..., :1], 3, -1)
    out["dwpose"][:] = 0
    out["dwpose"][:, 5:10, 5:30] = (255, 0, 0)  # a skeleton is mostly black
    out[MASK] = np.zeros((frames, h, w), np.uint8)
    out[MASK][:, 15:35, 20:50] = 255
    return out


def test_writes_reference_layout_with_previews(tmp_path):
    layers = _layers()
    layers["normal"][:, 15:35, 20:50] = (128, 128, 255)
    reference = np.full((80, 100, 3), 200, np.uint8)  # another size: resized for the overlay
    out = write_motion_folder(tmp_path / "motion", layers, ["0007", "0008", "0009"], fps=10, reference=reference)
    names = check_frame_lists(layer_frame_names(out), out)
    assert names == ["0007", "0008", "0009"]
    assert set(layer_frame_names(out)) == {*GUIDANCE_TYPES, MASK}
    depth = Image.open(out / "depth" / "0008.png")
    assert depth.mode == "L" and (np.asarray(depth) == layers["depth"][1, ..., 0]).all()
    assert Image.open(out / "mask" / "0008.png").mode == "L"
    assert (np.asarray(Image.open(out / "normal" / "0009.png")) == layers["normal"][2]).all()
    preview, fps = read_video(out / "preview.mp4")
    assert preview.shape == (3, 40, 56 * 5, 3) and fps == pytest.approx(10)
    overlay, _ = read_video(out / "overlay.mp4")
    assert overlay.shape == (3, 40, 56, 3)
    # outside mask and skeleton the overlay shows the reference
    untouched = overlay[0][16:40, 0:12]  # away from mask and skeleton (allowing for codec blur)
    assert np.abs(untouched.astype(int) - 200).mean() < 4
    inside = overlay[0][20:30, 25:45].astype(int)  # flat normal colour there: blended 70 / 30
    assert np.abs(inside - (0.3 * 200 + 0.7 * np.array([128, 128, 255]))).mean() < 4
    assert not list(tmp_path.glob(".*partial"))


def test_cancel_or_error_leaves_nothing(tmp_path):
    calls = []

    def cancel(done, total):
        calls.append(done)
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_motion_folder(tmp_path / "motion", _layers(frames=7), progress=cancel, chunk_frames=2)
    assert calls == [2, 4] and list(tmp_path.iterdir()) == []
    with pytest.raises(MotionFolderError, match="frames but there are"):
        write_motion_folder(tmp_path / "motion", _layers(), ["0001"])
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_unless_asked(tmp_path):
    target = tmp_path / "motion"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(MotionFolderError, match="not empty"):
        write_motion_folder(target, _layers(), previews=False)
    assert (target / "keep.txt").exists()
    write_motion_folder(target, _layers(), previews=False, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "normal" / "0001.png").exists()


@pytest.fixture(scope="module")
def motion_file(tmp_path_factory):
    from champ_core.body.motion import Motion
    from champ_core.camera import Camera

    frames = 4
    orient = np.tile([[np.pi, 0.0, 0.0]], (frames, 1))
    pose = np.zeros((frames, 23, 3))
    pose[:, 16, 2] = -np.linspace(0.2, 1.2, frames)  # left arm raising
    pose[:, 17, 2] = np.linspace(0.2, 1.2, frames)
    transl = np.tile([[0.0, 0.15, 40.0]], (frames, 1))
    motion = Motion(orient, pose, np.zeros((1, 10)), transl, Camera.hmr2_default(192, 256), fps=12.0,
                    frame_names=["0101", "0102", "0103", "0104"])  # fmt: skip
    return motion.save(tmp_path_factory.mktemp("motion") / "walk.npz")


def test_cli_renders_a_motion_folder(tmp_path, motion_file):
    from skimage.data import astronaut

    from champ_core.cli import main

    reference = tmp_path / "ref.png"
    Image.fromarray(astronaut()).save(reference)
    out = tmp_path / "guidance"
    code = main(["render", "--motion", str(motion_file), "--out", str(out), "--reference", str(reference),
                 "--backend", "torch"])  # fmt: skip
    assert code == 0
    assert check_frame_lists(layer_frame_names(out), out) == ["0101", "0102", "0103", "0104"]
    mask = np.asarray(Image.open(out / "mask" / "0102.png"))
    assert mask.shape == (256, 192) and 1000 < (mask > 0).sum() < 0.5 * mask.size
    skeleton = np.asarray(Image.open(out / "dwpose" / "0102.png"))
    assert skeleton.shape == (256, 192, 3) and skeleton.any(-1).sum() > 200
    # the skeleton lies on the body: most drawn joint pixels are inside the rendered mask
    assert (mask[skeleton.max(-1) == 255] > 0).mean() > 0.6
    overlay, fps = read_video(out / "overlay.mp4")
    assert overlay.shape[0] == 4 and fps == pytest.approx(12.0)
    assert (out / "preview.mp4").stat().st_size > 0


def test_cli_errors_are_user_errors(tmp_path, motion_file, capsys):
    from champ_core.cli import main

    assert main(["render", "--motion", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    existing = tmp_path / "full"
    existing.mkdir()
    (existing / "x").write_text("x")
    assert main(["render", "--motion", str(motion_file), "--out", str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_draws_given_pose_keypoints_scaled_to_the_render(tmp_path, motion_file):
    import json

    from champ_core.cli import main
    from champ_core.render import draw_skeleton

    rng = np.random.default_rng(3)
    frames = []
    body = np.concatenate([rng.uniform(10, 86, (4, 18, 1)), rng.uniform(10, 118, (4, 18, 1)), np.ones((4, 18, 1))], -1)
    hands = np.concatenate([rng.uniform(10, 86, (4, 2, 21, 1)), rng.uniform(10, 118, (4, 2, 21, 1)),
                            np.ones((4, 2, 21, 1))], -1)  # fmt: skip
    for t in range(4):  # a POSE_KEYPOINT list on a 96 x 128 canvas (half the render size)
        person = {"pose_keypoints_2d": body[t].reshape(-1).tolist(),
                  "hand_left_keypoints_2d": hands[t, 0].reshape(-1).tolist(),
                  "hand_right_keypoints_2d": hands[t, 1].reshape(-1).tolist()}  # fmt: skip
        frames.append({"people": [person], "canvas_width": 96, "canvas_height": 128})
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(frames))
    out = tmp_path / "guidance"
    assert main(["render", "--motion", str(motion_file), "--out", str(out), "--keypoints", str(path),
                 "--no-previews", "--backend", "torch"]) == 0  # fmt: skip
    expected = draw_skeleton(body * [2, 2, 1], 192, 256, hands=hands * [2, 2, 1])
    for t, name in enumerate(["0101", "0102", "0103", "0104"]):
        assert (np.asarray(Image.open(out / "dwpose" / f"{name}.png")) == expected[t]).all()
    assert not (out / "preview.mp4").exists()


def test_skeleton_keypoints_from_the_body():
    import torch

    from champ_core.body.keypoints import skeleton_keypoints
    from champ_core.body.model import open_body_model
    from champ_core.camera import Camera

    body = open_body_model()
    with torch.no_grad():
        posed = body(torch.tensor([[np.pi, 0.0, 0.0]]), torch.zeros(1, 23, 3), torch.zeros(1, 10),
                     torch.tensor([[0.0, 0.2, 20.0]]))  # fmt: skip
    camera = Camera.hmr2_default(256, 256)
    keypoints = skeleton_keypoints(posed.vertices, posed.joints, camera)
    assert keypoints.shape == (1, 18, 3) and (keypoints[..., 2] == 1).all()

    def project(p):
        p = p.double().numpy()
        return np.array([camera.fx * p[0] / p[2] + camera.cx, camera.fy * p[1] / p[2] + camera.cy])

    joints, verts = posed.joints[0], posed.vertices[0]
    assert np.allclose(keypoints[0, 1, :2], project(0.5 * (joints[16] + joints[17])), atol=1e-3)  # neck
    assert np.allclose(keypoints[0, 2, :2], project(joints[17]), atol=1e-3)  # right shoulder
    assert np.allclose(keypoints[0, 0, :2], project(verts[332]), atol=1e-3)  # nose: a surface vertex
    # facing the camera, the person's right shoulder is on the image's left
    assert keypoints[0, 2, 0] < keypoints[0, 5, 0]


def test_streaming_writer_appends_chunks(tmp_path):
    from champ_core.render.writer import MotionFolderWriter

    layers = _layers(frames=5)
    with MotionFolderWriter(tmp_path / "motion", fps=5) as writer:
        writer.write({k: v[:2] for k, v in layers.items()}, ["a", "b"])
        writer.write({k: v[2:] for k, v in layers.items()}, ["c", "d", "e"])
    out = tmp_path / "motion"
    assert check_frame_lists(layer_frame_names(out), out) == ["a", "b", "c", "d", "e"]
    assert (np.asarray(Image.open(out / "semantic_map" / "d.png")) == layers["semantic_map"][3]).all()
    assert read_video(out / "preview.mp4")[0].shape[0] == 5
    # chunks must agree; an empty writer is an error; both leave nothing behind
    with pytest.raises(MotionFolderError, match="same layers"):
        with MotionFolderWriter(tmp_path / "bad") as writer:
            writer.write(layers, list("abcde"))
            writer.write({k: v for k, v in layers.items() if k != "depth"}, list("fghij"))
    with pytest.raises(MotionFolderError, match="no frames"):
        with MotionFolderWriter(tmp_path / "empty"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motion"]


def test_iter_guidance_equals_one_call():
    import torch
    from test_render_api import SPHERE

    from champ_core.camera import Camera
    from champ_core.render import iter_guidance, render_guidance

    verts, faces, labels = SPHERE
    frames = np.stack([verts + np.float32([0.05 * i, 0, 3]) for i in range(7)])
    frames[3] = np.nan
    camera = Camera.centred(200.0, 64, 48)
    whole = render_guidance(frames, faces, labels, camera, backend="torch")
    chunks = list(iter_guidance(frames, faces, labels, camera, backend="torch", chunk_frames=3))
    assert [(a, b) for a, b, _ in chunks] == [(0, 3), (3, 6), (6, 7)]
    for layer in whole:
        assert (np.concatenate([maps[layer] for _, _, maps in chunks]) == whole[layer]).all()
    assert isinstance(next(iter_guidance(frames, faces, labels, camera, as_tensors=True))[2]["mask"], torch.Tensor)


def test_cli_streams_long_motions_in_chunks(tmp_path, motion_file, monkeypatch):
    from champ_core.cli import main
    from champ_core.cli import render as render_command

    monkeypatch.setattr(render_command, "CHUNK_FRAMES", 3)  # 4 frames -> chunks of 3 and 1
    out = tmp_path / "guidance"
    assert main(["render", "--motion", str(motion_file), "--out", str(out), "--backend", "torch"]) == 0
    assert check_frame_lists(layer_frame_names(out), out) == ["0101", "0102", "0103", "0104"]
    assert read_video(out / "overlay.mp4")[0].shape[0] == 4
    reference = tmp_path / "whole"
    monkeypatch.setattr(render_command, "CHUNK_FRAMES", 64)
    assert main(["render", "--motion", str(motion_file), "--out", str(reference), "--backend", "torch"]) == 0
    for layer in ("depth", "normal", "semantic_map", "dwpose", "mask"):
        a = np.asarray(Image.open(out / layer / "0104.png"))
        b = np.asarray(Image.open(reference / layer / "0104.png"))
        assert (a == b).all(), layer
