"""`render_guidance`: SMPL-style meshes to Champ's depth / normal / semantic / mask guidance maps."""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..camera import Camera
from .backends import resolve_backend
from .colors import NUM_PART_LABELS, SEMANTIC_LUT_RGB, srgb_to_linear
from .geometry import orient_faces_outward, vertex_normals
from .shading import MAP_LAYERS, shade_maps

# Pixels rendered together (frames x H x W); bounds the per-batch working memory (~100 bytes/pixel).
PIXELS_PER_BATCH_CPU = 1 << 22
PIXELS_PER_BATCH_GPU = 1 << 24


class RenderInputError(ValueError):
    """Inputs `render_guidance` cannot render (the message says what is wrong and what to pass)."""


ProgressCallback = Callable[[int, int], None]


def _check_inputs(vertices, faces, part_labels, camera: Camera, layers: Sequence[str]):
    vertices = np.asarray(vertices) if not isinstance(vertices, torch.Tensor) else vertices.detach().cpu().numpy()
    if vertices.ndim == 2:
        vertices = vertices[None]
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise RenderInputError(f"vertices must be (T, V, 3) camera-frame points; got shape {vertices.shape}")
    faces = np.asarray(faces.cpu() if isinstance(faces, torch.Tensor) else faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.size == 0:
        raise RenderInputError(f"faces must be (F, 3) vertex indices; got shape {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise RenderInputError(f"faces must be integers; got dtype {faces.dtype}")
    num_vertices = vertices.shape[1]
    if faces.min() < 0 or faces.max() >= num_vertices:
        raise RenderInputError(f"faces index vertices 0..{faces.max()} but there are only {num_vertices} vertices")
    if not layers:
        raise RenderInputError(f"no layers asked for; choose from {MAP_LAYERS}")
    unknown = [name for name in layers if name not in MAP_LAYERS]
    if unknown:
        raise RenderInputError(f"unknown layer(s) {unknown}; choose from {MAP_LAYERS}")
    labels = None
    if "semantic_map" in layers:
        if part_labels is None:
            raise RenderInputError("the semantic map needs part_labels (V,) = argmax of the skinning weights")
        labels = np.asarray(part_labels.cpu() if isinstance(part_labels, torch.Tensor) else part_labels)
        if labels.shape != (num_vertices,):
            raise RenderInputError(f"part_labels must have shape ({num_vertices},); got {labels.shape}")
        if labels.min() < 0 or labels.max() >= NUM_PART_LABELS:
            raise RenderInputError(f"part_labels must be SMPL joint indices 0..{NUM_PART_LABELS - 1}")
    if camera.width <= 0 or camera.height <= 0:
        raise RenderInputError(f"camera image size must be positive; got {camera.width}x{camera.height}")
    if not (camera.fx > 0 and camera.fy > 0):
        raise RenderInputError(f"camera focal lengths must be positive; got fx={camera.fx}, fy={camera.fy}")
    # A frame is either a body or "no body" (all NaN); partly NaN frames are a caller bug.
    finite = np.isfinite(vertices).all(-1)
    partial = finite.any(-1) & ~finite.all(-1)
    if partial.any():
        raise RenderInputError(
            f"frame(s) {np.flatnonzero(partial)[:5].tolist()} have some non-finite vertices; "
            "mark a frame without a body by setting all its vertices to NaN"
        )
    return vertices.astype(np.float32, copy=False), faces.astype(np.int64), labels, finite.all(-1)


def render_guidance(
    vertices,
    faces,
    part_labels,
    camera: Camera,
    layers: Sequence[str] = MAP_LAYERS,
    backend: str = "auto",
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    as_tensors: bool = False,
) -> dict[str, np.ndarray] | dict[str, torch.Tensor]:
    """Render Champ's guidance maps for T frames of one mesh topology.

    vertices (T, V, 3) in the camera frame (OpenCV axes, metres), faces (F, 3), part_labels (V,)
    SMPL joint index per vertex, camera: pinhole `Camera`. Returns uint8 arrays: mask (T, H, W)
    with values 0/255, depth (grey), normal and semantic_map (T, H, W, 3). Frames whose vertices are
    all NaN render black with an empty mask. `progress(done_frames, total_frames)` is called after
    each batch and may raise to cancel. `as_tensors=True` returns uint8 torch tensors on the render
    device instead (no copy to the host, e.g. to feed the models on a GPU). On the CPU, frame
    batches are rendered by one single-threaded worker per torch thread (torch's thread count is
    set to 1 for the duration of the call).
    """
    layers = tuple(layers)
    verts_np, faces_np, labels, has_body = _check_inputs(vertices, faces, part_labels, camera, layers)
    backend_impl = resolve_backend(backend, device)
    dev = backend_impl.device
    num_frames = verts_np.shape[0]
    height, width = camera.height, camera.width

    faces_t = torch.from_numpy(faces_np).to(dev)
    if has_body.any():
        faces_t = orient_faces_outward(torch.from_numpy(verts_np[np.flatnonzero(has_body)[0]]).to(dev), faces_t)
    linear_colors = None
    if labels is not None:
        linear_colors = srgb_to_linear(torch.from_numpy(SEMANTIC_LUT_RGB[labels.astype(np.int64)]).to(dev).double() / 255.0)

    out = {
        name: torch.zeros((num_frames, height, width) if name == "mask" else (num_frames, height, width, 3),
                          dtype=torch.uint8, device=dev if as_tensors else "cpu")
        for name in layers
    }  # fmt: skip
    # Fewer frames per batch for big images: the z-buffer is 8 bytes per pixel of the batch.
    pixel_budget = PIXELS_PER_BATCH_CPU if dev.type == "cpu" else PIXELS_PER_BATCH_GPU
    batch_frames = max(1, min(backend_impl.frames_per_batch, pixel_budget // (height * width)))
    batches = _contiguous_batches(np.flatnonzero(has_body), batch_frames)
    done = num_frames - int(has_body.sum())
    on_cpu = dev.type == "cpu"
    in_place = on_cpu or as_tensors  # the output lives on the render device

    def targets(start: int, stop: int) -> dict[str, torch.Tensor] | None:
        # the shader writes straight into the output (zero-filled, contiguous frame slices)
        return {name: out[name][start:stop] for name in layers} if in_place else None

    def finish(start: int, stop: int, maps: dict[str, torch.Tensor]) -> None:
        nonlocal done
        if not in_place:
            for name, value in maps.items():
                out[name][start:stop] = value.cpu()
        done += stop - start
        if progress is not None:
            progress(done, num_frames)

    workers = cpu_workers() if on_cpu else 1
    if workers <= 1 or len(batches) <= 1:
        for start, stop in batches:
            verts = torch.from_numpy(verts_np[start:stop]).to(dev)
            visible = backend_impl.visible_faces(verts, faces_t, camera)
            maps = render_batch(visible, verts, faces_t, linear_colors, camera, layers, targets(start, stop))
            finish(start, stop, maps)
    else:
        _render_in_parallel(
            backend_impl, batches, verts_np, faces_t, linear_colors, camera, layers, workers, targets, finish
        )
    if progress is not None and not batches:
        progress(num_frames, num_frames)
    return out if as_tensors else {name: value.numpy() for name, value in out.items()}


def _contiguous_batches(frames: np.ndarray, size: int) -> list[tuple[int, int]]:
    """(start, stop) ranges of consecutive frame indices, at most `size` long."""
    batches = []
    if len(frames) == 0:
        return batches
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    for run in np.split(frames, breaks):
        for i in range(0, len(run), size):
            chunk = run[i : i + size]
            batches.append((int(chunk[0]), int(chunk[-1]) + 1))
    return batches


def iter_guidance(
    vertices,
    faces,
    part_labels,
    camera: Camera,
    layers: Sequence[str] = MAP_LAYERS,
    backend: str = "auto",
    device: str | torch.device | None = None,
    chunk_frames: int = 64,
    as_tensors: bool = False,
):
    """`render_guidance` in chunks, for long motions: yields (start, stop, maps of frames start..stop).

    Only one chunk of maps is in memory at a time (a 512x512 frame's four maps take 3.1 MB).
    """
    layers = tuple(layers)
    verts_np, faces_np, labels, _ = _check_inputs(vertices, faces, part_labels, camera, layers)
    if chunk_frames < 1:
        raise RenderInputError(f"chunk_frames must be at least 1; got {chunk_frames}")
    for start in range(0, verts_np.shape[0], chunk_frames):
        stop = min(start + chunk_frames, verts_np.shape[0])
        maps = render_guidance(verts_np[start:stop], faces_np, labels, camera, layers, backend, device,
                               as_tensors=as_tensors)  # fmt: skip
        yield start, stop, maps


def cpu_workers() -> int:
    """Frame batches rendered concurrently on the CPU: one per intra-op thread torch would use."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


@contextlib.contextmanager
def _single_threaded_torch():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _render_in_parallel(backend_impl, batches, verts_np, faces, linear_colors, camera, layers, workers, targets, finish):
    """CPU rendering with one single-threaded worker per core, each on its own frame batch.

    The maps are hundreds of small tensor operations; with torch's own intra-op threads every one of
    them ends in a thread barrier, which costs more than the work when the cores are shared with
    other processes (measured here: 2-10x slower on a busy 2-core machine). Whole batches per
    worker need no barriers. OpenGL stays on the calling thread (its context belongs to it); only
    shading moves to the workers. At most 2 batches per worker are in flight, so memory stays
    bounded and progress keeps flowing; results are delivered in order.
    """
    uses_gl = backend_impl.name == "pyrender"
    # Autograd modes are per thread and worker threads start with the defaults. The output tensors
    # were made on the calling thread: under torch.inference_mode() (as ComfyUI runs every node)
    # they are inference tensors, which only code inside inference mode may write into.
    inference = torch.is_inference_mode_enabled()
    grad = torch.is_grad_enabled()

    def work(verts: torch.Tensor, visible, target):
        torch.set_num_threads(1)  # this worker thread's own OpenMP setting
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            if visible is None:
                visible = backend_impl.visible_faces(verts, faces, camera)
            return render_batch(visible, verts, faces, linear_colors, camera, layers, target)

    with _single_threaded_torch(), ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        try:
            for start, stop in batches:
                verts = torch.from_numpy(verts_np[start:stop])
                visible = backend_impl.visible_faces(verts, faces, camera) if uses_gl else None
                pending.append((start, stop, pool.submit(work, verts, visible, targets(start, stop))))
                while len(pending) >= 2 * workers:
                    first, last, future = pending.popleft()
                    finish(first, last, future.result())
            while pending:
                first, last, future = pending.popleft()
                finish(first, last, future.result())
        except BaseException:
            for _, _, future in pending:
                future.cancel()
            raise


def maps_to_tensors(maps: dict[str, np.ndarray], device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """uint8 maps -> float32 tensors in [0, 1] for the models (ComfyUI IMAGE layout (T, H, W, 3);
    mask (T, H, W)). The guidance encoders take (B, 3, F, H, W): permute at the call site."""
    def as_tensor(value) -> torch.Tensor:
        return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))

    return {name: as_tensor(value).to(device).float().div_(255.0) for name, value in maps.items()}


def render_batch(visible, verts: torch.Tensor, faces: torch.Tensor, linear_colors, camera: Camera, layers, targets=None):
    """Maps for a batch of frames that all contain a body, given the back end's visible faces."""
    pixel, face, coords = visible
    normals = vertex_normals(verts, faces) if "normal" in layers else None
    return shade_maps(
        pixel, face, (verts.shape[0], camera.height, camera.width), verts, faces, normals, linear_colors,
        camera.fx, camera.fy, camera.cx, camera.cy, layers, targets, coords,
    )  # fmt: skip
