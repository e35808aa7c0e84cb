"""Importing the pipeline, the video helpers and the animate command stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_heavy_imports_at_module_level():
    code = (
        "import sys\n"
        "import champ_core.pipeline, champ_core.pipeline.sampling, champ_core.pipeline.loading\n"
        "import champ_core.pipeline.windows, champ_core.pipeline.inputs, champ_core.video, champ_core.cli.animate\n"
        "print(sorted(m for m in ('diffusers', 'transformers', 'av', 'cv2', 'pyrender', 'smplx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "champ_core", "animate", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    for option in ("--reference", "--guidance", "--weights", "--out", "--frames", "--fps", "--steps", "--cfg",
                   "--seed", "--width", "--height", "--window-length", "--window-schedule", "--grid"):
        assert option in out.stdout
