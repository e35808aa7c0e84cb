"""Safe, strict weight loading: `.pth`/`.ckpt` (torch.load with weights_only=True) and safetensors.

Networks are built on the meta device and the file's tensors are assigned straight into them
(`load_state_dict(assign=True)`), one tensor converted at a time: no second copy of the model.
Loading is strict: every missing or unexpected tensor is reported by name. Tensors the reference
keeps in its files but never uses are dropped by explicit, documented rules (`UNUSED_RULES`).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"

# safetensors dtype names -> torch dtypes (what `get_slice(name).get_dtype()` reports)
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class TensorFile:
    """Names, shapes and (lazily) the tensors of one weight file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"weight file {self.path} does not exist")
        suffix = self.path.suffix.lower()
        if suffix == SAFETENSORS_SUFFIX:
            self._open_safetensors()
        elif suffix in PICKLE_SUFFIXES:
            self._open_pickle()
        else:
            raise CheckpointError(f"{self.path}: unknown weight file type {suffix!r} "
                                  f"(expected {SAFETENSORS_SUFFIX} or one of {', '.join(PICKLE_SUFFIXES)})")

    def _open_safetensors(self) -> None:
        from safetensors import safe_open

        try:
            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            slices = {k: self._handle.get_slice(k) for k in self._handle.keys()}
            self.shapes = {k: tuple(v.get_shape()) for k, v in slices.items()}
            self.dtypes = {k: SAFETENSORS_DTYPES.get(v.get_dtype(), v.get_dtype()) for k, v in slices.items()}
            self.metadata = self._handle.metadata() or {}
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{self.path} is not a readable safetensors file ({exc})") from exc
        self._tensors = None

    def _open_pickle(self) -> None:
        self.metadata = {}
        self._handle = None
        try:
            try:
                data = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                    raise
                data = torch.load(self.path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
        except pickle.UnpicklingError as exc:
            detail = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), None)
            if detail is None:
                raise CheckpointError(f"{self.path} is not a readable PyTorch checkpoint (unpickling failed)") from exc
            raise CheckpointError(
                f"refused to load {self.path}: it contains pickled objects other than tensors, and unpickling "
                f"them could run code ({detail}). Only plain tensor state dicts are accepted (torch.load "
                "weights_only=True); get the file from a trusted source or convert it to safetensors with a "
                "tool you trust."
            ) from exc
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise CheckpointError(f"{self.path} is not a readable PyTorch checkpoint ({exc})") from exc
        if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
            data = data["state_dict"]  # e.g. Lightning-style wrappers
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{self.path} does not hold a state dict (found {type(data).__name__})")
        not_tensors = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
        if not_tensors:
            raise CheckpointError(f"{self.path}: entries that are not tensors: {', '.join(map(str, not_tensors))}")
        self._tensors = dict(data)
        self.shapes = {k: tuple(v.shape) for k, v in self._tensors.items()}
        self.dtypes = {k: v.dtype for k, v in self._tensors.items()}

    def keys(self) -> list[str]:
        return list(self.shapes)

    def get(self, key: str) -> torch.Tensor:
        if self._tensors is not None:
            return self._tensors[key]
        return self._handle.get_tensor(key)

    def get_checked(self, key: str) -> torch.Tensor:
        """`get`, refusing a floating-point tensor that holds NaN or infinite values."""
        tensor = self.get(key)
        check_finite(tensor, key, self.path)
        return tensor


def check_finite(tensor: torch.Tensor, name: str, where) -> None:
    """A CheckpointError naming the tensor when it holds NaN or infinite values (they give black frames)."""
    if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise CheckpointError(f"{where}: tensor {name} holds {bad} NaN or infinite value(s) out of {tensor.numel()}; "
                              "the file is damaged (or was saved from a diverged training run): get a good copy")


# ----------------------------------------------------------------------------------------------
# Known-unused tensors: (component, regex, why). Matching tensors are dropped, never loaded.

UNUSED_RULES: dict[str, list[tuple[str, str]]] = {
    "guidance_encoder": [
        (r"guidance_attention\.", "the reference builds a 'guidance_attention' block but never calls it "
                                  "(the released files most likely lack it)"),
        # attentions.<i>. for every i except the last: added by `guidance_encoder_unused_rules`
    ],
}

# Only on request (`load_reference_unet(..., drop_output_head=True)`, e.g. to start training from an
# SD1.5 UNet): Champ's reference_unet.pth has no output head, so a file with one is more likely a
# swapped denoising_unet.pth and is refused by default.
OUTPUT_HEAD_RULE = (r"conv_norm_out\.|conv_out\.", "an SD1.5 UNet's output head: the ReferenceNet has none")


