"""Guidance features computed once per frame per video, held up to a byte budget.

The guidance encoders work on every frame on its own (convolutions, GroupNorm and attention run on
frames folded into the batch; nothing mixes frames), so a frame's features do not depend on the
window it is encoded in, and they do not change between denoising steps. `GuidanceFeatureCache`
therefore reads and encodes each frame the first time a window needs it, stores the features, and
serves every later window and step from the store. Only frames past the budget are read and encoded
again, for every window that needs them.

Where the features live:
- CPU models: one store in RAM, up to the budget.
- CUDA models: up to `device_budget_bytes` (1 GiB by default) on the GPU, the rest of the budget
  in pinned host memory; `prefetch(next window)` starts the host-to-GPU copies of the next window's
  host-held frames on a side stream, so they overlap the current window's UNet call.
Storage dtype: the model dtype (fp32 runs keep fp32 features and reproduce the uncached numbers
exactly; fp16 runs store fp16), unless `storage_dtype` asks for another (e.g. fp16 storage in an fp32
run halves the memory and changes the features by fp16 rounding; docs/benchmarks.md gives the error).

`prefetch` also reads the next window's still-missing guidance frames on a worker thread (PNG
decoding and resizing release the GIL), so disk and decoding overlap the network calls.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30
DEVICE_TIER_BYTES = GIB  # default share of the budget held on the GPU
HOST_BUDGET_CAP = 4 * GIB  # default host budget: at most this ...
HOST_BUDGET_FRACTION = 0.25  # ... and at most this fraction of the memory available at start

ReadFn = Callable[[list[int]], Mapping[str, np.ndarray]]
EncodeFn = Callable[[Mapping[str, np.ndarray]], torch.Tensor]


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages, else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def default_host_budget() -> int:
    """min(4 GiB, a quarter of the memory available now); 1 GiB when that cannot be read.

    A quarter leaves the rest to the networks' activations (a CFG window at 512x512 needs a few GiB
    in fp32) and to other processes; 4 GiB holds every frame of ~800 frames of SD1.5-size features
    at 512x512 in fp32 (5 MiB a frame), or ~1600 in fp16, far past what a CPU samples in a day.
    """
    available = available_memory_bytes()
    if available is None:
        return GIB
    return int(min(HOST_BUDGET_CAP, available * HOST_BUDGET_FRACTION))


@dataclass(frozen=True)
class CacheBudget:
    """Bytes of features to hold on the model device and in host memory (pinned on CUDA)."""

    device_bytes: int
    host_bytes: int
    automatic: bool

    @property
    def total(self) -> int:
        return self.device_bytes + self.host_bytes


def resolve_budget(device: torch.device, budget_bytes: int | None = None,
                   device_budget_bytes: int | None = None) -> CacheBudget:
    """Split a total budget (None = automatic, 0 = none) into device and host shares.

    CPU: everything in RAM (automatic: `default_host_budget()`). CUDA: `device_budget_bytes`
    (default 1 GiB) on the GPU, the rest in pinned host memory (automatic rest:
    `default_host_budget()`). Other accelerators: everything on the device (automatic: 1 GiB).
    """
    if budget_bytes is not None and int(budget_bytes) < 0:
        raise ValueError(f"guidance cache budget must be >= 0 bytes (0 = no cache), got {budget_bytes}")
    if device_budget_bytes is not None and int(device_budget_bytes) < 0:
        raise ValueError(f"guidance cache device budget must be >= 0 bytes, got {device_budget_bytes}")
    automatic = budget_bytes is None
    if not automatic and int(budget_bytes) == 0:
        return CacheBudget(0, 0, False)
    if device.type == "cpu":
        return CacheBudget(0, default_host_budget() if automatic else int(budget_bytes), automatic)
    on_device = DEVICE_TIER_BYTES if device_budget_bytes is None else int(device_budget_bytes)
    if device.type != "cuda":
        total = on_device if automatic else int(budget_bytes)
        return CacheBudget(total, 0, automatic)
    if automatic:
        return CacheBudget(on_device, default_host_budget(), True)
    on_device = min(on_device, int(budget_bytes))
    return CacheBudget(on_device, int(budget_bytes) - on_device, False)


def _describe(nbytes: int) -> str:
    if nbytes >= GIB:
        return f"{nbytes / GIB:.2f} GiB"
    return f"{nbytes / MIB:.1f} MiB" if nbytes >= MIB else f"{nbytes / 1024:.1f} KiB"


class GuidanceFeatureCache:
    """Per-frame store of encoded guidance features for one video (see the module docstring).

    `read(frame indices) -> {type: uint8 (n, H, W, 3)}` reads guidance frames; `encode(layers) ->
    (1, C, n, h, w)` features in the model dtype on the model device. `budget_bytes`: None =
    automatic (`resolve_budget`), 0 = no store (every window encodes all its frames, every step),
    N = at most N bytes. Use as a context manager (it owns a read-ahead thread), one per video.
    """

    def __init__(
        self,
        read: ReadFn,
        encode: EncodeFn,
        num_frames: int,
        device: torch.device | str,
        dtype: torch.dtype,
        budget_bytes: int | None = None,
        device_budget_bytes: int | None = None,
        storage_dtype: torch.dtype | None = None,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"a video needs at least one frame, got {num_frames}")
        self.read = read
        self.encode = encode
        self.num_frames = int(num_frames)
        self.device = torch.device(device)
        self.dtype = dtype
        self.storage_dtype = storage_dtype or dtype
        self.budget = resolve_budget(self.device, budget_bytes, device_budget_bytes)
        self.encodings = torch.zeros(self.num_frames, dtype=torch.int64)
        self._pin = self.device.type == "cuda" and torch.cuda.is_available()
        # frame -> (tier, slot); tier 0 = on the model device, 1 = host memory
        self._where: list[tuple[int, int] | None] = [None] * self.num_frames
        self._stores: list[torch.Tensor | None] = [None, None]
        self._used = [0, 0]
        self._frame_bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[tuple[int, ...], Future] | None = None
        self._staged: tuple[tuple[int, ...], torch.Tensor, object] | None = None
        self._copy_stream = None

    # -- public ----------------------------------------------------------------------------
    @property
    def encodings_per_frame(self) -> float:
        return float(self.encodings.sum()) / self.num_frames

    @property
    def cached_frames(self) -> int:
        return sum(self._used)

    @property
    def stored_bytes(self) -> int:
        return self.cached_frames * self._frame_bytes

    def window(self, frames: Sequence[int]) -> torch.Tensor:
        """Features (1, C, n, h, w) of `frames` in the model dtype on the model device."""
        frames = [int(f) for f in frames]
        for f in frames:
            if not 0 <= f < self.num_frames:
                raise IndexError(f"frame {f} is outside the video's {self.num_frames} frames")
        missing = list(dict.fromkeys(f for f in frames if self._where[f] is None))
        encoded = None
        if missing:
            encoded = self.encode(self._take_read(missing))  # (1, C, m, h, w)
            if encoded.ndim != 5 or encoded.shape[0] != 1 or encoded.shape[2] != len(missing):
                raise ValueError(f"the guidance encoder returned shape {tuple(encoded.shape)} for "
                                 f"{len(missing)} frames; expected (1, C, {len(missing)}, h, w)")
            self.encodings[missing] += 1
            encoded = encoded[0].transpose(0, 1)  # (m, C, h, w) view, frame-major
            self._store(missing, encoded)
            if len(missing) == len(frames) and all(self._where[f] is None for f in missing):
                return encoded.transpose(0, 1)[None]  # nothing stored: the encoder's own tensor
        return self._assemble(frames, missing, encoded)[None].transpose(1, 2)

    def prefetch(self, frames: Sequence[int]) -> None:
        """Start reading the still-missing frames of `frames` (and, on CUDA, copying its host-held
        frames to the GPU) in the background; `window(frames)` picks the results up."""
        frames = [int(f) for f in frames if 0 <= int(f) < self.num_frames]
        missing = tuple(dict.fromkeys(f for f in frames if self._where[f] is None))
        if missing and (self._pending is None or self._pending[0] != missing):
            self._drop_pending()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="champ-guidance-read")
            self._pending = (missing, self._pool.submit(self.read, list(missing)))
        if self._pin:
            host = tuple(dict.fromkeys(f for f in frames if self._where[f] is not None and self._where[f][0] == 1))
            if host and (self._staged is None or self._staged[0] != host):
                self._stage(host)

    def close(self) -> None:
        self._drop_pending()
        self._staged = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> GuidanceFeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------
    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending[1].cancel()
            self._pending = None

    def _take_read(self, missing: list[int]) -> Mapping[str, np.ndarray]:
        pending, self._pending = self._pending, None
        if pending is not None:
            ahead, future = pending
            if set(missing) <= set(ahead):
                layers = future.result()  # errors of the read surface here, in the caller's thread
                if list(ahead) == missing:
                    return layers
                position = {f: i for i, f in enumerate(ahead)}
                rows = [position[f] for f in missing]
                return {kind: np.asarray(value)[rows] for kind, value in layers.items()}
            future.cancel()
        return self.read(list(missing))

    # -- storing ---------------------------------------------------------------------------
    def _allocate(self, sample: torch.Tensor) -> None:
        """Size both tiers from the first encoded frame and log the choice."""
        frame_shape = tuple(sample.shape)  # (C, h, w)
        element = torch.empty((), dtype=self.storage_dtype).element_size()
        self._frame_bytes = frame_bytes = int(np.prod(frame_shape)) * element
        capacity = [0, 0]
        left = self.num_frames
        for tier, tier_bytes in enumerate((self.budget.device_bytes, self.budget.host_bytes)):
            capacity[tier] = min(left, tier_bytes // frame_bytes)
            left -= capacity[tier]
        if capacity[0]:
            self._stores[0] = torch.empty((capacity[0], *frame_shape), dtype=self.storage_dtype, device=self.device)
        if capacity[1]:
            self._stores[1] = torch.empty((capacity[1], *frame_shape), dtype=self.storage_dtype,
                                          pin_memory=self._pin)
        held = capacity[0] + capacity[1]
        need = self.num_frames * frame_bytes
        where = []
        if capacity[0]:
            where.append(f"{capacity[0]} on {self.device}")
        if capacity[1]:
            where.append(f"{capacity[1]} in {'pinned ' if self._pin else ''}host memory")
        if self.budget.total == 0:
            choice = "cache off: every window re-encodes its frames at every step"
        elif held == self.num_frames:
            choice = f"all {held} frames cached ({', '.join(where)}), each encoded once"
        else:
            choice = (f"{held} of {self.num_frames} frames cached ({', '.join(where) or 'none'}); "
                      "the rest re-encoded for every window that needs them")
        logger.info(
            "guidance feature cache: budget %s (%s%s), %s per frame in %s, %s for all frames: %s",
            _describe(self.budget.total), "automatic" if self.budget.automatic else "given",
            f"; at most {_describe(self.budget.device_bytes)} on the GPU" if self._pin else "",
            _describe(frame_bytes), str(self.storage_dtype).replace("torch.", ""), _describe(need), choice,
        )

    def _store(self, frames: list[int], features: torch.Tensor) -> None:
        if self._frame_bytes == 0:
            self._allocate(features[0])
        for i, f in enumerate(frames):
            for tier in (0, 1):
                store = self._stores[tier]
                if store is not None and self._used[tier] < store.shape[0]:
                    slot = self._used[tier]
                    store[slot].copy_(features[i], non_blocking=tier == 1 and self._pin)
                    self._used[tier] += 1
                    self._where[f] = (tier, slot)
                    break
            else:
                return  # budget full: the remaining frames stay uncached
        if self._pin and self._used[1]:
            torch.cuda.current_stream(self.device).synchronize()  # device-to-host copies done

    # -- serving ---------------------------------------------------------------------------
    def _assemble(self, frames: list[int], missing: list[int], encoded: torch.Tensor | None) -> torch.Tensor:
        """(n, C, h, w) features of `frames` in the model dtype on the model device."""
        rows_by_tier: list[list[tuple[int, int]]] = [[], []]  # (position in window, slot)
        fresh: list[tuple[int, int]] = []  # (position in window, row of `encoded`)
        encoded_row = {f: i for i, f in enumerate(missing)}
        same_bits = self.storage_dtype == self.dtype  # a just-encoded frame is served from `encoded`
        for position, f in enumerate(frames):
            where = self._where[f]
            if where is None or (same_bits and f in encoded_row):
                fresh.append((position, encoded_row[f]))
            else:
                rows_by_tier[where[0]].append((position, where[1]))
        device_store, host_store = self._stores
        if not fresh and not rows_by_tier[1]:  # all on the device: one gather
            slots = torch.tensor([slot for _, slot in rows_by_tier[0]], dtype=torch.long, device=self.device)
            return device_store.index_select(0, slots).to(self.dtype)
        if not fresh and not rows_by_tier[0] and self.device.type == "cpu":  # all in RAM on a CPU run
            slots = torch.tensor([slot for _, slot in rows_by_tier[1]], dtype=torch.long)
            return host_store.index_select(0, slots).to(self.dtype)
        sample = encoded[0] if encoded is not None else (device_store if device_store is not None else host_store)[0]
        out = torch.empty((len(frames), *sample.shape), dtype=self.dtype, device=self.device)
        if rows_by_tier[0]:
            positions, slots = zip(*rows_by_tier[0])
            index = torch.tensor(slots, dtype=torch.long, device=self.device)
            out[list(positions)] = device_store.index_select(0, index).to(self.dtype)
        if rows_by_tier[1]:
            self._copy_host_rows(out, rows_by_tier[1], frames)
        if fresh:
            positions, rows = zip(*fresh)
            out[list(positions)] = encoded[list(rows)].to(self.dtype)
        return out

    def _copy_host_rows(self, out: torch.Tensor, rows: list[tuple[int, int]], frames: list[int]) -> None:
        host_store = self._stores[1]
        staged, self._staged = self._staged, None
        if staged is not None:
            staged_frames, buffer, event = staged
            row_of = {f: i for i, f in enumerate(staged_frames)}
            torch.cuda.current_stream(self.device).wait_event(event)
            for position, slot in rows:
                f = frames[position]
                out[position] = buffer[row_of[f]] if f in row_of else host_store[slot].to(self.device)
            return
        for position, slot in rows:
            out[position] = host_store[slot].to(self.device, non_blocking=self._pin)

    def _stage(self, host_frames: tuple[int, ...]) -> None:
        """CUDA: copy the host-held frames of the next window to the GPU on a side stream."""
        host_store = self._stores[1]
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        buffer = torch.empty((len(host_frames), *host_store.shape[1:]), dtype=host_store.dtype, device=self.device)
        self._copy_stream.wait_stream(current)
        with torch.cuda.stream(self._copy_stream):
            for i, f in enumerate(host_frames):
                buffer[i].copy_(host_store[self._where[f][1]], non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._copy_stream)
        self._staged = (host_frames, buffer, event)
