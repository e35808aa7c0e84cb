"""Training datasets: stage-1 image pairs and stage-2 clips, sampled the reference's way, bugs fixed.

Items (float32 tensors; S = `image_size`, G = len(guids), F = `sample_frames`):

    ImagePairDataset[g]:  tgt_img (3, S, S) in [-1, 1]     tgt_guid (3G, S, S) in [0, 1], guids order
                          ref_img (3, S, S) in [-1, 1]     clip_img (3, 224, 224)
    VideoClipDataset[g]:  tgt_vid (F, 3, S, S)             tgt_guid_vid (F, 3G, S, S)
                          ref_img (3, S, S)                clip_img (3, 224, 224)

Images are RGB (an alpha channel is composited over white), guidance maps RGB with depth's gray
repeated on three channels, semantic maps blacked out where `mask/` is 0 (the guidance-folder reader
of the pipeline reads them). `clip_img` is the reference frame (after the person crop with
`bbox_crop`, otherwise whole) through the reference's default `CLIPImageProcessor` rule
(`augment.clip_pixels`: nothing to download, and the same values on every transformers version).

Sampling:
- stage 1: the reference is a random frame that has a partner at least `sample_margin` frames
  away, the target a random frame at that distance (either side). The reference code prefers
  targets after the reference and, for a reference without such a partner, drew any frame,
  the reference itself included. A video shorter than the margin (n - 1 < margin) pairs a random
  reference with a random frame among those farthest from it (the same frame for a 1-frame video).
- stage 2: a span of min(n, (F - 1) * sample_rate + 1) frames starts at a random frame; the F
  indices are `numpy.linspace` over its first and last frame, truncated to integers as the
  reference does (shorter videos repeat indices). The reference frame is any frame of the video.
- one `CropPlan` per item (see `augment`): without `bbox_crop` the same random square is cut from the
  target(s), every guidance map and the reference; with it, a shared random scale enlarges the
  person box of the target (stage 2: the mean box over the clip) and, separately, of the reference.

Determinism: item `g` (a global draw number, 0, 1, 2, ...) depends only on (`seed`, g): the video
is position g % len(ds) of a permutation drawn for epoch g // len(ds), and every random choice comes
from a numpy generator keyed on (seed, g). `DrawSampler(start=position)` resumes the data order.

Unreadable files during training: the item is replaced by the next video of the epoch and a
warning names the file; `skips` counts samples and skips across DataLoader workers and raises
`DataSkipLimitError` once more than `max_skip_fraction` of the samples (and more than one) were
skipped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..guidance import GUIDANCE_TYPES
from ..pipeline.inputs import FolderGuidance, InputError, to_rgb_uint8
from .augment import (
    AUG_TYPES,
    CropPlan,
    apply_plan,
    clip_pixels,
    full_frame,
    mean_bbox,
    person_box,
    random_resized_crop_box,
)
from .layout import ALL_PARTS, IMAGES, DatasetError, VideoInfo, find_videos, scan_video

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 16  # videos tried for one item before giving up on it
_PERMUTATION_KEY, _ITEM_KEY = 0, 1


class DataSkipLimitError(RuntimeError):
    """Too many training samples had unreadable images; `str()` is one line, also when a DataLoader
    worker raised it (the DataLoader re-raises it with the worker's traceback as its message)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        marker = f"{type(self).__name__}: "
        lines = [line for line in str(message).splitlines() if marker in line]
        self.line = lines[-1].split(marker, 1)[1].strip() if lines else str(message).strip()

    def __str__(self) -> str:
        return self.line


class UnreadableSample(Exception):
    """One item could not be built from its files (a file unreadable, or frame sizes that disagree)."""


# -- sampling rules ---------------------------------------------------------------------------

def pair_indices(num_frames: int, margin: int, rng: np.random.Generator) -> tuple[int, int]:
    """(reference, target) frame indices of a stage-1 pair (see the module docstring)."""
    n, margin = int(num_frames), max(0, int(margin))
    if n < 1:
        raise ValueError("a video needs at least one frame")
    frames = np.arange(n)
    if n - 1 >= margin:
        # references that have a partner at least `margin` away: [0, n-1-margin] and [margin, n-1]
        refs = frames[(frames + margin <= n - 1) | (frames - margin >= 0)]
        ref = int(rng.choice(refs))
        targets = frames[np.abs(frames - ref) >= margin]
    else:
        ref = int(rng.integers(0, n))
        farthest = max(ref, n - 1 - ref)
        targets = frames[np.abs(frames - ref) >= farthest]
    return ref, int(rng.choice(targets))


def clip_span(num_frames: int, sample_frames: int, sample_rate: int) -> int:
    """Source frames a stage-2 clip covers: min(n, (F - 1) * rate + 1)."""
    return min(int(num_frames), (int(sample_frames) - 1) * int(sample_rate) + 1)


def clip_indices(num_frames: int, sample_frames: int, sample_rate: int, rng: np.random.Generator) -> list[int]:
    """The stage-2 frame indices: linspace over a random span, truncated to integers as the reference does."""
    span = clip_span(num_frames, sample_frames, sample_rate)
    if span < 1:
        raise ValueError("a video needs at least one frame")
    start = int(rng.integers(0, int(num_frames) - span + 1))
    return linspace_indices(start, span, sample_frames)


def linspace_indices(start: int, span: int, count: int) -> list[int]:
    return np.linspace(start, start + span - 1, int(count)).astype(np.int64).tolist()


# -- skip accounting --------------------------------------------------------------------------

class SkipCounter:
    """Samples drawn and samples skipped, shared by the DataLoader workers (they inherit it)."""

    def __init__(self, max_fraction: float = 0.01, min_allowed: int = 1) -> None:
        if not 0.0 <= float(max_fraction) < 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1), got {max_fraction}")
        self.max_fraction = float(max_fraction)
        self.min_allowed = int(min_allowed)
        self._counts = multiprocessing.Array("q", 2)  # [samples, skipped]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if multiprocessing.context.get_spawning_popen() is None:  # a plain copy or pickle: detached counts
            state["_counts"] = (self.samples, self.skipped)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["_counts"], tuple):
            counts = multiprocessing.Array("q", 2)
            counts[:] = list(state["_counts"])
            state["_counts"] = counts
        self.__dict__.update(state)

    @property
    def samples(self) -> int:
        return int(self._counts[0])

    @property
    def skipped(self) -> int:
        return int(self._counts[1])

    def count_sample(self) -> None:
        with self._counts.get_lock():
            self._counts[0] += 1

    def allowed(self, samples: int) -> float:
        return max(float(self.min_allowed), self.max_fraction * samples)

    def skip(self, reason: str) -> None:
        """Log one skipped sample; raise `DataSkipLimitError` past the allowed share."""
        with self._counts.get_lock():
            self._counts[1] += 1
            samples, skipped = int(self._counts[0]), int(self._counts[1])
        logger.warning("skipping a training sample: %s (%d of %d samples skipped so far)", reason, skipped, samples)
        if skipped > self.allowed(samples):
            raise DataSkipLimitError(
                f"{skipped} of {samples} training samples were skipped for unreadable images (more than "
                f"{self.max_fraction:.0%}); last: {reason}; run `python -m champ_core train check-data` on the "
                "data folder and fix or remove the broken files")


