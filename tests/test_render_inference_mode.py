"""Rendering under torch.inference_mode(), as ComfyUI runs every node, with torch's own thread count.

Render workers are threads; autograd modes are per thread. Output tensors made by the caller under
inference mode are inference tensors, and writing into them from a worker outside inference mode
fails ("Inplace update to inference tensor outside InferenceMode"). It takes at least two torch
threads (two workers) and more than one frame batch, so the test checks both hold.
"""

from __future__ import annotations

import numpy as np
import torch

from champ_core.body.model import open_body_model
from champ_core.body.motions import builtin_motion, default_camera
from champ_core.render.api import cpu_workers, render_guidance
from champ_core.render.backends import resolve_backend

LAYERS = ("depth", "normal", "semantic_map", "mask")


def _vertices(frames: int, size: int):
    body = open_body_model()
    motion = builtin_motion("walk", body, seconds=frames / 24, fps=24.0, camera=default_camera(size, size))
    return body, motion.pose(body).vertices.float(), motion.camera


def test_render_under_inference_mode_on_worker_threads_equals_plain_render():
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))  # ComfyUI's default on these 2-core machines; never fewer than 2
    try:
        assert cpu_workers() >= 2 or (torch.get_num_threads() >= 2 and __import__("os").cpu_count() == 1)
        size = 128
        batch = resolve_backend("torch", "cpu").frames_per_batch
        frames = 3 * batch  # several batches, so several workers write at once
        body, vertices, camera = _vertices(frames, size)
        with torch.inference_mode():
            inside = render_guidance(vertices, body.faces, body.part_labels, camera, LAYERS, backend="torch",
                                     device="cpu")
        outside = render_guidance(vertices, body.faces, body.part_labels, camera, LAYERS, backend="torch",
                                  device="cpu")
    finally:
        torch.set_num_threads(threads)
    for name in LAYERS:
        assert inside[name].shape[0] == frames
        np.testing.assert_array_equal(inside[name], outside[name])
    assert 0.02 < (inside["mask"] > 0).mean() < 0.9
