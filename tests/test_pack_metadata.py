"""Registry metadata (pyproject.toml) as the ComfyUI registry reads it, against the repository."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()  # pip's comment rule
        if line:
            lines.append(line)
    return lines


def test_static_dependencies_equal_requirements_txt():
    project = _pyproject()["project"]
    assert "dependencies" not in project.get("dynamic", [])
    assert project["dependencies"] == _requirement_lines(REPO / "requirements.txt")
    assert not [d for d in project["dependencies"] if re.match(r"(torch|torchvision|torchaudio)\b", d)]


def test_registry_fields_and_the_icon_exist():
    data = _pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", project["name"]) and "comfyui" not in project["name"].replace(
        "-comfyui", "")
    assert (REPO / project["license"]["file"]).is_file()
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=")
    # The icon URL points at a file of this repository (raw GitHub URL of the main branch).
    repo_path = urllib.parse.urlparse(project["urls"]["Repository"]).path.strip("/")
    prefix = f"https://raw.githubusercontent.com/{repo_path}/main/"
    assert comfy["Icon"].startswith(prefix)
    icon = REPO / comfy["Icon"][len(prefix):]
    with Image.open(icon) as image:
        assert image.width == image.height <= 400 and image.format in ("PNG", "JPEG", "GIF")
    classifiers = project["classifiers"]
    assert "Operating System :: OS Independent" in classifiers
    assert "Environment :: GPU :: NVIDIA CUDA" in classifiers


def test_publish_workflow_uses_the_registry_action_on_version_changes():
    text = (REPO / ".github" / "workflows" / "publish.yml").read_text()
    assert "Comfy-Org/publish-node-action@" in text and "secrets.REGISTRY_ACCESS_TOKEN" in text
    assert '"pyproject.toml"' in text and "workflow_dispatch" in text
