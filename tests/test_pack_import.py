"""Importing the pack the way ComfyUI does stays light and needs no host.

A fresh interpreter loads /work/main/__init__.py with spec_from_file_location under a
path-derived module name, with the repository folder not on sys.path (as ComfyUI's loader does),
then checks sys.modules: no diffusers, transformers, pyrender or smplx; nothing imported
absolutely as `champ_core` or `nodes` (that would work under pytest and fail in production).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib.util, json, sys
repo = sys.argv[1]
if "" in sys.path:
    sys.path.remove("")  # -c puts the working directory first; ComfyUI runs with its own
assert repo not in sys.path, sys.path
name = repo.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(name, repo + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
nodes = sys.modules[name + ".nodes"]
heavy = ["diffusers", "transformers", "pyrender", "smplx"]
print(json.dumps({
    "nodes": sorted(module.NODE_CLASS_MAPPINGS),
    "display": sorted(module.NODE_DISPLAY_NAME_MAPPINGS),
    "web": module.WEB_DIRECTORY,
    "groups": sorted(nodes.NODE_GROUPS),
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
    "absolute": sorted(m for m in sys.modules if m.split(".")[0] in ("champ_core", "nodes", "comfy", "folder_paths")),
}))
"""


def _import_in_fresh_interpreter(tmp_path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pack_imports_light_without_a_host(tmp_path):
    result = _import_in_fresh_interpreter(tmp_path)
    assert result["heavy"] == []
    assert result["absolute"] == []
    assert result["groups"] == ["body", "evaluation", "generation", "models", "pose", "render"]
    assert result["web"] == "./web" and (REPO / "web").is_dir()
    assert result["nodes"] == result["display"]
    assert "ChampGuidanceLayers" in result["nodes"]
