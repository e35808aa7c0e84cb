"""Resumable training state in safe formats only: safetensors for tensors, JSON for the rest.

A checkpoint folder (`output_dir/checkpoints/checkpoint-<step>/`) holds:

    model.safetensors          every parameter and buffer of the trained model (ChampModel names)
    optimizer.safetensors/.json   the optimizer's state_dict: tensors, and the rest with exact floats
                               (under DeepSpeed: optimizer-rank<K>.*, each process its own shard)
    scheduler.safetensors/.json   the LR scheduler's state_dict
    rng-rank<K>.safetensors    torch CPU (and CUDA) generator states of rank K
    rng-rank<K>.json           Python `random` and NumPy generator states of rank K
    trainer_state.json         step, epoch, samples drawn, skip counters, config snapshot

Loading never unpickles: each file is opened only by its expected reader (safetensors header or
JSON), a file whose first bytes are a pickle or a zip archive (torch.save) is refused by name, and
a pickle-type file found in the folder (`*.pkl`, `*.pt`, `*.pth`, `*.bin`, `*.ckpt`) is refused too,
since nothing here would ever read it.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_file

CHECKPOINT_PREFIX = "checkpoint-"
MODEL_FILE = "model.safetensors"
TRAINER_JSON = "trainer_state.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt")
FORMAT_VERSION = 1


class StateError(ValueError):
    """A checkpoint folder that cannot be resumed from (names the file and what to do)."""


# ----------------------------------------------------------------------------------------------
# File-level readers and writers


def _looks_pickled(head: bytes) -> str | None:
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "a Python pickle"
    if head[:2] == b"PK":
        return "a zip archive (torch.save format)"
    return None


def _check_safe(path: Path, kind: str) -> None:
    if not path.is_file():
        raise StateError(f"checkpoint file {path} is missing; the checkpoint is incomplete: resume from another "
                         "step (--resume STEP) or start again")
    with open(path, "rb") as handle:
        head = handle.read(16)
    what = _looks_pickled(head)
    if what is not None:
        raise StateError(f"refusing to load {path}: it is {what}, not {kind}. Training state is only ever "
                         "read from safetensors and JSON; remove the file or resume from another checkpoint")


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_file(path) as tmp:
        save_file(flat, str(tmp), metadata=dict(metadata) if metadata else None)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _check_safe(path, "a safetensors file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise StateError(f"cannot read {path} as safetensors ({exc}); the checkpoint is damaged: resume from "
                         "another step") from None


def save_json(path: Path, data: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def load_json(path: Path) -> Any:
    _check_safe(path, "JSON")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"cannot read {path} as JSON ({exc}); the checkpoint is damaged: resume from another "
                         "step") from None


def refuse_pickles(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
            raise StateError(f"refusing to resume from {folder}: it contains {path.name}, a pickle-format file. "
                             "Checkpoints written by this trainer hold only safetensors and JSON; remove the file "
                             "if you trust the folder, or resume from another checkpoint")


# ----------------------------------------------------------------------------------------------
# Any state_dict (optimizer, LR scheduler, a DeepSpeed shard): tensors to safetensors, the rest to JSON


def flatten_state(value: Any, tensors: dict[str, torch.Tensor] | None = None, path: str = "s"):
    """(JSON skeleton, tensors): tensors become {"__tensor__": key}; floats are stored exactly (hex),
    tuples and mappings with non-string keys keep their type. Anything else is refused by name."""
    tensors = {} if tensors is None else tensors
    if torch.is_tensor(value):
        tensors[path] = value
        return {"__tensor__": path}, tensors
    if isinstance(value, (bool, int, str)) or value is None:
        return value, tensors
    if isinstance(value, float):
        return {"__float__": float.hex(value)}, tensors  # exact, and inf/nan survive
    if isinstance(value, (list, tuple)):
        items = [flatten_state(v, tensors, f"{path}.{i}")[0] for i, v in enumerate(value)]
        return ({"__tuple__": items} if isinstance(value, tuple) else items), tensors
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: flatten_state(v, tensors, f"{path}.{k}")[0] for k, v in value.items()}, tensors
        pairs = []
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise StateError(f"cannot store the state key {k!r} at {path} safely (only str and int keys)")
            pairs.append([k, flatten_state(v, tensors, f"{path}.{k}")[0]])
        return {"__items__": pairs}, tensors
    raise StateError(f"cannot store {path} of type {type(value).__name__} safely: only tensors, numbers, "
                     "strings, lists and mappings are written (nothing is pickled)")


def unflatten_state(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [unflatten_state(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__tensor__"}:
        key = value["__tensor__"]
        if key not in tensors:
            raise StateError(f"the state names tensor {key!r}, which its safetensors file lacks")
        return tensors[key]
    if set(value) == {"__float__"}:
        return float.fromhex(value["__float__"])
    if set(value) == {"__tuple__"}:
        return tuple(unflatten_state(v, tensors) for v in value["__tuple__"])
    if set(value) == {"__items__"}:
        return {k: unflatten_state(v, tensors) for k, v in value["__items__"]}
    return {k: unflatten_state(v, tensors) for k, v in value.items()}


def write_state(folder: Path, stem: str, state_dict: Any) -> None:
    """<stem>.safetensors (its tensors) + <stem>.json (the rest)."""
    skeleton, tensors = flatten_state(state_dict)
    save_tensors(folder / f"{stem}.safetensors", tensors)
    save_json(folder / f"{stem}.json", {"version": FORMAT_VERSION, "state": skeleton})


def read_state(folder: Path, stem: str) -> Any:
    data = load_json(folder / f"{stem}.json")
    return unflatten_state(data["state"], load_tensors(folder / f"{stem}.safetensors"))


# ----------------------------------------------------------------------------------------------
# Random number generators


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    data = {"python": {"version": version, "state": list(internal), "gauss": flatten_state(gauss)[0]},
            "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float.hex(float(cached))}}
    return tensors, data


def set_rng_state(tensors: Mapping[str, torch.Tensor], data: Mapping) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch_cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    py = data["python"]
    random.setstate((py["version"], tuple(py["state"]), unflatten_state(py["gauss"], {})))
    npd = data["numpy"]
    np.random.set_state((npd["kind"], tensors["numpy_keys"].numpy().astype(np.uint32), npd["pos"],
                         npd["has_gauss"], float.fromhex(npd["cached_gaussian"])))


# ----------------------------------------------------------------------------------------------
# Checkpoint folders


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{CHECKPOINT_PREFIX}{step}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` (those with trainer_state.json), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", path.name)
        if match and path.is_dir() and (path / TRAINER_JSON).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_checkpoint(root: Path, which: str) -> Path:
    """`which`: "latest" or a step number."""
    found = list_checkpoints(root)
    if which == "latest":
        if not found:
            raise StateError(f"--resume latest: no checkpoint in {root}; start without --resume (or point "
                             "output_dir at the run to continue)")
        return found[-1][1]
    if not str(which).isdigit():
        raise StateError(f"--resume {which!r}: expected 'latest' or a step number")
    steps = {step: path for step, path in found}
    if int(which) not in steps:
        have = ", ".join(str(s) for s in steps) or "none"
        raise StateError(f"--resume {which}: no checkpoint-{which} in {root} (available: {have})")
    return steps[int(which)]


def rotate_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete the oldest checkpoints beyond `keep` (0 keeps all); returns the removed folders."""
    if keep <= 0:
        return []
    found = list_checkpoints(root)
    removed = []
    for _, path in found[:-keep] if len(found) > keep else []:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def write_model(folder: Path, state_dict: Mapping[str, torch.Tensor]) -> None:
    save_tensors(folder / MODEL_FILE, state_dict, {"format": "champ-train-state"})


