"""Visibility through OpenGL: pyrender's off-screen platforms (EGL or OSMesa) plus one tiny shader.

The optional back end. pyrender supplies the head-less context (its EGL / OSMesa / pyglet platform
classes); the drawing itself is a single pass of our own: the vertex shader applies the pinhole
camera, the fragment shader writes `gl_PrimitiveID` (= the face index) into a 32-bit integer
target. There is no multisampling, no lighting and no colour management, so the result is the same
face-index image the torch rasterizer produces (up to GL's fixed-point edge rules on pixel centres
that lie exactly on an edge), and `shading` turns it into maps exactly as for the torch back end.

Platform choice never overrides a `PYOPENGL_PLATFORM` the user set. When it is unset on Linux we set
it to "egl" (pyrender would otherwise try an X display), before PyOpenGL is first imported.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import torch

from .backends import RenderBackendError
from .geometry import NEAR_CLIP

_VERTEX_SHADER = """
#version 330 core
layout(location = 0) in vec3 position;   // camera frame, OpenCV axes
uniform vec4 intrinsics;                 // fx, fy, cx, cy in pixels
uniform vec2 image_size;                 // W, H
uniform vec2 depth_range;                // near, far (planar z)
void main() {
    float z = position.z;
    // Continuous pixel coordinates u, v (pixel centres at i + 0.5); NDC is 2u/W - 1 and, so that
    // GL's row 0 is image row 0 (no flip on read-back), 2v/H - 1. Multiplying by w = z keeps the
    // interpolation perspective-correct.
    float u = intrinsics.x * position.x + intrinsics.z * z;
    float v = intrinsics.y * position.y + intrinsics.w * z;
    float n = depth_range.x, f = depth_range.y;
    gl_Position = vec4(2.0 * u / image_size.x - z, 2.0 * v / image_size.y - z,
                       (f + n) / (f - n) * z - 2.0 * f * n / (f - n), z);
}
"""

_FRAGMENT_SHADER = """
#version 330 core
layout(location = 0) out int face_index;
void main() { face_index = gl_PrimitiveID; }
"""


class OpenGLUnavailableError(RenderBackendError):
    """No OpenGL context could be created (message says which platform and how to fix it)."""


def prepare_platform() -> str:
    """Pick PyOpenGL's platform before OpenGL is imported; returns the platform in use."""
    if "PYOPENGL_PLATFORM" not in os.environ and "OpenGL" not in sys.modules and sys.platform.startswith("linux"):
        os.environ["PYOPENGL_PLATFORM"] = "egl"
    # pyrender 0.1.45 still uses np.infty, removed in numpy 2.
    if not hasattr(np, "infty"):
        np.infty = np.inf
    return os.environ.get("PYOPENGL_PLATFORM", "")