# -- the datasets -----------------------------------------------------------------------------

def _signed(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, C) -> float32 (..., C, H, W) in [-1, 1] (ToTensor, then Normalize(0.5, 0.5))."""
    return _unit(frames).sub_(0.5).div_(0.5)


def _unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, C) -> float32 (..., C, H, W) in [0, 1] (ToTensor): one conversion per item."""
    channels_first = np.ascontiguousarray(np.moveaxis(np.asarray(frames), -1, -3))  # still uint8: cheap
    return torch.from_numpy(channels_first).to(torch.float32).div_(255)


class _VideoFolderDataset(Dataset):
    def __init__(
        self,
        video_folder: str | os.PathLike,
        image_size: int,
        data_parts: Sequence[str] = (ALL_PARTS,),
        guids: Sequence[str] = GUIDANCE_TYPES,
        bbox_crop: bool = False,
        bbox_resize_ratio: Sequence[float] = (0.9, 1.5),
        aug_type: str = "Resize",
        seed: int = 0,
        max_skip_fraction: float = 0.01,
        read_threads: int = 4,
    ) -> None:
        super().__init__()
        if int(image_size) < 1:
            raise DatasetError(f"image_size must be a positive number of pixels, got {image_size}")
        if aug_type not in AUG_TYPES:
            raise DatasetError(f"aug_type {aug_type!r} is not supported; choose one of {', '.join(AUG_TYPES)}")
        ratio = tuple(float(v) for v in bbox_resize_ratio)
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise DatasetError(f"bbox_resize_ratio must be two numbers 0 < low <= high, got {list(bbox_resize_ratio)}")
        if int(seed) < 0:
            raise DatasetError(f"seed must be a non-negative integer, got {seed}")
        self.video_folder = Path(video_folder)
        self.image_size = int(image_size)
        self.guids = tuple(guids)
        self.bbox_crop = bool(bbox_crop)
        self.bbox_resize_ratio = ratio
        self.aug_type = aug_type
        self.seed = int(seed)
        self.read_threads = max(1, int(read_threads))
        self.videos: list[VideoInfo] = [scan_video(entry, self.guids, bbox_required=self.bbox_crop)
                                        for entry in find_videos(self.video_folder, data_parts)]
        self.skips = SkipCounter(max_skip_fraction)
        self._readers: dict[int, FolderGuidance] = {}
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.videos)

    # order
    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 4:  # keep a few epochs (items near an epoch boundary)
                self._permutations.pop(next(iter(self._permutations)))
            seq = np.random.SeedSequence(self.seed, spawn_key=(_PERMUTATION_KEY, epoch))
            self._permutations[epoch] = np.random.default_rng(seq).permutation(len(self.videos))
        return self._permutations[epoch]

    def video_of(self, draw: int, attempt: int = 0) -> int:
        """The video index item `draw` uses (its `attempt`-th fallback after unreadable ones)."""
        epoch, position = divmod(int(draw), len(self.videos))
        return int(self._permutation(epoch)[(position + attempt) % len(self.videos)])

    def item_rng(self, draw: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_ITEM_KEY, int(draw), attempt)))

    def __getitem__(self, draw: int) -> dict[str, torch.Tensor]:
        draw = int(draw)
        if draw < 0:
            raise IndexError(f"draw numbers start at 0, got {draw}")
        self.skips.count_sample()
        for attempt in range(min(MAX_ATTEMPTS, len(self.videos))):
            info = self.videos[self.video_of(draw, attempt)]
            try:
                return self.make_item(info, self.item_rng(draw, attempt))
            except UnreadableSample as exc:
                self.skips.skip(f"video {info.entry.name}: {exc}")
        raise DataSkipLimitError(f"item {draw}: all {min(MAX_ATTEMPTS, len(self.videos))} video(s) tried had "
                                 "unreadable images; run `python -m champ_core train check-data` on the data folder")

    def make_item(self, info: VideoInfo, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # reading
    def _reader(self, info: VideoInfo) -> FolderGuidance:
        key = id(info)
        if key not in self._readers:
            try:
                reader = FolderGuidance(info.entry.path, types=[g for g in GUIDANCE_TYPES if g in self.guids])
            except InputError as exc:
                raise UnreadableSample(str(exc)) from exc
            if reader.frame_names != info.frame_names:
                raise UnreadableSample("its frame files changed since the data check")
            self._readers[key] = reader
        return self._readers[key]

    def _load(self, info: VideoInfo, kind: str, index: int) -> np.ndarray:
        try:
            if kind == IMAGES:
                return to_rgb_uint8(info.files[IMAGES][index])
            return self._reader(info).load_frame(kind, index)
        except InputError as exc:
            raise UnreadableSample(str(exc)) from exc

    def parallel(self, fn, items: Sequence) -> list:
        """`fn` over `items` on a few threads (PNG decoding and PIL resizing release the GIL)."""
        items = list(items)
        if self.read_threads <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(min(self.read_threads, len(items))) as pool:
            return list(pool.map(fn, items))

    def read_frames(self, info: VideoInfo, images: Sequence[int], guided: Sequence[int]
                    ) -> tuple[dict[int, np.ndarray], dict[int, list[np.ndarray]], tuple[int, int]]:
        """Frames `images` (uint8 (H, W, 3)) and the guidance maps of frames `guided` (guids order);
        every file must have the size of the first frame."""
        self._reader(info)  # built once, before the threads share it
        jobs = [(IMAGES, i) for i in dict.fromkeys(images)]
        jobs += [(kind, i) for i in dict.fromkeys(guided) for kind in self.guids]
        arrays = self.parallel(lambda job: self._load(info, *job), jobs)
        size = arrays[0].shape[:2]
        for (kind, index), array in zip(jobs, arrays):
            if array.shape[:2] != size:
                raise UnreadableSample(f"{kind}/{info.frame_names[index]} is {array.shape[1]}x{array.shape[0]} but "
                                       f"{IMAGES}/{info.frame_names[jobs[0][1]]} is {size[1]}x{size[0]}")
        loaded = dict(zip(jobs, arrays))
        frames = {i: loaded[(IMAGES, i)] for i in images}
        maps = {i: [loaded[(kind, i)] for kind in self.guids] for i in guided}
        return frames, maps, size

    def clip_input(self, reference: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(clip_pixels(reference))

    def plans(self, rng: np.random.Generator, size: tuple[int, int], target_box, reference_box) -> tuple[CropPlan,
                                                                                                          CropPlan]:
        """(target plan, reference plan); boxes are person boxes [x0, y0, x1, y1] (used with bbox_crop)."""
        height, width = size
        if self.bbox_crop:
            scale = float(rng.uniform(*self.bbox_resize_ratio))
            return (CropPlan(person_box(target_box, width, height, scale), self.image_size, self.aug_type),
                    CropPlan(person_box(reference_box, width, height, scale), self.image_size, self.aug_type))
        box = random_resized_crop_box(rng, width, height)
        plan = CropPlan(box, self.image_size, "Resize")
        return plan, plan

    def reference_tensors(self, reference: np.ndarray, plan: CropPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """(ref_img, clip_img): the VAE input through the plan; CLIP sees the person crop (bbox) or the frame."""
        clip_source = reference
        if self.bbox_crop:
            box = plan.box
            clip_source = reference[box.top:box.bottom, box.left:box.right]
        return _signed(apply_plan(reference, plan)), self.clip_input(clip_source)


class ImagePairDataset(_VideoFolderDataset):
    """Stage 1: a reference frame and a target frame (with its guidance maps) of one video."""

    def __init__(self, video_folder: str | os.PathLike, image_size: int = 768, sample_margin: int = 30,
                 **kwargs: Any) -> None:
        super().__init__(video_folder, image_size, **kwargs)
        if int(sample_margin) < 0:
            raise DatasetError(f"sample_margin must be >= 0, got {sample_margin}")
        self.sample_margin = int(sample_margin)

    def sample_frames(self, info: VideoInfo, rng: np.random.Generator) -> tuple[int, int]:
        return pair_indices(info.num_frames, self.sample_margin, rng)

    def make_item(self, info: VideoInfo, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ref_index, tgt_index = self.sample_frames(info, rng)
        frames, maps, size = self.read_frames(info, [tgt_index, ref_index], [tgt_index])
        whole = _as_list(full_frame(size[1], size[0]))
        boxes = info.bboxes or [whole] * info.num_frames  # bboxes exist whenever bbox_crop is on
        tgt_plan, ref_plan = self.plans(rng, size, boxes[tgt_index], boxes[ref_index])
        target, *guidance = self.parallel(lambda a: apply_plan(a, tgt_plan), [frames[tgt_index], *maps[tgt_index]])
        ref_img, clip_img = self.reference_tensors(frames[ref_index], ref_plan)
        return {
            "tgt_img": _signed(target),
            "tgt_guid": _unit(np.concatenate(guidance, axis=-1)),  # channels in guids order
            "ref_img": ref_img,
            "clip_img": clip_img,
        }


class VideoClipDataset(_VideoFolderDataset):
    """Stage 2: `sample_frames` frames of one video (with their guidance maps) and a reference frame."""

    def __init__(self, video_folder: str | os.PathLike, image_size: int = 512, sample_frames: int = 24,
                 sample_rate: int = 4, **kwargs: Any) -> None:
        super().__init__(video_folder, image_size, **kwargs)
        if int(sample_frames) < 1 or int(sample_rate) < 1:
            raise DatasetError(f"sample_frames and sample_rate must be >= 1, got {sample_frames} and {sample_rate}")
        self.sample_frames = int(sample_frames)
        self.sample_rate = int(sample_rate)

    def sample_clip(self, info: VideoInfo, rng: np.random.Generator) -> tuple[int, list[int]]:
        reference = int(rng.integers(0, info.num_frames))
        return reference, clip_indices(info.num_frames, self.sample_frames, self.sample_rate, rng)

    def make_item(self, info: VideoInfo, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ref_index, indices = self.sample_clip(info, rng)
        unique = list(dict.fromkeys(indices))  # repeated indices (short videos) are read once
        frames, maps, size = self.read_frames(info, [*unique, ref_index], unique)
        if info.bboxes is not None:
            clip_box, ref_box = mean_bbox([info.bboxes[i] for i in indices]), info.bboxes[ref_index]
        else:
            clip_box = ref_box = _as_list(full_frame(size[1], size[0]))
        tgt_plan, ref_plan = self.plans(rng, size, _as_list(clip_box), _as_list(ref_box))
        per_frame = 1 + len(self.guids)
        flat = self.parallel(lambda a: apply_plan(a, tgt_plan), [a for i in unique for a in (frames[i], *maps[i])])
        cropped = {i: flat[k * per_frame:(k + 1) * per_frame] for k, i in enumerate(unique)}
        ref_img, clip_img = self.reference_tensors(frames[ref_index], ref_plan)
        return {
            "tgt_vid": _signed(np.stack([cropped[i][0] for i in indices])),
            "tgt_guid_vid": _unit(np.stack([np.concatenate(cropped[i][1:], axis=-1) for i in indices])),
            "ref_img": ref_img,
            "clip_img": clip_img,
        }


def _as_list(box) -> list[float]:
    if hasattr(box, "left"):
        return [box.left, box.top, box.right, box.bottom]
    return [float(v) for v in box]


# -- data order -------------------------------------------------------------------------------

class DrawSampler(Sampler[int]):
    """Draw numbers start, start + 1, ... (`num_draws` of them, or without end): a resumable data order.

    Save the number of samples consumed so far (a plain int) and pass it as `start` to resume.
    """

    def __init__(self, start: int = 0, num_draws: int | None = None) -> None:
        if int(start) < 0 or (num_draws is not None and int(num_draws) < 0):
            raise ValueError(f"start and num_draws must be >= 0, got {start} and {num_draws}")
        self.start = int(start)
        self.num_draws = None if num_draws is None else int(num_draws)

    def __iter__(self) -> Iterator[int]:
        draw = self.start
        while self.num_draws is None or draw < self.start + self.num_draws:
            yield draw
            draw += 1

    def __len__(self) -> int:
        if self.num_draws is None:
            raise TypeError("an endless DrawSampler has no length; pass num_draws")
        return self.num_draws

    def state_dict(self) -> dict[str, int | None]:
        return {"start": self.start, "num_draws": self.num_draws}

    def load_state_dict(self, state: Mapping[str, int | None]) -> None:
        self.start = int(state["start"])
        self.num_draws = None if state.get("num_draws") is None else int(state["num_draws"])


STAGE1_KEYS = ("image_size", "sample_margin", "data_parts", "guids", "bbox_crop", "bbox_resize_ratio", "aug_type")
STAGE2_KEYS = ("image_size", "sample_frames", "sample_rate", "data_parts", "guids", "bbox_crop",
               "bbox_resize_ratio", "aug_type")


def build_dataset(stage: int, data: Mapping[str, Any], seed: int = 0,
                  max_skip_fraction: float = 0.01) -> ImagePairDataset | VideoClipDataset:
    """The stage's dataset from the yaml `data:` section (the reference's keys; train_bs etc. ignored here)."""
    if not data.get("video_folder"):
        raise DatasetError("data.video_folder is not set; pass --set data.video_folder=FOLDER")
    keys = STAGE1_KEYS if int(stage) == 1 else STAGE2_KEYS
    kwargs = {key: data[key] for key in keys if key in data and data[key] is not None}
    cls = ImagePairDataset if int(stage) == 1 else VideoClipDataset
    return cls(data["video_folder"], seed=seed, max_skip_fraction=max_skip_fraction, **kwargs)
