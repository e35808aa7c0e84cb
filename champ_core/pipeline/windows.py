"""Temporal window planning: which frames the denoiser sees together, and how overlaps are fused.

The motion modules attend over at most 32 frame positions, so a long video is denoised as
overlapping windows whose predictions are averaged per frame at every step.

Schedules (`WindowOptions.schedule`):
- "loop" (default, the reference's): windows of `length` frames start every `length - overlap`
  frames from 0 while the start is below the frame count; indices wrap modulo the frame count, so
  the last window continues onto the first frames (a closed loop: the clip's start is blended with
  its end). With `stride` > 1, dilated windows (every 2nd, 4th, ... frame) are added, as the
  reference's context scheduler does.
- "open": the same spacing, but never wraps: the last window is pulled back to end exactly at the
  last frame. Use it for clips that are not loops.

`shift_per_step=True` moves the window grid from one denoising step to the next (the step index
is bit-reversed into a fraction, "ordered halving"), so seams do not sit on the same frames at
every step. The reference keeps the grid fixed (it always plans with step 0).

Fusion (`WindowOptions.fusion`): "flat" averages overlapping predictions uniformly (the reference);
"pyramid" weights each window's frames by a triangle peaking at its centre, so a frame counts
most in the window where it sits farthest from an edge.

`plan_windows(num_frames, options)` returns a `WindowPlan` that can be inspected
(`plan.windows(step)`, `plan.coverage(step)`, `plan.describe()`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# Length of the motion modules' sinusoidal position table in the released weights.
MOTION_MODULE_POSITIONS = 32

SCHEDULES = ("loop", "open")
FUSIONS = ("flat", "pyramid")


class WindowError(ValueError):
    """Window options that cannot work (too long for the motion module, overlap >= length, ...)."""


@dataclass(frozen=True)
class WindowOptions:
    length: int = 24
    overlap: int = 4
    stride: int = 1
    schedule: str = "loop"
    fusion: str = "flat"
    shift_per_step: bool = False

    def validate(self, max_positions: int = MOTION_MODULE_POSITIONS) -> None:
        if self.length < 1:
            raise WindowError(f"window length must be at least 1, got {self.length}")
        if self.length > max_positions:
            raise WindowError(
                f"window length {self.length} exceeds the motion module's {max_positions} frame positions; "
                f"use a window length of at most {max_positions} (the reference uses 24)"
            )
        if not 0 <= self.overlap < self.length:
            raise WindowError(f"window overlap must be in [0, length), got overlap {self.overlap} for length {self.length}")
        if self.stride < 1:
            raise WindowError(f"window stride must be at least 1, got {self.stride}")
        if self.schedule not in SCHEDULES:
            raise WindowError(f"unknown window schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.fusion not in FUSIONS:
            raise WindowError(f"unknown window fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")


@dataclass(frozen=True)
class Window:
    frames: tuple[int, ...]  # frame indices, in temporal order as the motion module sees them
    weights: tuple[float, ...]  # fusion weight of each position


def ordered_halving(step: int) -> float:
    """The step's 64-bit binary representation reversed, as a fraction in [0, 1): 0, 1/2, 1/4, 3/4, ..."""
    return int(format(step, "064b")[::-1], 2) / 2**64


def fusion_weights(length: int, fusion: str) -> tuple[float, ...]:
    if fusion == "flat":
        return (1.0,) * length
    if fusion == "pyramid":
        half = (length + 1) // 2
        rising = list(range(1, half + 1))
        return tuple(float(w) for w in rising + rising[: length - half][::-1])
    raise WindowError(f"unknown window fusion {fusion!r}")


def _loop_windows(num_frames: int, options: WindowOptions, step: int) -> list[list[int]]:
    shift = ordered_halving(step) if options.shift_per_step else 0.0
    # Dilation levels beyond what the clip length supports would repeat frames; cap them.
    levels = min(options.stride, int(math.ceil(math.log2(num_frames / options.length))) + 1)
    windows = []
    for dilation in (1 << k for k in range(levels)):
        pad = int(round(num_frames * shift))
        start = int(shift * dilation) + pad
        hop = options.length * dilation - options.overlap
        for first in range(start, num_frames + pad, hop):
            windows.append([f % num_frames for f in range(first, first + options.length * dilation, dilation)])
    return windows


def _open_windows(num_frames: int, options: WindowOptions, step: int) -> list[list[int]]:
    length, hop = options.length, options.length - options.overlap
    offset = int(round(ordered_halving(step) * hop)) if options.shift_per_step else 0
    starts = []
    first = -offset
    while True:
        start = min(max(first, 0), num_frames - length)
        if not starts or start != starts[-1]:
            starts.append(start)
        if start + length >= num_frames:
            break
        first += hop
    return [list(range(s, s + length)) for s in starts]


@dataclass(frozen=True)
class WindowPlan:
    num_frames: int
    options: WindowOptions

    def windows(self, step: int = 0) -> list[Window]:
        """The windows of one denoising step (the same at every step unless shift_per_step)."""
        if self.num_frames <= self.options.length:
            index_lists = [list(range(self.num_frames))]
        elif self.options.schedule == "loop":
            index_lists = _loop_windows(self.num_frames, self.options, step)
        else:
            index_lists = _open_windows(self.num_frames, self.options, step)
        return [Window(tuple(ix), fusion_weights(len(ix), self.options.fusion)) for ix in index_lists]

    def frame_lists(self, step: int = 0) -> list[list[int]]:
        return [list(w.frames) for w in self.windows(step)]

    def coverage(self, step: int = 0) -> np.ndarray:
        """How many windows contain each frame at this step, (num_frames,) int."""
        counts = np.zeros(self.num_frames, dtype=np.int64)
        for window in self.windows(step):
            np.add.at(counts, list(window.frames), 1)
        return counts

    def num_windows(self, step: int = 0) -> int:
        return len(self.windows(step))

    def describe(self, steps: int = 1) -> str:
        lines = [f"{self.num_frames} frames, {asdict(self.options)}"]
        for step in range(steps if self.options.shift_per_step else 1):
            spans = ", ".join(f"[{w.frames[0]}..{w.frames[-1]}]" for w in self.windows(step))
            label = f"step {step}" if self.options.shift_per_step else "every step"
            lines.append(f"  {label}: {self.num_windows(step)} windows {spans}")
        return "\n".join(lines)


def plan_windows(
    num_frames: int, options: WindowOptions | None = None, max_positions: int = MOTION_MODULE_POSITIONS
) -> WindowPlan:
    """Check the options and return the window plan for a clip of `num_frames` frames."""
    options = options or WindowOptions()
    options.validate(max_positions)
    if num_frames < 1:
        raise WindowError(f"cannot plan windows for {num_frames} frames; the video needs at least one frame")
    plan = WindowPlan(num_frames, options)
    missing = np.flatnonzero(plan.coverage(0) == 0)
    if missing.size:  # cannot happen for valid options; guards the schedules above
        raise WindowError(f"window plan leaves frames {missing[:5].tolist()} uncovered")
    return plan
