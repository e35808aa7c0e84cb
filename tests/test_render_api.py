"""render_guidance: conventions on analytic scenes, no-body frames, input errors, progress, colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from champ_core.camera import Camera
from champ_core.render import (
    SEMANTIC_LUT_RGB,
    RenderBackendError,
    RenderInputError,
    maps_to_tensors,
    part_colors,
    render_guidance,
)
from champ_core.render.colors import linear_to_srgb, srgb_to_linear


def uv_sphere(radius=0.5, rings=48, segments=96):
    """Closed sphere mesh, outward winding; labels = 0 on the left half (x < 0), 23 on the right."""
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    body = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], body, [[0, -1, 0]]]) * radius
    faces = []
    top, bottom = 0, len(verts) - 1

    def idx(r, s):
        return 1 + r * segments + s % segments

    for s in range(segments):
        faces.append((top, idx(0, s + 1), idx(0, s)))
        faces.append((bottom, idx(rings - 2, s), idx(rings - 2, s + 1)))
        for r in range(rings - 2):
            faces.append((idx(r, s), idx(r, s + 1), idx(r + 1, s)))
            faces.append((idx(r, s + 1), idx(r + 1, s + 1), idx(r + 1, s)))
    labels = np.where(verts[:, 0] < 0, 0, 23)
    return verts.astype(np.float32), np.array(faces, dtype=np.int64), labels


SPHERE = uv_sphere()
CAMERA = Camera.centred(200.0, 128, 96)


def render_sphere(centres, backend="torch", faces=None, **kwargs):
    verts, sphere_faces, labels = SPHERE
    frames = np.stack([verts + np.asarray(c, dtype=np.float32) for c in centres])
    return render_guidance(frames, sphere_faces if faces is None else faces, labels, CAMERA, backend=backend, **kwargs)


def test_sphere_conventions():
    maps = render_sphere([(0.0, 0.0, 3.0)])
    mask = maps["mask"][0] > 0
    assert set(np.unique(maps["mask"])) == {0, 255}
    # silhouette: radius 200 * 0.5 / sqrt(3^2 - 0.5^2) ~ 33.8 px
    assert abs(mask.sum() - np.pi * (200 * 0.5 / np.sqrt(9 - 0.25)) ** 2) < 0.03 * mask.sum()
    # the centre pixel faces the camera: (128, 128, 255); nearest point -> 255
    centre = maps["normal"][0, 48, 64]
    assert np.abs(centre.astype(int) - (128, 128, 255)).max() <= 2
    assert maps["depth"][0, 48, 64, 0] >= 253 and maps["depth"][0].max() == 255
    assert maps["depth"][0][..., 0][mask].min() <= 2  # the rim is the farthest visible point
    # right-facing rim is red, left-facing rim has R near 0, top rim is green
    row = maps["normal"][0, 48]
    cols = np.flatnonzero(mask[48])
    assert row[cols[-1], 0] > 230 and row[cols[0], 0] < 25
    top = np.flatnonzero(mask[:, 64])[0]
    assert maps["normal"][0, top, 64, 1] > 230
    # background is black everywhere
    for layer in ("depth", "normal", "semantic_map"):
        assert not maps[layer][0][~mask].any()


def test_semantic_colours_blend_in_linear_light():
    verts, faces, labels = SPHERE
    maps = render_sphere([(0.0, 0.0, 3.0)])
    sem = maps["semantic_map"][0]
    left, right = SEMANTIC_LUT_RGB[0], SEMANTIC_LUT_RGB[23]
    assert (sem[48, 44] == left).all() and (sem[48, 84] == right).all()
    # faces straddling x = 0 blend the two colours; every blended pixel lies on the linear-light
    # segment between them, re-encoded to sRGB (not on the straight sRGB segment)
    lin = srgb_to_linear(torch.tensor(np.stack([left, right]) / 255.0, dtype=torch.float64))
    w = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]
    curve = (linear_to_srgb((1 - w) * lin[0] + w * lin[1]) * 255).numpy()
    blended = sem[maps["mask"][0] > 0]
    blended = blended[(np.abs(blended.astype(int) - left).max(-1) > 2) & (np.abs(blended.astype(int) - right).max(-1) > 2)]
    assert len(blended) > 20
    distance = np.abs(blended[:, None, :] - curve[None]).max(-1).min(-1)
    assert distance.max() <= 1.0
    straight = (1 - w.numpy()) * left + w.numpy() * right
    assert np.abs(blended[:, None, :] - straight[None]).max(-1).min(-1).max() > 3


def test_frames_without_body_are_black():
    verts, faces, labels = SPHERE
    frames = np.stack([verts + np.float32([0.0, 0.0, 3.0]), np.full_like(verts, np.nan), verts + np.float32([0.3, 0, 4])])
    maps = render_guidance(frames, faces, labels, CAMERA)
    assert not maps["mask"][1].any() and not maps["depth"][1].any() and not maps["normal"][1].any()
    alone = render_guidance(frames[[0, 2]], faces, labels, CAMERA)
    for layer in maps:
        assert (maps[layer][[0, 2]] == alone[layer]).all()
    # all frames empty: still a well-formed result
    empty = render_guidance(np.full((2, len(verts), 3), np.nan, np.float32), faces, labels, CAMERA)
    assert empty["normal"].shape == (2, 96, 128, 3) and not empty["mask"].any()


def test_body_outside_the_view_or_behind_the_camera():
    maps = render_sphere([(50.0, 0.0, 3.0), (0.0, 0.0, -3.0), (0.0, 0.0, 0.2)])
    assert not maps["mask"][0].any() and not maps["mask"][1].any()
    # a body around the camera: only the part in front of the near plane is drawn, no crash
    assert maps["depth"].dtype == np.uint8


def test_partly_visible_body_normalises_over_visible_pixels():
    maps = render_sphere([(0.45, 0.0, 2.0)])
    mask = maps["mask"][0] > 0
    assert mask[:, -1].any() and mask.sum() > 100
    depth = maps["depth"][0][..., 0][mask]
    assert depth.max() == 255 and depth.min() <= 1


def test_winding_is_normalised():
    verts, faces, labels = SPHERE
    a = render_sphere([(0.1, -0.1, 3.0)])
    b = render_sphere([(0.1, -0.1, 3.0)], faces=faces[:, ::-1].copy())
    union = (a["mask"] > 0) | (b["mask"] > 0)
    for layer in a:
        diff = np.abs(a[layer].astype(int) - b[layer].astype(int))
        diff = diff.max(-1) if diff.ndim == 4 else diff
        assert (diff[union] <= 1).mean() > 0.995, layer


def test_layer_subset_and_tensors():
    maps = render_sphere([(0.0, 0.0, 3.0)], layers=("depth", "mask"))
    assert set(maps) == {"depth", "mask"}
    tensors = maps_to_tensors(maps)
    assert tensors["depth"].dtype == torch.float32 and tensors["depth"].shape == (1, 96, 128, 3)
    assert 0.0 <= tensors["depth"].min() and tensors["depth"].max() == 1.0
    assert torch.equal(tensors["mask"].unique(), torch.tensor([0.0, 1.0]))


def test_progress_is_reported_and_can_cancel():
    calls = []
    verts, faces, labels = SPHERE
    frames = np.stack([verts + np.float32([0, 0, 3 + 0.1 * i]) for i in range(10)])
    render_guidance(frames, faces, labels, CAMERA, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (10, 10) and len(calls) >= 2
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        render_guidance(frames, faces, labels, CAMERA, progress=cancel)


def test_input_errors_are_specific():
    verts, faces, labels = SPHERE
    frames = verts[None] + np.float32([0, 0, 3])
    with pytest.raises(RenderInputError, match="vertices must be"):
        render_guidance(frames[..., :2], faces, labels, CAMERA)
    with pytest.raises(RenderInputError, match="faces index vertices"):
        render_guidance(frames, faces + 10_000, labels, CAMERA)
    with pytest.raises(RenderInputError, match="part_labels must have shape"):
        render_guidance(frames, faces, labels[:-1], CAMERA)
    with pytest.raises(RenderInputError, match="SMPL joint indices"):
        render_guidance(frames, faces, labels + 1, CAMERA)
    with pytest.raises(RenderInputError, match="unknown layer"):
        render_guidance(frames, faces, labels, CAMERA, layers=("depth", "skeleton"))
    partial = frames.copy()
    partial[0, :5] = np.nan
    with pytest.raises(RenderInputError, match="some non-finite vertices"):
        render_guidance(partial, faces, labels, CAMERA)
    with pytest.raises(RenderBackendError, match="unknown render back end"):
        render_guidance(frames, faces, labels, CAMERA, backend="blender")
    if not torch.cuda.is_available():
        with pytest.raises(RenderBackendError, match="CUDA is not available"):
            render_guidance(frames, faces, labels, CAMERA, device="cuda")
    # semantic labels are only needed for the semantic map
    assert render_guidance(frames, faces, None, CAMERA, layers=("mask",))["mask"].any()


def test_palette_is_opencv_viridis_at_ten_times_label():
    import cv2

    bgr = cv2.applyColorMap((10 * np.arange(24)).astype(np.uint8)[:, None], cv2.COLORMAP_VIRIDIS)[:, 0]
    assert (SEMANTIC_LUT_RGB == bgr[:, ::-1]).all()
    assert (part_colors(np.array([0, 23])) == SEMANTIC_LUT_RGB[[0, 23]]).all()


def test_auto_backend_renders_like_torch():
    a = render_sphere([(0.05, 0.02, 3.0)], backend="auto")
    b = render_sphere([(0.05, 0.02, 3.0)], backend="torch")
    union = (a["mask"] > 0) | (b["mask"] > 0)
    assert (np.abs(a["normal"].astype(int) - b["normal"]).max(-1)[union] <= 1).mean() > 0.999


def test_parallel_cpu_workers_match_sequential_and_restore_threads():
    verts, faces, labels = SPHERE
    frames = np.stack([verts + np.float32([0.02 * i, 0, 3 + 0.05 * i]) for i in range(20)])
    frames[9] = np.nan  # a gap splits the batches
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parallel = render_guidance(frames, faces, labels, CAMERA, backend="torch")
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        sequential = render_guidance(frames, faces, labels, CAMERA, backend="torch")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    for layer in parallel:
        assert (parallel[layer] == sequential[layer]).all(), layer
    assert not parallel["mask"][9].any() and parallel["mask"][10].any()


_PLATFORM_PROBE = """
import os, sys
import numpy as np
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_render_api import SPHERE, CAMERA
from champ_core.render import render_guidance
verts, faces, labels = SPHERE
maps = render_guidance(verts[None] + np.float32([0, 0, 3]), faces, labels, CAMERA, backend="pyrender")
import OpenGL.platform
print(os.environ.get("PYOPENGL_PLATFORM"), type(OpenGL.platform.PLATFORM).__name__, int(maps["mask"].sum() // 255))
"""


@pytest.mark.parametrize(("env_value", "expected_platform"), [(None, "egl"), ("osmesa", "osmesa")])
def test_pyrender_respects_user_platform(env_value, expected_platform):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    if env_value is not None:
        env["PYOPENGL_PLATFORM"] = env_value
    tests = Path(__file__).parent
    code = _PLATFORM_PROBE.format(repo=str(tests.parent), tests=str(tests))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    platform, platform_class, covered = result.stdout.split()[-3:]
    assert platform == expected_platform
    assert expected_platform in platform_class.lower()
    reference = render_sphere([(0.0, 0.0, 3.0)], backend="torch")
    assert abs(int(covered) - int(reference["mask"].sum() // 255)) <= 5


def test_render_package_is_light_and_independent_of_the_body_model():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; import champ_core.render, champ_core.render.writer, champ_core.cli.render; "
        "print(sorted(m for m in ('cv2', 'OpenGL', 'pyrender', 'av', 'skimage', 'champ_core.body') if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    for path in (repo / "champ_core" / "render").glob("*.py"):
        text = path.read_text()
        assert "from ..body" not in text and "import champ_core" not in text and "from champ_core" not in text, path


_FALLBACK_PROBE = """
import sys, warnings
import numpy as np
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_render_api import SPHERE, CAMERA
from champ_core.render import RenderBackendError, render_guidance
verts, faces, labels = SPHERE
frames = verts[None] + np.float32([0, 0, 3])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    auto = render_guidance(frames, faces, labels, CAMERA, backend="auto")
torch_maps = render_guidance(frames, faces, labels, CAMERA, backend="torch")
assert all((auto[k] == torch_maps[k]).all() for k in auto)
assert any("pyrender back end unavailable" in str(w.message) for w in caught), [str(w.message) for w in caught]
try:
    render_guidance(frames, faces, labels, CAMERA, backend="pyrender")
except RenderBackendError as exc:
    print("explicit:", "backend='torch'" in str(exc))
"""


def test_auto_falls_back_to_torch_when_opengl_fails():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYOPENGL_PLATFORM="no-such-platform", DISPLAY="")
    tests = Path(__file__).parent
    code = _FALLBACK_PROBE.format(repo=str(tests.parent), tests=str(tests))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("explicit: True")


def test_tensor_output_matches_arrays():
    arrays = render_sphere([(0.0, 0.1, 3.0), (0.2, 0.0, 3.5)])
    tensors = render_sphere([(0.0, 0.1, 3.0), (0.2, 0.0, 3.5)], as_tensors=True)
    for layer in arrays:
        assert isinstance(tensors[layer], torch.Tensor) and tensors[layer].dtype == torch.uint8
        assert (tensors[layer].numpy() == arrays[layer]).all()
    assert torch.equal(maps_to_tensors(tensors)["normal"], maps_to_tensors(arrays)["normal"])
    with pytest.raises(RenderInputError, match="no layers"):
        render_sphere([(0.0, 0.0, 3.0)], layers=())


def test_pyrender_from_another_thread():
    import threading

    here = render_sphere([(0.1, 0.0, 3.0)], backend="pyrender")
    result = {}
    worker = threading.Thread(target=lambda: result.update(render_sphere([(0.1, 0.0, 3.0)], backend="pyrender")))
    worker.start()
    worker.join(timeout=120)
    assert set(result) == set(here)
    for layer in here:
        assert (result[layer] == here[layer]).all(), layer


@pytest.mark.parametrize("backend", ["torch", "pyrender"])
def test_principal_point_shifts_the_image(backend):
    verts, faces, labels = SPHERE
    frames = verts[None] + np.float32([0.0, 0.0, 3.0])
    shifted = Camera(CAMERA.fx, CAMERA.fy, CAMERA.cx + 8, CAMERA.cy - 5, CAMERA.width, CAMERA.height)
    a = render_guidance(frames, faces, labels, CAMERA, backend=backend)
    b = render_guidance(frames, faces, labels, shifted, backend=backend)
    for layer in a:
        expected = np.roll(np.roll(a[layer], 8, axis=2), -5, axis=1)
        diff = np.abs(expected.astype(int) - b[layer].astype(int))
        assert (diff <= 1).mean() > 0.999, layer
    assert (np.roll(np.roll(a["mask"], 8, axis=2), -5, axis=1) == b["mask"]).all()
