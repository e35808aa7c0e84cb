"""Motion sources (built-in, AMASS, the reference's result files), Motion files, the demo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from champ_core.body.keypoints import openpose18_from_body, project
from champ_core.body.model import axis_angle_to_matrix, open_body_model
from champ_core.body.motion import Motion, MotionError
from champ_core.body.motions import BUILTIN_MOTIONS, MotionSourceError, builtin_motion
from champ_core.body.sources import load_amass, load_hmr2_results, load_smpls_group


@pytest.fixture(scope="module")
def body():
    return open_body_model()


def _upright_in_view(motion, body):
    out = motion.pose(body)
    uv = project(openpose18_from_body(out.vertices, out.joints).numpy().astype(np.float64), motion.camera)
    assert (out.joints[..., 2] > 0).all()
    assert (uv[:, 0, 1] < uv[:, 8, 1]).all()  # nose above the hips in the image
    inside = (uv[..., 0] > 0) & (uv[..., 0] < motion.camera.width) & (uv[..., 1] > 0) & (uv[..., 1] < motion.camera.height)
    assert inside.mean() > 0.9
    return uv


@pytest.mark.parametrize("name", BUILTIN_MOTIONS)
def test_builtin_motions(body, name):
    motion = builtin_motion(name, body, seconds=2, fps=12)
    assert motion.num_frames == 24 and motion.camera.width == 512
    _upright_in_view(motion, body)
    j = motion.pose(body).joints.numpy()
    assert np.abs(np.diff(j, axis=0)).max() > 0.001  # it moves


def test_unknown_builtin(body):
    with pytest.raises(MotionSourceError, match="walk"):
        builtin_motion("moonwalk", body)


def test_motion_file_roundtrip(tmp_path, body):
    motion = builtin_motion("wave", body, seconds=1, fps=10)
    motion.valid[3] = False
    path = motion.save(tmp_path / "m.npz")
    again = Motion.load(path)
    assert again.camera == motion.camera and again.frame_names == motion.frame_names and again.fps == 10
    assert np.array_equal(again.body_pose, motion.body_pose) and again.valid.tolist() == motion.valid.tolist()
    with pytest.raises(MotionError):
        Motion.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", x=np.zeros(2))
    with pytest.raises(MotionError, match="missing"):
        Motion.load(tmp_path / "bad.npz")
    with pytest.raises(MotionError, match="NaN"):
        Motion(np.full((2, 3), np.nan), np.zeros((2, 23, 3)), np.zeros((1, 10)), np.zeros((2, 3)), motion.camera)


def test_amass_resampled_and_placed(tmp_path, body):
    T, fps = 240, 120.0
    t = np.arange(T) / fps
    poses = np.zeros((T, 156))
    poses[:, 0] = np.pi / 2  # SMPL y-up body stood up in a z-up world
    poses[:, 3 + 3 * 15 + 2] = -1.0 + 0.3 * np.sin(2 * np.pi * t)  # left shoulder (AMASS body joint 16)
    trans = np.stack([0.5 * t, np.zeros(T), np.full(T, 0.9)], -1)
    np.savez(tmp_path / "clip_poses.npz", poses=poses, trans=trans, betas=np.zeros(16), mocap_framerate=fps, gender="neutral")
    motion = load_amass(tmp_path / "clip_poses.npz", body, fps=30)
    assert motion.num_frames == 60 and motion.fps == 30
    uv = _upright_in_view(motion, body)
    assert abs(uv[-1, 1, 0] - uv[0, 1, 0]) > 5  # the root moved across the image
    np.savez(tmp_path / "not_amass.npz", foo=np.zeros(3))
    with pytest.raises(MotionSourceError):
        load_amass(tmp_path / "not_amass.npz", body)


def _hmr2_frame(rng, people=1):
    rot = axis_angle_to_matrix(torch.as_tensor(rng.normal(0, 0.3, size=(people, 24, 3)))).numpy().astype(np.float32)
    rot[:, 0] = axis_angle_to_matrix(torch.tensor([np.pi, 0.0, 0.0], dtype=torch.float64)).numpy()
    return {
        "smpls": {"global_orient": rot[:, :1], "body_pose": rot[:, 1:], "betas": rng.normal(size=(people, 10)).astype(np.float32)},
        "verts": [np.zeros((6890, 3), np.float32)] * people,
        "cam_t": [np.array([0.0, 0.2, 30.0], np.float32) + i for i in range(people)],
        "render_res": [640, 480], "scaled_focal_length": 12500.0,
    }


def test_reference_result_files(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "smpl_results"
    folder.mkdir()
    frames = [_hmr2_frame(rng), _hmr2_frame(rng, 2), _hmr2_frame(rng, 0), _hmr2_frame(rng)]
    for i, frame in enumerate(frames):
        np.save(folder / f"{i + 1:04d}.npy", frame, allow_pickle=True)
    motion = load_hmr2_results(folder)
    assert motion.num_frames == 4 and motion.valid.tolist() == [True, True, False, True]
    assert motion.camera.fx == 12500 and (motion.camera.width, motion.camera.height) == (640, 480)
    got = axis_angle_to_matrix(torch.as_tensor(motion.body_pose[1].astype(np.float64))).numpy()
    assert np.allclose(got, frames[1]["smpls"]["body_pose"][0], atol=1e-5)
    assert np.allclose(motion.transl[0], frames[0]["cam_t"][0])
    group = {"smpl": np.array([{k: v for k, v in frames[0]["smpls"].items()}], dtype=object),
             "camera": np.array([[0.0, 0.2, 30.0]])}
    np.savez(tmp_path / "smpls_group.npz", **group)
    g = load_smpls_group(tmp_path / "smpls_group.npz", width=640, height=480, negate_camera_y=True)
    assert g.num_frames == 1 and g.transl[0, 1] == pytest.approx(-0.2) and g.camera.fx == pytest.approx(12500)

    class Boom:
        def __reduce__(self):
            return (print, ("should never run",))

    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "0001.npy").write_bytes(b"")
    np.save(tmp_path / "evil" / "0001.npy", np.array({"smpls": Boom()}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not allowed"):
        load_hmr2_results(tmp_path / "evil")


@pytest.mark.slow
def test_demo_writes_real_guidance(tmp_path, capsys):
    from PIL import Image

    from champ_core.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--photo", "--out", str(out), "--seconds", "1", "--fps", "8", "--backend", "torch"]) == 0
    guidance = out / "guidance"
    for layer in ("depth", "normal", "semantic_map", "dwpose", "mask"):
        assert len(list((guidance / layer).glob("*.png"))) == 8
    assert (guidance / "preview.mp4").stat().st_size > 1000 and (guidance / "overlay.mp4").stat().st_size > 1000
    mask = np.asarray(Image.open(guidance / "mask" / "0001.png"))
    assert mask.shape == (512, 512) and 0.05 < (mask > 0).mean() < 0.6
    assert Motion.load(out / "motion_aligned.npz").num_frames == 8
    printed = capsys.readouterr().out
    assert "python -m champ_core animate" in printed and "weights" in printed
