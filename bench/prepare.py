"""Data-preparation benchmark: frames per second of `prepare` and of DWPose detection.

    .venv/bin/python bench/prepare.py [--seconds 4] [--fps 24] [--size 512] [--device cpu|cuda]
                                      [--pose-models DIR] [--threads 2]

1. The whole chain with `--keypoints` (what `python -m champ_core prepare VIDEOS OUT --keypoints DIR`
   runs per video): a driving video the pack renders from the built-in "dance" (mp4) and its
   keypoints -> decode -> SMPL fit -> smoothing -> guidance maps -> the layout writer. Prints
   seconds per stage and frames per second overall (wall clock and per CPU second).
2. DWPose detection (YOLOX + RTMPose on onnxruntime) on the same frames, when yolox_l.onnx and
   dw-ll_ucoco_384.onnx are found (--pose-models, $CHAMP_POSE_MODELS, the ComfyUI install around
   the pack); reported as unavailable otherwise. `--device cuda` runs both on the GPU (onnxruntime's
   CUDA provider when installed, else it says it fell back to the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from champ_core.body.model import open_body_model
from champ_core.train.prepare import PrepareOptions, VideoSource, driving_video_from_motion, prepare_video
from champ_core.video import write_video


def _clock():
    return time.perf_counter(), time.process_time()


def chain(args, work: Path) -> None:
    frames, keypoints, _ = driving_video_from_motion("dance", seconds=args.seconds, fps=args.fps, width=args.size,
                                                     height=args.size)
    videos, kp_dir, out = work / "videos", work / "keypoints", work / "out"
    videos.mkdir()
    kp_dir.mkdir()
    write_video(videos / "dance.mp4", frames, args.fps)
    (kp_dir / "dance.json").write_text(json.dumps(keypoints))
    body = open_body_model()
    stages: dict[str, list[float]] = {}
    last = [time.perf_counter()]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        stages.setdefault(stage, [0.0])[0] += now - last[0]
        last[0] = now

    if args.device.startswith("cuda"):
        body = body.to(args.device)
    start, cpu = _clock()
    last[0] = start
    prepare_video(VideoSource("dance", videos / "dance.mp4"), out, body, PrepareOptions(device=args.device),
                  keypoints_dir=kp_dir, progress=progress)
    wall, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    count = len(frames)
    fit_s = stages.get("fit", [0.0])[0]
    write_s = stages.get("write", [0.0])[0]
    print(f"prepare --keypoints ({args.device}): {count} frames {args.size}x{args.size}: {wall:.1f} s -> "
          f"{count / wall:.1f} frames/s ({count / cpu_s:.1f} per CPU second); decode+keypoints+fit {fit_s:.1f} s, "
          f"smoothing+render+write {write_s:.1f} s")


def detection(args) -> None:
    from champ_core.pose import DWPose, PoseModelError

    try:
        model = DWPose.from_folders(args.pose_models, device=args.device)
    except PoseModelError as exc:
        print(f"DWPose detection ({args.device}): unavailable ({exc})")
        return
    frames, _, _ = driving_video_from_motion("dance", seconds=args.seconds, fps=args.fps, width=args.size,
                                             height=args.size)
    model(frames[0])  # warm-up (session initialisation)
    start, cpu = _clock()
    sequence = model.detect_sequence(frames, total=len(frames))
    wall, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    found = sum(i is not None for i in sequence.tracked)
    providers = model.detector.session.get_providers()
    print(f"DWPose detection ({args.device}, {model.files.detector.name} + {model.files.estimator.name}, "
          f"providers {providers}): {len(frames)} frames: {len(frames) / wall:.1f} frames/s "
          f"({len(frames) / cpu_s:.1f} per CPU second); person found in {found}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pose-models", action="append", default=[])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-chain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start {os.getloadavg()[0]:.1f}; torch threads {args.threads}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA: not available on this machine; run with --device cuda on a GPU machine for GPU figures")
        return
    if not args.skip_chain:
        with tempfile.TemporaryDirectory(prefix="champ-bench-prepare-") as work:
            chain(args, Path(work))
    detection(args)


if __name__ == "__main__":
    main()
