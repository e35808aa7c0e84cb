"""Helpers of the training tests: tiny data in the training layout, CLI runs, reading outputs.

The data is written with the project's own `VideoLayoutWriter` (through `write_video`): a person-like
ellipse that moves a little from frame to frame on a plain background, with matching guidance maps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY_STAGE1 = REPO / "configs" / "train" / "tiny_stage1.yaml"
TINY_STAGE2 = REPO / "configs" / "train" / "tiny_stage2.yaml"


def make_videos(root: Path, videos: int = 2, frames: int = 6, height: int = 72, width: int = 64,
                moving: bool = True, uniform: bool = False) -> Path:
    """`uniform`: every image and map one flat colour, so any crop of a frame is the same picture."""
    from champ_core.train.layout import write_video

    yy, xx = np.mgrid[0:height, 0:width]
    for v in range(videos):
        images, layers = [], {k: [] for k in ("depth", "normal", "semantic_map", "dwpose", "mask")}
        for f in range(frames):
            cx = width / 2 + (4 * np.sin(f + v) if moving else 0.0)
            body = ((xx - cx) ** 2 / (0.2 * width) ** 2 + (yy - height / 2) ** 2 / (0.35 * height) ** 2) < 1
            if uniform:
                body = np.ones_like(body)
            image = np.zeros((height, width, 3), np.uint8)
            image[...] = (200, 180, 160)
            image[body] = (40 + 30 * v, 90, 160)
            images.append(image)
            layers["depth"].append(np.where(body, 200, 0).astype(np.uint8))
            normal = np.zeros((height, width, 3), np.uint8)
            normal[body] = (128, 128, 255)
            layers["normal"].append(normal)
            semantic = np.zeros((height, width, 3), np.uint8)
            semantic[body] = (255, 0, 0)
            layers["semantic_map"].append(semantic)
            pose = np.zeros((height, width, 3), np.uint8)
            pose[height // 2 - 2:height // 2 + 2, int(cx) - 8:int(cx) + 8] = (0, 255, 0)
            if uniform:
                pose[...] = (0, 128, 0)
            layers["dwpose"].append(pose)
            layers["mask"].append(np.where(body, 255, 0).astype(np.uint8))
        write_video(root / f"video{v:02d}", np.stack(images), {k: np.stack(a) for k, a in layers.items()})
    return root


def cli_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "HF_HOME": str(tmp_path / "hf-home"),  # no user accelerate config; nothing is downloaded anyway
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        "CHAMP_TINY_CACHE": str(tmp_path / "tiny-cache"),
    })
    return env


def train_command(stage: str, config: Path, *sets: str, resume: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "champ_core", "train", stage, "--config", str(config), "--no-progress"]
    for item in sets:
        cmd += ["--set", item]
    if resume:
        cmd += ["--resume", resume]
    return cmd


def run_cli(cmd: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout)


def read_log(output_dir: Path) -> list[dict]:
    path = output_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        for key, value in load_file(str(path)).items():
            tensors[f"{path.stem}/{key}"] = value
    return tensors
