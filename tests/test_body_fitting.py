"""Keypoint fitting accuracy on sequences the priors were not tuned on, references, bad input."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from champ_core.body.evaluation import load_eval_dir, make_eval_sequence, pa_mpjpe, reprojection_errors
from champ_core.body.fitting import FitConfig, fit_keypoints, fit_reference, flushing_denormals
from champ_core.body.keypoints import KeypointError, PoseFrames, openpose18_from_body, project
from champ_core.body.model import load_body_model, open_body_model

# generated sequences with seeds never used while choosing the fitter's settings or priors
# (those were chosen on 5000-5005 and checked on 7000-7005, see docs/benchmarks.md)
_TEST_SEEDS = (1001, 1002, 1003)
REPO = Path(__file__).resolve().parents[1]


def _body():
    """CHAMP_BODY_MODEL (an SMPL-format model file or folder) when set, else the open body."""
    path = os.environ.get("CHAMP_BODY_MODEL")
    return load_body_model(path) if path else open_body_model()


def _sequences(body=None):
    folder = os.environ.get("CHAMP_BODY_EVAL_DIR")
    if folder:
        return load_eval_dir(folder)[:3]
    return [make_eval_sequence(seed, num_frames=40, body=body or _body()) for seed in _TEST_SEEDS]


def _bench_body():
    """bench/body.py as a module (its whole-body sequence generator)."""
    spec = importlib.util.spec_from_file_location("champ_bench_body", REPO / "bench" / "body.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_TEST_SEEDS)))
def test_fitting_accuracy_on_unseen_sequences(index):
    body = _body()
    seqs = _sequences(body)
    assert len(seqs) > index, "CHAMP_BODY_EVAL_DIR must hold at least 3 npz sequences"
    for seq in seqs[index:index + 1]:
        pose = PoseFrames(seq.keypoints_2d, seq.camera.width, seq.camera.height)
        motion = fit_keypoints(pose, body, seq.camera, fps=seq.fps)
        joints = motion.pose(body).joints.numpy()
        if seq.clean_keypoints_2d is not None:
            reproj = np.median(reprojection_errors(motion, body, seq.clean_keypoints_2d))
        else:
            ok = seq.keypoints_2d[..., 2] > 0
            reproj = np.median(reprojection_errors(motion, body, seq.keypoints_2d[..., :2], ok))
        pa = pa_mpjpe(joints, seq.joints_3d) * 1000
        assert reproj <= 3.0, (seq.name, reproj)
        assert pa <= 60.0, (seq.name, pa)


def test_reference_fit_half_body_and_proportions():
    body = _body()
    seq = make_eval_sequence(2024, num_frames=1, noise_px=0.0, missing=0.0, body=body)
    kp = seq.keypoints_2d.copy()
    kp[0, [8, 9, 10, 11, 12, 13], :] = 0  # waist-up: hips and legs unknown
    ref = fit_reference(PoseFrames(kp, seq.camera.width, seq.camera.height), body, seq.camera)
    assert ref.num_frames == 1 and ref.valid.all()
    err = reprojection_errors(ref, body, seq.clean_keypoints_2d[..., :2], kp[..., 2] > 0)
    assert np.median(err) < 2.0
    # legs left to the prior: finite and not far from a natural standing pose
    assert np.isfinite(ref.body_pose).all() and np.abs(ref.body_pose[0, [3, 4]]).max() < 1.0


def test_frames_without_the_person_are_interpolated_and_flagged():
    body = _body()
    seq = make_eval_sequence(77, num_frames=20, body=body)
    kp = seq.keypoints_2d.copy()
    kp[8:13] = 0.0
    present = np.ones(20, dtype=bool)
    present[8:13] = False
    motion = fit_keypoints(PoseFrames(kp, seq.camera.width, seq.camera.height, present=present), body, seq.camera)
    assert motion.valid.tolist() == present.tolist()
    out = motion.pose(body)
    op = openpose18_from_body(out.vertices.numpy(), out.joints.numpy())
    uv = project(op.astype(np.float64), seq.camera)
    # the gap is bridged: the filled frames stay near the true (unseen) keypoints
    gap_err = np.linalg.norm(uv[8:13] - seq.clean_keypoints_2d[8:13], axis=-1)
    hold_err = np.linalg.norm(seq.clean_keypoints_2d[[7] * 5] - seq.clean_keypoints_2d[8:13], axis=-1)
    assert np.isfinite(motion.body_pose).all()
    assert np.median(gap_err) < np.median(hold_err)  # better than freezing the last seen frame
    seen_err = np.linalg.norm(uv[:8] - seq.clean_keypoints_2d[:8], axis=-1)
    assert np.median(seen_err) < 3.0


def test_bad_keypoints():
    body = open_body_model()
    with pytest.raises(KeypointError, match="missing or NaN"):
        fit_keypoints(PoseFrames(np.full((3, 18, 3), np.nan), 512, 512), body)
    few = np.zeros((2, 18, 3))
    few[:, :2] = [100, 100, 1]
    with pytest.raises(KeypointError, match="fewer than 3"):
        fit_keypoints(PoseFrames(few, 512, 512), body)
    with pytest.raises(KeypointError):
        fit_keypoints(PoseFrames(np.zeros((0, 18, 3)), 512, 512), body)


def test_progress_reports_and_can_cancel():
    body = open_body_model()
    seq = make_eval_sequence(5, num_frames=4)
    pose = PoseFrames(seq.keypoints_2d, seq.camera.width, seq.camera.height)
    seen = []

    def stop(done, total):
        seen.append((done, total))
        if done >= 40:
            raise KeyboardInterrupt

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for flushing in (False, True):  # the fitter flushes denormals while it runs, then restores the state
            torch.set_flush_denormal(flushing)
            with pytest.raises(KeyboardInterrupt):
                fit_keypoints(pose, body, seq.camera, progress=stop)
            assert torch.get_num_threads() == 2  # the fitter's single-threading is undone after an interruption
            assert flushing_denormals() is flushing
    finally:
        torch.set_num_threads(before)
        torch.set_flush_denormal(False)
    cfg = FitConfig()
    assert len(seen) == 4
    assert seen[0] == (20, cfg.stage1_iterations + cfg.iterations + cfg.refine_iterations) and seen[-1][0] == 40


def test_reference_fit_recovers_body_proportions():
    import torch

    from champ_core.body.priors import natural_pose
    from champ_core.camera import Camera

    body = open_body_model()
    camera = Camera.hmr2_default(512, 512)

    def leg_to_torso(betas):
        j = body.rest_joints(torch.as_tensor(betas, dtype=torch.float32).reshape(1, 10))[0]
        return float((j[1, 1] - j[7, 1]) / (j[12, 1] - j[1, 1]))

    ratios = {}
    for legs in (-2.5, 2.5):
        betas = np.zeros((1, 10))
        betas[0, 2] = legs
        out = body(torch.tensor([[np.pi, 0.0, 0.0]]), natural_pose()[None], torch.tensor(betas, dtype=torch.float32),
                   torch.tensor([[0.0, 0.25, 40.0]]))
        uv = project(openpose18_from_body(out.vertices, out.joints).numpy().astype(np.float64), camera)
        kp = np.concatenate([uv, np.ones((1, 18, 1))], -1)
        ref = fit_reference(PoseFrames(kp, 512, 512), body, camera)
        ratios[legs] = (leg_to_torso(ref.betas), leg_to_torso(betas))
    (fit_short, true_short), (fit_long, true_long) = ratios[-2.5], ratios[2.5]
    assert fit_long > fit_short
    assert abs(fit_long - true_long) < abs(leg_to_torso(np.zeros(10)) - true_long)
    assert abs(fit_short - true_short) < abs(leg_to_torso(np.zeros(10)) - true_short)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_TEST_SEEDS)))
def test_wholebody_fit_uses_feet_and_hands(index):
    """With DWPose's feet and hand points the fit follows them too (reprojection of those points),
    and the SMPL joints stay within the accuracy bound of the body-only fit."""
    from champ_core.body.fitting import extra_points_from_body

    if os.environ.get("CHAMP_BODY_EVAL_DIR"):
        pytest.skip("external sequences carry OpenPose-18 keypoints only")
    body = _body()
    bench = _bench_body()
    seq = bench.wholebody_sequence(_TEST_SEEDS[index], 40, body)
    pose, feet = bench.pose_of(seq)
    assert pose.hands is not None and (feet[..., 2] > 0).mean() > 0.8
    motion = fit_keypoints(pose, body, seq.camera, fps=seq.fps, feet=feet)
    out = motion.pose(body)
    extras = project(extra_points_from_body(out.vertices.double().numpy(), out.joints.double().numpy()), seq.camera)
    seen = seq.extras[..., 2] > 0
    err = np.linalg.norm(extras - seq.extras[..., :2], axis=-1)[seen]
    assert np.median(err) <= 4.0, np.median(err)  # 2 px noise on the targets
    pa = pa_mpjpe(out.joints.numpy(), seq.joints_3d) * 1000
    assert pa <= 55.0, (seq.name, pa)


def test_extra_keypoints_layout():
    from champ_core.body.fitting import HAND_POINTS, NUM_EXTRA, extra_keypoints, extra_points_from_body

    T = 2
    body18 = np.zeros((T, 18, 3))
    hands = np.zeros((T, 2, 21, 3))
    hands[..., 0] = np.arange(21)
    hands[..., 2] = 1.0
    hands[1, 1, :, 2] = np.nan  # NaN confidence: missing
    pose = PoseFrames(body18, 64, 64, hands=hands)
    feet = np.ones((T, 6, 3))
    extra = extra_keypoints(pose, feet)
    assert extra.shape == (T, NUM_EXTRA, 3) and NUM_EXTRA == 20
    assert extra[0, 6:13, 0].tolist() == list(HAND_POINTS) and extra[0, 13:20, 0].tolist() == list(HAND_POINTS)
    assert (extra[1, 13:20] == 0).all() and (extra[:, :6, 2] == 1).all()
    assert extra_keypoints(PoseFrames(body18, 64, 64)) is None
    with pytest.raises(KeypointError, match="foot keypoints"):
        extra_keypoints(pose, np.ones((T, 5, 3)))
    body = open_body_model()
    import torch

    out = body(torch.tensor([[np.pi, 0, 0]] * T), torch.zeros(T, 23, 3), torch.zeros(1, 10), torch.tensor([[0, 0, 3.0]] * T))
    pts = extra_points_from_body(out.vertices, out.joints)
    assert pts.shape == (T, 20, 3)
    assert torch.allclose(pts[:, 6], out.joints[:, 20]) and torch.allclose(pts[:, 14], out.joints[:, 23])
    # upright T-pose facing the camera: heels behind the toes (further away), fingertips beyond the wrists
    assert (pts[:, 2, 2] > pts[:, 0, 2]).all() and (pts[:, 8:13, 0] - pts[:, 6:7, 0]).abs().min() > 0.05


def test_rigid_stage_one_equals_the_full_body_computation():
    """Stage 1 holds the body pose, so it turns the precomputed body rigidly; the points must be those
    of the kinematic chain for any global rotation and translation."""
    import torch

    from champ_core.body.fitting import _Fitter
    from champ_core.body.model import axis_angle_to_matrix
    from champ_core.camera import Camera

    body = _body()
    fitter = _Fitter(body, Camera.hmr2_default(512, 512), FitConfig(), extras=True)
    generator = torch.Generator().manual_seed(0)
    frames = 6
    pose = fitter.mean_pose.expand(frames, -1, -1) + 0.2 * torch.randn(frames, 23, 3, generator=generator)
    betas = torch.randn(1, body.num_betas, generator=generator)
    fitter.freeze_body(pose, betas)
    rot = axis_angle_to_matrix(torch.randn(frames, 3, generator=generator))
    transl = torch.randn(frames, 3, generator=generator)
    points, joints = fitter.keypoints_3d(rot, pose, betas, transl)
    rigid_points, rigid_joints = fitter.rigid_keypoints(rot, transl)
    assert points.shape == rigid_points.shape == (frames, 38, 3)
    torch.testing.assert_close(rigid_points, points, atol=1e-5, rtol=0)
    torch.testing.assert_close(rigid_joints, joints, atol=1e-5, rtol=0)


def test_constants_first_made_in_inference_mode_do_not_break_later_fits():
    """ComfyUI runs nodes under torch.inference_mode(): the kinematics plan and the keypoint gathers,
    cached or made at import, must still be usable as indices in a later fit's backward pass."""
    import torch

    from champ_core.body import fitting, keypoints, model

    body = open_body_model()
    model._kinematic_plan.cache_clear()
    with torch.inference_mode():
        body(torch.zeros(1, 3), torch.zeros(1, 23, 3))  # a render-like first use fills the cache here
        plan = model._kinematic_plan(tuple(body._parents_list))
        gathers = (keypoints._openpose18_gather(), fitting._extra_gather())
    made = (plan.order, plan.inverse, plan.bone_parent, plan.root_mask, *gathers,
            *(p for p in plan.parent_picks if isinstance(p, torch.Tensor)))
    assert not any(t.is_inference() for t in made)
    seq = make_eval_sequence(5, num_frames=3)
    pose = PoseFrames(seq.keypoints_2d, seq.camera.width, seq.camera.height)
    motion = fit_keypoints(pose, body, seq.camera, config=FitConfig(stage1_iterations=2, iterations=2, refine_iterations=2))
    assert motion.num_frames == 3