class GLFaceRasterizer:
    """One GL context (created lazily, reused) that draws face-index images."""

    def __init__(self) -> None:
        self._platform = None
        self._fbo_size: tuple[int, int] | None = None
        self._faces_key = None

    # -- context ---------------------------------------------------------------------------
    def _create_context(self, width: int, height: int) -> None:
        platform_name = prepare_platform()
        try:
            if platform_name == "egl":
                from pyrender.platforms import egl

                device = egl.get_device_by_index(int(os.environ.get("EGL_DEVICE_ID", "0")))
                platform = egl.EGLPlatform(width, height, device=device)
            elif platform_name == "osmesa":
                from pyrender.platforms.osmesa import OSMesaPlatform

                platform = OSMesaPlatform(width, height)
            else:
                from pyrender.platforms.pyglet_platform import PygletPlatform

                platform = PygletPlatform(width, height)
            platform.init_context()
            platform.make_current()
        except Exception as exc:  # any failure here means "no usable OpenGL"
            raise OpenGLUnavailableError(
                f"could not create an OpenGL context with PYOPENGL_PLATFORM={platform_name or '(unset)'}: "
                f"{type(exc).__name__}: {exc}. Install EGL (Debian/Ubuntu: libegl1 libegl-mesa0 "
                "libgl1-mesa-dri) or OSMesa (libosmesa6 with PyOpenGL==3.1.10 and PYOPENGL_PLATFORM=osmesa), "
                "or use backend='torch', which needs no OpenGL"
            ) from exc
        self._platform = platform
        self._build_program()

    def _build_program(self) -> None:
        from OpenGL import GL as gl
        from OpenGL.GL import shaders

        self._program = shaders.compileProgram(
            shaders.compileShader(_VERTEX_SHADER, gl.GL_VERTEX_SHADER),
            shaders.compileShader(_FRAGMENT_SHADER, gl.GL_FRAGMENT_SHADER),
            validate=False,
        )
        self._vao = gl.glGenVertexArrays(1)
        self._vbo, self._ibo = gl.glGenBuffers(2)
        gl.glBindVertexArray(self._vao)
        gl.glBindBuffer(gl.GL_ARRAY_BUFFER, self._vbo)
        gl.glEnableVertexAttribArray(0)
        gl.glVertexAttribPointer(0, 3, gl.GL_FLOAT, gl.GL_FALSE, 0, None)
        gl.glBindBuffer(gl.GL_ELEMENT_ARRAY_BUFFER, self._ibo)
        self._uniforms = {
            name: gl.glGetUniformLocation(self._program, name) for name in ("intrinsics", "image_size", "depth_range")
        }

    def _ensure_framebuffer(self, width: int, height: int) -> None:
        from OpenGL import GL as gl

        if self._fbo_size == (width, height):
            return
        if self._fbo_size is not None:
            gl.glDeleteFramebuffers(1, [self._fbo])
            gl.glDeleteRenderbuffers(2, [self._color_rb, self._depth_rb])
        self._color_rb, self._depth_rb = gl.glGenRenderbuffers(2)
        gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, self._color_rb)
        gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, gl.GL_R32I, width, height)
        gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, self._depth_rb)
        gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, gl.GL_DEPTH_COMPONENT32F, width, height)
        self._fbo = gl.glGenFramebuffers(1)
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self._fbo)
        gl.glFramebufferRenderbuffer(gl.GL_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0, gl.GL_RENDERBUFFER, self._color_rb)
        gl.glFramebufferRenderbuffer(gl.GL_FRAMEBUFFER, gl.GL_DEPTH_ATTACHMENT, gl.GL_RENDERBUFFER, self._depth_rb)
        status = gl.glCheckFramebufferStatus(gl.GL_FRAMEBUFFER)
        if status != gl.GL_FRAMEBUFFER_COMPLETE:
            raise OpenGLUnavailableError(f"OpenGL cannot render to a 32-bit integer target (status {status})")
        self._fbo_size = (width, height)

    # -- drawing ---------------------------------------------------------------------------
    def face_ids(self, vertices: np.ndarray, faces: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                 width: int, height: int) -> np.ndarray:  # fmt: skip
        """(T, H, W) int32 face index per pixel centre, -1 for background; back faces culled."""
        prepare_platform()  # before the first `import OpenGL`
        from OpenGL import GL as gl

        if self._platform is None:
            self._create_context(width, height)
        self._platform.make_current()
        self._ensure_framebuffer(width, height)
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self._fbo)
        gl.glViewport(0, 0, width, height)
        gl.glUseProgram(self._program)
        gl.glBindVertexArray(self._vao)
        faces32 = np.ascontiguousarray(faces, dtype=np.uint32)
        key = (faces32.shape, hash(faces32.tobytes()))
        if key != self._faces_key:
            gl.glBindBuffer(gl.GL_ELEMENT_ARRAY_BUFFER, self._ibo)
            gl.glBufferData(gl.GL_ELEMENT_ARRAY_BUFFER, faces32.nbytes, faces32, gl.GL_STATIC_DRAW)
            self._faces_key = key
        gl.glUniform4f(self._uniforms["intrinsics"], fx, fy, cx, cy)
        gl.glUniform2f(self._uniforms["image_size"], float(width), float(height))
        gl.glEnable(gl.GL_DEPTH_TEST)
        gl.glDepthFunc(gl.GL_LESS)
        gl.glDisable(gl.GL_MULTISAMPLE)
        gl.glDisable(gl.GL_BLEND)
        gl.glEnable(gl.GL_CULL_FACE)
        gl.glCullFace(gl.GL_BACK)
        # Outward faces seen from outside are clockwise in image coordinates (y down), and the
        # NDC mapping above keeps that handedness in GL's window coordinates.
        gl.glFrontFace(gl.GL_CW)
        out = np.empty((len(vertices), height, width), dtype=np.int32)
        clear_index = np.array([-1, 0, 0, 0], dtype=np.int32)
        for t, frame in enumerate(vertices):
            frame = np.ascontiguousarray(frame, dtype=np.float32)
            z = frame[:, 2]
            near = max(NEAR_CLIP, float(z.min()) * 0.98)
            far = max(float(z.max()) * 1.02, 2.0 * near)
            gl.glUniform2f(self._uniforms["depth_range"], near, far)
            gl.glBindBuffer(gl.GL_ARRAY_BUFFER, self._vbo)
            gl.glBufferData(gl.GL_ARRAY_BUFFER, frame.nbytes, frame, gl.GL_STREAM_DRAW)
            gl.glClearBufferiv(gl.GL_COLOR, 0, clear_index)
            gl.glClearBufferfv(gl.GL_DEPTH, 0, np.array([1.0], dtype=np.float32))
            gl.glDrawElements(gl.GL_TRIANGLES, faces32.size, gl.GL_UNSIGNED_INT, None)
            gl.glReadPixels(0, 0, width, height, gl.GL_RED_INTEGER, gl.GL_INT, out[t])
        return out


_PER_THREAD = threading.local()


def gl_rasterizer() -> GLFaceRasterizer:
    """This thread's rasterizer: a GL context is current in one thread only, so each thread that
    renders (ComfyUI's worker, a test, the CLI) gets its own, created on first use and kept."""
    if not hasattr(_PER_THREAD, "rasterizer"):
        _PER_THREAD.rasterizer = GLFaceRasterizer()
    return _PER_THREAD.rasterizer


def rasterize_face_ids_gl(vertices: torch.Tensor, faces: torch.Tensor, fx, fy, cx, cy, width, height) -> torch.Tensor:
    ids = gl_rasterizer().face_ids(
        vertices.detach().cpu().numpy(), faces.cpu().numpy(), fx, fy, cx, cy, width, height
    )
    return torch.from_numpy(ids).to(torch.int64)