def guidance_encoder_renames(num_attention_blocks: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The reference runs only `attentions.<last>`; it becomes `attention`, the others are unused."""
    last = num_attention_blocks - 1
    renames = [(f"attentions.{last}.", "attention.")]
    unused = list(UNUSED_RULES["guidance_encoder"])
    unused += [(rf"attentions\.{i}\.", "built by the reference but never run in its forward") for i in range(last)]
    return renames, unused


def map_names(
    names: Iterable[str], renames: list[tuple[str, str]] = (), unused: list[tuple[str, str]] = ()
) -> tuple[dict[str, str], list[str]]:
    """file name -> module name for the tensors to load, and the names dropped as known-unused."""
    compiled = [re.compile(pattern) for pattern, _ in unused]
    mapping, dropped = {}, []
    for name in names:
        if any(p.match(name) for p in compiled):
            dropped.append(name)
            continue
        target = name
        for prefix, replacement in renames:
            if name.startswith(prefix):
                target = replacement + name[len(prefix):]
                break
        mapping[name] = target
    return mapping, dropped


def build_on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return factory()


def _dtype_kind(dtype) -> str:
    if not isinstance(dtype, torch.dtype):
        return f"unsupported ({dtype})"
    if dtype.is_floating_point:
        return "floating point"
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "integer"


def check_names(module: nn.Module, shapes: Mapping[str, tuple], what: str,
                dtypes: Mapping[str, torch.dtype] | None = None) -> None:
    """Raise a CheckpointError naming every missing, unexpected, wrongly shaped or wrongly typed tensor.

    dtypes (module name -> the file's dtype): a file tensor must be of the network tensor's kind
    (floating point for weights; integer/bool buffers stay integer/bool); precision may differ.
    """
    state = module.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} (file {list(shapes[k])}, network {list(expected[k])})"
             for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    wrong_dtypes = []
    for k, dtype in (dtypes or {}).items():
        if k in state and _dtype_kind(dtype) != _dtype_kind(state[k].dtype):
            shown = str(dtype).replace("torch.", "")
            wrong_dtypes.append(f"{k} (file {shown}, network {str(state[k].dtype).replace('torch.', '')})")
    if missing or unexpected or wrong or wrong_dtypes:
        parts = [f"{what} does not match the network:"]
        if missing:
            parts.append(f"missing tensors ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            parts.append(f"unexpected tensors ({len(unexpected)}): " + ", ".join(unexpected))
        if wrong:
            parts.append(f"wrong shapes ({len(wrong)}): " + ", ".join(wrong))
        if wrong_dtypes:
            parts.append(f"wrong dtypes ({len(wrong_dtypes)}): " + ", ".join(wrong_dtypes))
        parts.append("Check that the file is the right Champ component (and not truncated or from another model).")
        raise CheckpointError("\n".join(parts))


def assign_weights(
    module: nn.Module,
    sources: Mapping[str, tuple[TensorFile, str]],
    *,
    what: str,
    dtype: torch.dtype,
    device: torch.device | str,
) -> nn.Module:
    """Strictly load `module` (built on meta) from `sources[module_name] = (file, file_name)`."""
    check_names(module, {k: f.shapes[n] for k, (f, n) in sources.items()}, what, source_dtypes(sources))
    state = {}
    for key, (tensor_file, name) in sources.items():
        tensor = tensor_file.get(name)
        check_finite(tensor, name, tensor_file.path)
        state[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{what}: tensors left without weights: {', '.join(left)}")
    module.requires_grad_(False)
    return module.eval()


def source_dtypes(sources: Mapping[str, tuple]) -> dict[str, torch.dtype]:
    """module name -> the file's dtype, for the sources whose file knows dtypes."""
    out = {}
    for key, (tensor_file, name) in sources.items():
        dtype = getattr(tensor_file, "dtypes", {}).get(name)
        if dtype is not None:
            out[key] = dtype
    return out


def gather_sources(
    files: Iterable[TensorFile], renames=(), unused=(), select: Callable[[str], bool] | None = None
) -> tuple[dict[str, tuple[TensorFile, str]], dict[str, tuple], list[str]]:
    """Merge several files into module-name -> (file, name); a tensor in two files is an error.

    Returns the sources, their shapes by module name, and the dropped (known-unused) file names.
    """
    sources, shapes, dropped = {}, {}, []
    for tensor_file in files:
        names = [n for n in tensor_file.keys() if select is None or select(n)]
        mapping, file_dropped = map_names(names, renames, unused)
        dropped += file_dropped
        for name, target in mapping.items():
            if target in sources:
                raise CheckpointError(f"tensor {target} is in both {sources[target][0].path} and {tensor_file.path}")
            sources[target] = (tensor_file, name)
            shapes[target] = tensor_file.shapes[name]
    return sources, shapes, dropped


class ShapeOnlyFile:
    """Names and shapes without data (checking a layout, e.g. champ_checkpoint_format.json)."""

    def __init__(self, label: str, shapes: Mapping[str, Iterable[int]]):
        self.path = Path(label)
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.metadata = {}

    def keys(self) -> list[str]:
        return list(self.shapes)

    def get(self, key: str) -> torch.Tensor:
        raise CheckpointError(f"{self.path} holds shapes only")
