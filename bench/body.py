"""Body benchmark: keypoint-fitting accuracy and speed, smoothing, on CPU (and CUDA when present).

    .venv/bin/python bench/body.py [--frames 60] [--sequences 6] [--first-seed 5000] [--threads 2] [--wholebody]

Sequences: `CHAMP_BODY_EVAL_DIR` (npz: keypoints_2d, joints_3d, focal_px, width, height, fps) when
set, else synthetic ones from `champ_core.body.evaluation.make_eval_sequence` (random joint-angle
trajectories, cameras and betas; keypoint noise sigma 2 px at 512 px height, 5 % missing).
Prints per sequence and overall: median 2D reprojection error (px, against clean keypoints when
known), PA-MPJPE (mm, 24 SMPL joints), fitting speed (frames per second, wall clock, and per second
of this process's CPU time, which other jobs on a shared machine disturb less), after one untimed
warm-up fit.

`--wholebody` adds what DWPose's 133 points give beyond OpenPose-18 to the synthetic sequences:
the 6 foot points and, per hand, the wrist, the middle knuckle and the 5 fingertips, projected from
the generating body with the same noise and missing rate (their own random stream), so the
OpenPose-18 keypoints stay exactly those of the plain run. `CHAMP_BODY_MODEL` (an SMPL-format
model file or folder) generates, fits and compares with that body instead of the open body.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from champ_core.body.evaluation import load_eval_dir, make_eval_sequence, pa_mpjpe, reprojection_errors
from champ_core.body.fitting import HAND_POINTS, FitConfig, extra_points_from_body, fit_keypoints
from champ_core.body.keypoints import PoseFrames, project
from champ_core.body.model import load_body_model, open_body_model
from champ_core.body.motions import BUILTIN_MOTIONS, builtin_motion
from champ_core.body.smoothing import smooth_motion


class _Recorder:
    """The body model, remembering its last output (the generator's ground-truth vertices)."""

    def __init__(self, body) -> None:
        self._body, self.output = body, None

    def __call__(self, *args, **kwargs):
        self.output = self._body(*args, **kwargs)
        return self.output

    def __getattr__(self, name):
        return getattr(self._body, name)


def wholebody_sequence(seed: int, num_frames: int, body, noise_px: float = 2.0, missing: float = 0.05):
    """`make_eval_sequence(seed)` plus `extras` (T, 20, 3): feet and hand points of the same bodies."""
    recorder = _Recorder(body)
    seq = make_eval_sequence(seed, num_frames=num_frames, body=recorder)
    out = recorder.output
    points = extra_points_from_body(out.vertices.cpu().double().numpy(), out.joints.cpu().double().numpy())
    xy = project(points, seq.camera)
    rng = np.random.default_rng(seed + 1_000_003)
    conf = (rng.random(xy.shape[:2]) >= missing).astype(np.float64)
    noisy = xy + rng.normal(0.0, noise_px, size=xy.shape)
    conf *= (xy[..., 0] >= 0) & (xy[..., 0] < seq.camera.width) & (xy[..., 1] >= 0) & (xy[..., 1] < seq.camera.height)
    extras = np.concatenate([noisy, conf[..., None]], -1)
    extras[conf == 0] = 0.0
    seq.extras = extras
    return seq


def pose_of(seq) -> tuple[PoseFrames, np.ndarray | None]:
    """A sequence's keypoints as the fitter takes them: PoseFrames (+ hands) and feet."""
    extras = getattr(seq, "extras", None)
    if extras is None:
        return PoseFrames(seq.keypoints_2d, seq.camera.width, seq.camera.height), None
    hands = np.zeros((seq.keypoints_2d.shape[0], 2, 21, 3))
    hands[:, 0, list(HAND_POINTS)] = extras[:, 6:13]
    hands[:, 1, list(HAND_POINTS)] = extras[:, 13:20]
    return PoseFrames(seq.keypoints_2d, seq.camera.width, seq.camera.height, hands=hands), extras[:, :6]


def evaluate(seqs, body, device: str) -> tuple[list[float], list[float], float, int, float]:
    reps, pas, seconds, frames, cpu_seconds = [], [], 0.0, 0, 0.0
    for seq in seqs:
        pose, feet = pose_of(seq)
        if device == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        motion = fit_keypoints(pose, body, seq.camera, fps=seq.fps, config=FitConfig(device=device), feet=feet)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        body_cpu = body.to("cpu")
        if seq.clean_keypoints_2d is not None:
            rep = float(np.median(reprojection_errors(motion, body_cpu, seq.clean_keypoints_2d)))
        else:
            ok = seq.keypoints_2d[..., 2] > 0
            rep = float(np.median(reprojection_errors(motion, body_cpu, seq.keypoints_2d[..., :2], ok)))
        pa = pa_mpjpe(motion.pose(body_cpu).joints.numpy(), seq.joints_3d) * 1000
        reps.append(rep)
        pas.append(pa)
        seconds += elapsed
        cpu_seconds += cpu
        frames += motion.num_frames
        print(f"  {seq.name:>16s} f={seq.camera.fx:7.0f}px {seq.camera.width}x{seq.camera.height} T={motion.num_frames}: "
              f"reproj median {rep:5.2f} px  PA-MPJPE {pa:5.1f} mm  {motion.num_frames / elapsed:6.1f} fps "
              f"({motion.num_frames / cpu:5.1f} per CPU second)")
    return reps, pas, seconds, frames, cpu_seconds


# A process's first fit pays one-time costs (allocator, kernel dispatch caches): the bench makes one on
# a sequence of its own before timing, so every timed sequence runs in the same steady state.
WARM_UP_SEED = 4999


def smoothing_figures(body) -> None:
    clips = {n: builtin_motion(n, body, seconds=4, fps=30) for n in BUILTIN_MOTIONS}
    joints = {n: m.pose(body).joints.numpy().astype(np.float64) for n, m in clips.items()}
    fastest = max(joints, key=lambda n: np.linalg.norm(np.diff(joints[n], axis=0), axis=-1).mean())
    rng = np.random.default_rng(0)
    walk = clips["walk"]
    # white joint noise: the rotations of every joint perturbed by 0.03 rad, translation by 1 cm
    from dataclasses import replace

    from champ_core.body.model import axis_angle_to_matrix, matrix_to_axis_angle

    rot = axis_angle_to_matrix(torch.as_tensor(np.concatenate([walk.global_orient[:, None], walk.body_pose], 1), dtype=torch.float64))
    noise = axis_angle_to_matrix(torch.as_tensor(rng.normal(0, 0.03, size=(walk.num_frames, 24, 3))))
    aa = matrix_to_axis_angle(rot @ noise).numpy()
    noisy = replace(walk, global_orient=aa[:, 0], body_pose=aa[:, 1:], transl=walk.transl + rng.normal(0, 0.01, walk.transl.shape))

    def acc(m):
        j = m.pose(body).joints.numpy().astype(np.float64)
        return ((j[2:] - 2 * j[1:-1] + j[:-2]) ** 2).sum(-1).mean() * 1e6

    def disp(m):
        return np.linalg.norm(m.pose(body).joints.numpy() - joints[fastest], axis=-1).mean() * 1000

    print(f"smoothing (noisy walk: mean squared joint acceleration, mm^2/frame^4; clean '{fastest}': mean joint displacement, mm)")
    print(f"  {'none':>18s}: acc {acc(noisy):8.2f}  disp {0.0:6.2f}")
    print(f"  {'reference 5-tap':>18s}: acc {acc(smooth_motion(noisy, 'reference')):8.2f}  "
          f"disp {disp(smooth_motion(clips[fastest], 'reference')):6.2f}")
    for s in (0.6, 0.8, 1.0, 1.5, 2.0):
        print(f"  {f'gaussian {s}':>18s}: acc {acc(smooth_motion(noisy, 'gaussian', s)):8.2f}  "
              f"disp {disp(smooth_motion(clips[fastest], 'gaussian', s)):6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--sequences", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=5000,
                        help="seeds first..first+sequences-1 (5000: the set the fitter was tuned on; 7000: a check set)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wholebody", action="store_true", help="add feet and hand keypoints (DWPose's 133 layout)")
    parser.add_argument("--skip-smoothing", action="store_true", help="fitting figures only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_file = os.environ.get("CHAMP_BODY_MODEL")
    body = load_body_model(model_file) if model_file else open_body_model()
    print(f"body model: {model_file or 'the open body'}; load average at start {os.getloadavg()[0]:.1f}")
    folder = os.environ.get("CHAMP_BODY_EVAL_DIR")
    if folder:
        seqs = load_eval_dir(folder)
        print(f"evaluation sequences from CHAMP_BODY_EVAL_DIR={folder}: {len(seqs)}")
    else:
        if args.wholebody:
            seqs = [wholebody_sequence(args.first_seed + i, args.frames, body) for i in range(args.sequences)]
        else:
            seqs = [make_eval_sequence(args.first_seed + i, num_frames=args.frames, body=body)
                    for i in range(args.sequences)]
        print(f"synthetic evaluation sequences: {len(seqs)} x {args.frames} frames "
              f"(seeds {args.first_seed}..{args.first_seed + args.sequences - 1}), keypoints: "
              f"{'OpenPose-18 + feet + hands' if args.wholebody else 'OpenPose-18'}")
    print(f"CPU ({args.threads} torch threads allowed; the fitter itself runs single-threaded):")
    warm_up = make_eval_sequence(WARM_UP_SEED, num_frames=20, body=body)
    start = time.perf_counter()
    fit_keypoints(*pose_of(warm_up)[:1], body, warm_up.camera, fps=warm_up.fps, config=FitConfig())
    print(f"  warm-up: a first 20-frame fit (seed {WARM_UP_SEED}, not counted) took {time.perf_counter() - start:.2f} s")
    reps, pas, seconds, frames, cpu_seconds = evaluate(seqs, body, "cpu")
    print(f"CPU overall: median reproj {np.median(reps):.2f} px (worst {max(reps):.2f}), mean PA-MPJPE "
          f"{np.mean(pas):.1f} mm (worst {max(pas):.1f}), speed {frames / seconds:.1f} frames/s "
          f"({frames / cpu_seconds:.1f} per CPU second)")
    if torch.cuda.is_available():
        print(f"CUDA ({torch.cuda.get_device_name(0)}):")
        evaluate(seqs[:1], body.to("cuda"), "cuda")  # warm-up
        _, _, seconds, frames, _ = evaluate(seqs, body.to("cuda"), "cuda")
        print(f"CUDA overall speed {frames / seconds:.1f} frames/s")
    else:
        print("CUDA: not available on this machine (no GPU lent); run this script on a GPU machine for GPU figures")
    if not args.skip_smoothing:
        smoothing_figures(body.to("cpu"))


if __name__ == "__main__":
    main()
