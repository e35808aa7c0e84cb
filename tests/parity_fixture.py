"""The parity fixture set the fixture-driven tests run on, and every size read from its own files.

`CHAMP_PARITY_DIR` selects the set (default: set A in tests/fixtures/champ_parity); CI also runs
the fixture-driven tests on a set generated at other sizes by scripts/make_fixture_set_b.py.
Nothing here hard-codes a size, a frame count or a window list: all come from the set's
config.json, windows.json, unet/denoising_unet_config.json and pipeline/*.png.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

FIXTURE = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))
PIPE = FIXTURE / "pipeline"

CONFIG = json.loads((FIXTURE / "config.json").read_text())
RUN = CONFIG["set_definition"]["pipeline"]
WIDTH, HEIGHT, FRAMES = int(RUN["width"]), int(RUN["height"]), int(RUN["video_length"])
STEPS = int(RUN["num_inference_steps"])
CFG = float(RUN["guidance_scale"])
SEED = int(RUN["generator_seed"])
LATENT_H, LATENT_W = HEIGHT // 8, WIDTH // 8
GUIDANCE_ORDER = tuple(CONFIG.get("guidance_types_order", ("depth", "normal", "semantic_map", "dwpose")))

WINDOWS = json.loads((FIXTURE / "windows.json").read_text())["windows"]
WINDOW_LENGTHS = sorted(int(k) for k in WINDOWS)


def max_frames() -> int:
    """The motion modules' temporal position-encoding length (the longest window)."""
    config = json.loads((FIXTURE / "unet" / "denoising_unet_config.json").read_text())
    return int(config["unet_additional_kwargs"]["motion_module_kwargs"]["temporal_position_encoding_max_len"])


def run_windows(num_frames: int = FRAMES) -> list[list[int]]:
    """The reference's windows for `num_frames` (the fixture's windows.json)."""
    return WINDOWS[str(num_frames)]["windows"]


def num_windows(num_frames: int = FRAMES) -> int:
    return int(WINDOWS[str(num_frames)]["num_windows"])


def guidance_strips() -> dict[str, np.ndarray]:
    """The fixture's guidance frames: type -> uint8 (FRAMES, HEIGHT, WIDTH, 3)."""
    from PIL import Image

    out = {}
    for kind in GUIDANCE_ORDER:
        strip = np.array(Image.open(PIPE / f"guidance_{kind}.png").convert("RGB"))
        assert strip.shape == (FRAMES * HEIGHT, WIDTH, 3), f"guidance_{kind}.png: {strip.shape}"
        out[kind] = strip.reshape(FRAMES, HEIGHT, WIDTH, 3)
    return out


def run_file(scale: float) -> Path:
    """pipeline/run_cfg<scale>.safetensors (e.g. run_cfg3.5, run_cfg1)."""
    return PIPE / f"run_cfg{scale:g}.safetensors"
