"""Back ends. A back end only answers "which face is visible at each pixel centre"; `shading` does the rest.

- "torch": pure PyTorch z-buffer rasterizer (CPU or CUDA). Needs nothing but torch.
- "pyrender": OpenGL through pyrender's EGL / OSMesa platforms (optional install). OpenGL draws on
  the CPU; with a CUDA `device` the shading still runs there.
- "auto": "torch" on a CUDA device; on the CPU, "pyrender" when it is installed and an OpenGL context
  opens, else "torch" (an OpenGL failure is reported once as a warning, never raised).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass

import torch

from ..camera import Camera

BACKENDS = ("auto", "torch", "pyrender")


class RenderBackendError(ValueError):
    """An unknown back end, or one that cannot run here (the message says what to install or pick)."""


@dataclass
class TorchBackend:
    device: torch.device
    frames_per_batch: int = 8
    name: str = "torch"

    def visible_faces(self, verts: torch.Tensor, faces: torch.Tensor, camera: Camera):
        """(pixel, face, (frame, row, col)) of every covered pixel centre; see `rasterize_spans`."""
        from .raster_torch import rasterize_spans

        return rasterize_spans(verts, faces, camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height)


@dataclass
class PyrenderBackend:
    device: torch.device
    frames_per_batch: int = 8
    name: str = "pyrender"

    def visible_faces(self, verts: torch.Tensor, faces: torch.Tensor, camera: Camera):
        from .raster_gl import rasterize_face_ids_gl

        ids = rasterize_face_ids_gl(verts, faces, camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height)
        t, row, col = (ids >= 0).nonzero(as_tuple=True)
        pixel = (t * camera.height + row) * camera.width + col
        face = ids.view(-1).index_select(0, pixel)
        # OpenGL rasterizes on the CPU; shading then runs on the requested device
        dev = verts.device
        return pixel.to(dev), face.to(dev), (t.to(dev), row.to(dev), col.to(dev))


def pyrender_installed() -> bool:
    return importlib.util.find_spec("pyrender") is not None and importlib.util.find_spec("OpenGL") is not None


def opengl_works() -> bool:
    """Whether an OpenGL context opens here (opened once, then kept for rendering)."""
    from .raster_gl import OpenGLUnavailableError, gl_rasterizer

    try:
        gl_rasterizer().face_ids(torch.zeros(0, 3, 3).numpy(), torch.zeros(1, 3, dtype=torch.int64).numpy(),
                                 1.0, 1.0, 0.5, 0.5, 1, 1)  # fmt: skip
        return True
    except OpenGLUnavailableError as exc:
        warnings.warn(f"pyrender back end unavailable, using the torch rasterizer: {exc}", stacklevel=3)
        return False


_AUTO_CHOICE: str | None = None


def resolve_backend(backend: str, device=None):
    """The back end object for a name; see the module docstring for "auto"."""
    global _AUTO_CHOICE
    if backend not in BACKENDS:
        raise RenderBackendError(f"unknown render back end {backend!r}; choose one of {', '.join(BACKENDS)}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RenderBackendError(f"device {device!r} was asked for but CUDA is not available; use device='cpu'")
    if backend == "auto":
        if dev.type != "cpu":
            backend = "torch"
        else:
            if _AUTO_CHOICE is None:
                _AUTO_CHOICE = "pyrender" if pyrender_installed() and opengl_works() else "torch"
            backend = _AUTO_CHOICE
    if backend == "pyrender":
        if not pyrender_installed():
            raise RenderBackendError(
                "backend='pyrender' needs pyrender and PyOpenGL: pip install -r requirements-optional.txt "
                "and then pip install --no-deps pyrender==0.1.45 (or use backend='torch')"
            )
        return PyrenderBackend(dev)
    # On a GPU bigger batches amortise kernel launches (a 512x512 frame needs a few tens of MB).
    return TorchBackend(dev, frames_per_batch=8 if dev.type == "cpu" else 32)
