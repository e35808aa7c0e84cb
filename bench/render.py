"""Guidance rendering speed: frames per second for depth + normal + semantic + mask together.

    .venv/bin/python bench/render.py [--frames 48] [--size 512] [--repeats 5] [--threads N]

Scene: the golden SMPL-topology body (6890 vertices, 13,586 faces) from
tests/fixtures/guidance_renders/a_frontal_apose, re-framed to fill a 512x512 image the way a dancer
fills a Champ frame, jittered per frame. Each back end renders the whole clip `--repeats` times after
a warm-up; the best and the median run are printed (the project machine is shared, so the best run
is the cleanest measure of the code, the median of what a busy machine gives). The CUDA line needs a
lent GPU (maps kept on the GPU, `as_tensors=True`); without one it prints a note. Skeleton drawing (cv2) is timed separately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from champ_core.camera import Camera
from champ_core.render import draw_skeleton, render_guidance

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "guidance_renders" / "a_frontal_apose"


def scene(frames: int, size: int):
    data = np.load(FIXTURE / "input.npz")
    base = data["vertices"][0]
    rng = np.random.default_rng(0)
    # body ~1.8 m tall filling ~85 % of the frame height
    focal = 0.85 * size * 6.0 / 1.8
    clip = []
    for _ in range(frames):
        jitter = rng.normal(0, 0.01, size=3).astype(np.float32)
        clip.append(base + np.float32([0.0, 0.1, 6.0]) + jitter)
    return np.stack(clip), data["faces"], data["vertex_labels"], Camera.centred(focal, size, size)


def time_backend(backend: str, device: str | None, clip, faces, labels, camera, repeats: int):
    # on a GPU the maps stay there (as the models consume them); on the CPU they are numpy arrays
    as_tensors = device == "cuda"
    render_guidance(clip[:8], faces, labels, camera, backend=backend, device=device, as_tensors=as_tensors)
    if device == "cuda":
        torch.cuda.synchronize()
    runs, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        maps = render_guidance(clip, faces, labels, camera, backend=backend, device=device, as_tensors=as_tensors)
        if device == "cuda":
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    fg = float((maps["mask"] > 0).float().mean()) if as_tensors else float((maps["mask"] > 0).mean())
    return len(clip) / min(runs), len(clip) / statistics.median(runs), 1000 * min(cpu) / len(clip), fg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clip, faces, labels, camera = scene(args.frames, args.size)
    print(f"scene: {len(clip)} frames, {clip.shape[1]} vertices, {len(faces)} faces, {args.size}x{args.size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")  # fmt: skip
    print("layers: depth + normal + semantic_map + mask in one call (uint8 frames out)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at start (other processes share the cores; "
          "CPU ms/frame = process CPU time, all threads, the least load-dependent figure)")  # fmt: skip
    for backend, device in (("torch", "cpu"), ("pyrender", None), ("torch", "cuda")):
        label = f"{backend:8s} {device or 'cpu (OpenGL)'}"
        if device == "cuda" and not torch.cuda.is_available():
            print(f"{label:26s} skipped: CUDA is not available on this machine (run on a lent GPU)")
            continue
        try:
            best, median, cpu_ms, fg = time_backend(backend, device, clip, faces, labels, camera, args.repeats)
        except Exception as exc:  # report and go on to the next back end
            print(f"{label:26s} failed: {type(exc).__name__}: {exc}")
            continue
        print(f"{label:26s} {best:8.1f} fps best   {median:8.1f} fps median   {cpu_ms:6.1f} CPU ms/frame"
              f"   (foreground {fg:.1%} of pixels)")  # fmt: skip

    rng = np.random.default_rng(1)
    body = np.concatenate([rng.uniform(50, args.size - 50, (len(clip), 18, 2)), np.ones((len(clip), 18, 1))], -1)
    draw_skeleton(body[:2], args.size, args.size)
    start = time.perf_counter()
    draw_skeleton(body, args.size, args.size)
    print(f"{'skeleton (cv2)':26s} {len(clip) / (time.perf_counter() - start):8.1f} fps (body only, 18 joints)")


if __name__ == "__main__":
    main()
