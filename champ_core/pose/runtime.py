"""Running the two networks: onnxruntime sessions, or TorchScript for the pose network.

Both wrappers take and return numpy float32 arrays and check the network's signature once when
loading, so a wrong file is refused by name instead of failing deep inside a run.

TorchScript: `torch.jit.load` (with `map_location`) runs on the CPU and on CUDA. A TorchScript
archive holds TorchScript code and tensors only (no arbitrary Python pickles), but it is code:
load files you trust, like any model. The batch-5 export takes exactly 5 crops, so batches are
padded to a multiple of 5.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .errors import PoseModelError

log = logging.getLogger("champ")


def onnx_providers(device: str) -> list[str]:
    """onnxruntime execution providers for a device name ('cpu', 'cuda', 'cuda:1')."""
    import onnxruntime as ort

    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("pose: onnxruntime has no CUDA provider here (install onnxruntime-gpu); running on the CPU")
    return ["CPUExecutionProvider"]


class OnnxNetwork:
    """One onnxruntime session with a single image input (N, 3, H, W)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", outputs: int = 1, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a runtime requirement
            raise PoseModelError("pose detection needs onnxruntime: pip install onnxruntime") from exc
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=onnx_providers(device))
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise PoseModelError(f"{self.path} is not a loadable ONNX model ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200]}); download it again") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(self.session.get_outputs()) != outputs:
            raise PoseModelError(f"{self.path} does not have the expected signature (one image input, {outputs} "
                                 f"output(s)); is it the right file?")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.batch = shape[0] if isinstance(shape[0], int) else None  # None: any batch size
        self.size = (shape[3], shape[2]) if all(isinstance(s, int) for s in shape[2:]) else None  # (w, h)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.batch is None or batch.shape[0] == self.batch:
            return list(self.session.run(None, {self.input_name: batch}))
        # fixed batch size: run in chunks, the last one padded
        return _chunked(lambda b: list(self.session.run(None, {self.input_name: b})), batch, self.batch)


def _chunked(run, batch: np.ndarray, size: int) -> list[np.ndarray]:
    outs: list[list[np.ndarray]] = []
    for start in range(0, batch.shape[0], size):
        chunk = batch[start:start + size]
        real = chunk.shape[0]
        if real < size:
            chunk = np.concatenate([chunk, np.zeros((size - real, *chunk.shape[1:]), dtype=chunk.dtype)])
        outs.append([o[:real] for o in run(chunk)])
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


class TorchScriptPoseNetwork:
    """The TorchScript pose export: (B, 3, 384, 288) -> (simcc_x, simcc_y); B = 5 for the bs5 file."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", batch: int | None = None) -> None:
        import torch

        self.path = Path(path)
        self.device = torch.device(device if not str(device).startswith("cuda") or torch.cuda.is_available() else "cpu")
        try:
            self.module = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as exc:  # torch raises RuntimeError with long C++ messages
            raise PoseModelError(f"{self.path} is not a loadable TorchScript file ({type(exc).__name__}); "
                                 "download it again or use dw-ll_ucoco_384.onnx") from exc
        self.batch = batch if batch is not None else (5 if "bs5" in self.path.name else None)
        params = list(self.module.parameters())
        self.dtype = params[0].dtype if params else torch.float32
        self.size = None

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, self.dtype)
            out = self.module(x)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise PoseModelError(f"{self.path} returned {type(out).__name__}, not the (simcc_x, simcc_y) pair of "
                                 "DWPose; is it the right file?")
        return [o.float().cpu().numpy() for o in out]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.batch is None:
            return self._run(batch)
        return _chunked(self._run, batch, self.batch)