def write_optimizer(folder: Path, optimizer_state: Any, scheduler_state: Any | None, rank: int | None = None) -> None:
    """The optimizer's state (rank: a DeepSpeed shard of that process) and the LR scheduler's."""
    if optimizer_state is not None:
        write_state(folder, "optimizer" if rank is None else f"optimizer-rank{rank}", optimizer_state)
    if scheduler_state is not None:
        write_state(folder, "scheduler", scheduler_state)


def write_rng(folder: Path, rank: int) -> None:
    tensors, data = rng_state()
    save_tensors(folder / f"rng-rank{rank}.safetensors", tensors)
    save_json(folder / f"rng-rank{rank}.json", data)


def read_checkpoint(folder: Path, rank: int) -> dict:
    """Everything of a checkpoint folder for one rank, checked and parsed (nothing is unpickled)."""
    folder = Path(folder)
    refuse_pickles(folder)
    trainer = load_json(folder / TRAINER_JSON)
    if trainer.get("version") != FORMAT_VERSION:
        raise StateError(f"{folder / TRAINER_JSON}: format version {trainer.get('version')!r} is not "
                         f"{FORMAT_VERSION}; this checkpoint was written by another trainer")
    rank_file = folder / f"rng-rank{rank}.safetensors"
    if not rank_file.is_file():
        raise StateError(f"{folder} has no random state for rank {rank} ({rank_file.name}): it was written by "
                         f"{trainer.get('world_size', '?')} processes; resume with the same number of processes")
    sharded = bool(trainer.get("sharded_optimizer"))
    out = {
        "trainer": trainer,
        "model": load_tensors(folder / MODEL_FILE),
        "optimizer": read_state(folder, f"optimizer-rank{rank}" if sharded else "optimizer"),
        "scheduler": read_state(folder, "scheduler") if (folder / "scheduler.json").exists() else None,
        "rng": (load_tensors(rank_file), load_json(folder / f"rng-rank{rank}.json")),
    }
    return out
