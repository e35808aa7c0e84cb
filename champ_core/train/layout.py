"""The training data layout (the reference's), its schema check, and the one writer of training videos.

Layout, one level or two levels deep:

    ROOT/<video>/...            or            ROOT/<part>/<video>/...
        images/0001.png ...     RGB frames (PNG or JPEG)
        depth/0001.png ...      one folder per guidance type used (`guids`), same file stems as images/
        normal/ semantic_map/ dwpose/
        mask/0001.png ...       required whenever semantic_map is used (it blacks out its background)
        human_bbox.json         optional: [[x0, y0, x1, y1], ...], one person box per frame, in pixels
                                (required with `bbox_crop`)

`data_parts` (the reference's yaml key): ["all"] takes every sub-folder of ROOT, each either a video
(it has `images/`) or a part holding videos; named parts take only those sub-folders of ROOT. The
reference reads two levels only, though its README shows one. Sub-folders whose name starts with "."
are ignored (the writer stages videos there); files other than images inside layer folders are ignored
(a stray mp4 in one crashed the reference's loader).

`check_dataset` runs before training (and as `python -m champ_core train check-data ROOT`): it names
the first bad video and what is wrong in one line (`DatasetError`). `VideoLayoutWriter` is the writer
synthetic data and data preparation go through: a video appears in ROOT complete or not at all.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import PARTIAL_MARK, normal_dir_mode, replace_dir
from ..guidance import GUIDANCE_TYPES, LAYER_NAMES, MASK, GuidanceFolderError, check_frame_lists, list_frames

IMAGES = "images"
BBOX_FILE = "human_bbox.json"
ALL_PARTS = "all"
SEMANTIC = "semantic_map"


class DatasetError(ValueError):
    """A training data folder that does not follow the layout: one line naming the video and the problem."""


@dataclass(frozen=True)
class VideoEntry:
    """One video folder: its path, the part it belongs to ("" for the one-level layout), its name."""

    path: Path
    part: str

    @property
    def name(self) -> str:
        return f"{self.part}/{self.path.name}" if self.part else self.path.name


@dataclass
class VideoInfo:
    """What the structural check found in a video folder (no image is decoded for this)."""

    entry: VideoEntry
    frame_names: list[str]                       # file stems, sorted; shared by every layer
    files: dict[str, list[Path]]                 # "images", each guidance type, "mask" -> one path per frame
    bboxes: list[tuple[float, float, float, float]] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)


@dataclass
class DatasetSummary:
    """Result of a successful `check_dataset`."""

    root: Path
    videos: int
    frames: int
    parts: list[str]
    guids: tuple[str, ...]
    min_frames: int
    max_frames: int
    with_bbox: int
    verified_files: int = 0
    infos: list[VideoInfo] = field(default_factory=list, repr=False)

    def line(self) -> str:
        parts = ", ".join(p or "(top level)" for p in self.parts)
        checked = f"; {self.verified_files} image files decoded" if self.verified_files else ""
        return (f"{self.root}: {self.videos} videos, {self.frames} frames ({self.min_frames}-{self.max_frames} "
                f"per video), parts: {parts}; guids: {', '.join(self.guids)}; human_bbox.json in "
                f"{self.with_bbox} of {self.videos}{checked}")


# -- finding videos ---------------------------------------------------------------------------

def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _looks_like_video(folder: Path) -> bool:
    return (folder / IMAGES).is_dir() or any((folder / layer).is_dir() for layer in LAYER_NAMES)


def find_videos(root: str | os.PathLike, data_parts: Sequence[str] = (ALL_PARTS,)) -> list[VideoEntry]:
    """The video folders under `root`, one level (ROOT/<video>) or two (ROOT/<part>/<video>) deep, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist or is not a folder; set data.video_folder "
                           "to the folder holding the training videos")
    if (root / IMAGES).is_dir():
        raise DatasetError(f"{root} is itself a video folder (it has {IMAGES}/); point data.video_folder at the "
                           "folder that holds the videos, e.g. its parent")
    parts = [data_parts] if isinstance(data_parts, str) else list(data_parts or [ALL_PARTS])
    if ALL_PARTS in parts:
        candidates = _visible_dirs(root)
    else:
        candidates = []
        for part in parts:
            folder = root / part
            if not folder.is_dir():
                raise DatasetError(f"data part {part!r} listed in data_parts is not a folder of {root}; "
                                   f"use [\"all\"] or names of its sub-folders")
            candidates.append(folder)
    videos = []
    for folder in candidates:
        if _looks_like_video(folder):
            videos.append(VideoEntry(folder, ""))
            continue
        for sub in _visible_dirs(folder):
            videos.append(VideoEntry(sub, folder.name))
    if not videos:
        raise DatasetError(f"{root}: no videos found; expected ROOT/<video>/images/ or ROOT/<part>/<video>/images/ "
                           "with one folder per guidance type next to images/")
    return videos


# -- checking a video -------------------------------------------------------------------------

def required_layers(guids: Sequence[str]) -> list[str]:
    """The layer folders a video needs for these guidance types (mask/ joins semantic_map)."""
    unknown = [g for g in guids if g not in GUIDANCE_TYPES]
    if unknown:
        raise DatasetError(f"unknown guidance type(s) {unknown} in guids; known types: {', '.join(GUIDANCE_TYPES)}")
    if not guids:
        raise DatasetError(f"guids is empty; list at least one of {', '.join(GUIDANCE_TYPES)}")
    layers = list(dict.fromkeys(guids))
    if SEMANTIC in layers:
        layers.append(MASK)
    return layers


def read_bboxes(path: Path, num_frames: int, where: str) -> list[tuple[float, float, float, float]]:
    """human_bbox.json: a list of [x0, y0, x1, y1] per frame; a clear error otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{where}: cannot read {BBOX_FILE}: {exc}; write it as a JSON list of "
                           "[x0, y0, x1, y1] boxes, one per frame") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{where}: {BBOX_FILE} must hold a JSON list of [x0, y0, x1, y1] boxes, "
                           f"got {type(data).__name__}")
    if len(data) != num_frames:
        raise DatasetError(f"{where}: {BBOX_FILE} has {len(data)} boxes for {num_frames} frames in {IMAGES}/; "
                           "write one [x0, y0, x1, y1] box per frame")
    boxes = []
    for i, box in enumerate(data):
        ok = isinstance(box, (list, tuple)) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        if not ok:
            raise DatasetError(f"{where}: {BBOX_FILE} box {i} is {box!r}; each box must be 4 numbers x0, y0, x1, y1")
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise DatasetError(f"{where}: {BBOX_FILE} box {i} {box!r} is empty (need x1 > x0 and y1 > y0)")
        boxes.append((x0, y0, x1, y1))
    return boxes


def scan_video(entry: VideoEntry, guids: Sequence[str] = GUIDANCE_TYPES, bbox_required: bool = False) -> VideoInfo:
    """The structural check of one video (folders, file names and counts, mask, bbox file); no decoding."""
    where = f"video {entry.name} ({entry.path})"
    layers = required_layers(guids)
    if not (entry.path / IMAGES).is_dir():
        raise DatasetError(f"{where}: no {IMAGES}/ folder; every video needs its RGB frames in {IMAGES}/")
    for layer in layers:
        if not (entry.path / layer).is_dir():
            if layer == MASK:
                raise DatasetError(f"{where}: {MASK}/ is missing while semantic_map is used; add the masks or "
                                   "drop semantic_map from guids")
            raise DatasetError(f"{where}: no {layer}/ folder for guidance type {layer}; add it or drop "
                               f"{layer} from guids")
    files = {name: list_frames(entry.path / name) for name in [IMAGES, *layers]}
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise DatasetError(f"{where}: empty folder {empty[0]}/ (no PNG or JPEG frames)")
    stems = {name: [p.stem for p in paths] for name, paths in files.items()}
    for name, names in stems.items():
        if len(set(names)) != len(names):
            dup = sorted(n for n in set(names) if names.count(n) > 1)[:3]
            raise DatasetError(f"{where}: {name}/ holds several files per frame name (e.g. {dup}); keep one "
                               "image per frame")
    try:
        frame_names = check_frame_lists(stems, entry.path)
    except GuidanceFolderError as exc:
        detail = str(exc).split(": ", 1)[-1]
        raise DatasetError(f"{where}: {detail}; every layer folder needs one file per frame of {IMAGES}/, "
                           "with the same names") from exc
    bboxes = None
    bbox_path = entry.path / BBOX_FILE
    if bbox_path.is_file():
        bboxes = read_bboxes(bbox_path, len(frame_names), where)
    elif bbox_required:
        raise DatasetError(f"{where}: bbox_crop is on but {BBOX_FILE} is missing; add it or set "
                           "data.bbox_crop false")
    return VideoInfo(entry, frame_names, files, bboxes)


def _decode_check(path: Path) -> tuple[int, int] | str:
    """(width, height) if the file decodes, else the reason it does not (cheap: PNG verify, JPEG draft)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            size = image.size
            if image.format == "PNG":
                image.verify()  # every chunk's CRC up to IEND, without inflating the pixels
            else:
                if image.format == "JPEG":
                    image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
        return size
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def verify_video(info: VideoInfo, workers: int = 4) -> int:
    """Decode-check every image of a video and check that all frames share one size; returns the count."""
    where = f"video {info.entry.name} ({info.entry.path})"
    paths = [p for name in info.files for p in info.files[name]]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(_decode_check, paths))
    expected, first = None, None
    for path, result in zip(paths, results):
        relative = path.relative_to(info.entry.path)
        if isinstance(result, str):
            raise DatasetError(f"{where}: unreadable image {relative} ({result}); re-export or remove this frame "
                               "from every layer")
        if expected is None:
            expected, first = result, relative
        elif result != expected:
            raise DatasetError(f"{where}: frame sizes differ: {first} is {expected[0]}x{expected[1]} but "
                               f"{relative} is {result[0]}x{result[1]}; every frame and guidance map of a video "
                               "needs the same size")
    return len(paths)


def check_dataset(
    root: str | os.PathLike,
    guids: Sequence[str] = GUIDANCE_TYPES,
    data_parts: Sequence[str] = (ALL_PARTS,),
    bbox_crop: bool = False,
    verify_images: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetSummary:
    """Check a training data folder; raises `DatasetError` naming the first bad video and what is wrong.

    Structure first (folders, frame names and counts, mask with semantic_map, human_bbox.json), then, with
    `verify_images`, every image file is decode-checked and every frame of a video must have one size.
    `progress(done, total)` is called after each video.
    """
    root = Path(root)
    required_layers(guids)  # an unknown guidance type is reported before the folder scan
    entries = find_videos(root, data_parts)
    infos, verified = [], 0
    for i, entry in enumerate(entries):
        info = scan_video(entry, guids, bbox_required=bbox_crop)
        if verify_images:
            verified += verify_video(info)
        infos.append(info)
        if progress is not None:
            progress(i + 1, len(entries))
    counts = [info.num_frames for info in infos]
    return DatasetSummary(
        root=root, videos=len(infos), frames=sum(counts), parts=sorted({e.part for e in entries}),
        guids=tuple(guids), min_frames=min(counts), max_frames=max(counts),
        with_bbox=sum(info.bboxes is not None for info in infos), verified_files=verified, infos=infos,
    )


# -- writing a video --------------------------------------------------------------------------

IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg"}
GRAYSCALE_LAYERS = ("depth", MASK)


def _as_frames(name: str, frames, count: int | None) -> np.ndarray:
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        raise DatasetError(f"{name} frames must be uint8, got {array.dtype}")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DatasetError(f"{name} frames must be (N, H, W) or (N, H, W, 3), got shape {array.shape}")
    if count is not None and len(array) != count:
        raise DatasetError(f"{name} has {len(array)} frames but images has {count}")
    return array


class VideoLayoutWriter:
    """Writes one training video in the layout above; it appears in place complete or not at all.

        with VideoLayoutWriter(ROOT / "part" / "video01") as writer:
            writer.add_frames(images, {"depth": d, "normal": n, "semantic_map": s, "dwpose": p, "mask": m},
                              bboxes=boxes)          # any number of chunks
            writer.add_image("background.png", background)
            writer.add_npz("motion.npz", poses=poses)

    Frames are named 0001, 0002, ... across chunks (`name_width` digits; never 0000). images/ is PNG
    (default) or JPEG; guidance maps are PNG: depth and mask 8-bit grayscale, the others RGB.
    Everything goes into a hidden temporary sibling folder (".<name>.*.partial", ignored by
    `find_videos`) renamed into place when the block ends without an exception; an exception,
    including KeyboardInterrupt, removes it. Without `with`: `open()`, then `commit()` or `abort()`.
    """

    def __init__(self, video_dir: str | os.PathLike, overwrite: bool = False, image_format: str = "png",
                 name_width: int = 4, jpeg_quality: int = 95) -> None:
        if image_format.lower() not in IMAGE_FORMATS:
            raise DatasetError(f"image_format {image_format!r} is not supported; use png or jpg")
        self.video_dir = Path(video_dir)
        self.overwrite = overwrite
        self.image_suffix = IMAGE_FORMATS[image_format.lower()]
        self.name_width = int(name_width)
        self.jpeg_quality = int(jpeg_quality)
        self.frames_written = 0
        self._layers: tuple[str, ...] | None = None
        self._size: tuple[int, int] | None = None
        self._bboxes: list[list[float]] | None = None
        self._extras: set[str] = set()
        self._staging: Path | None = None

    # lifecycle
    def open(self) -> VideoLayoutWriter:
        if self._staging is not None:
            return self
        self._check_target()
        try:
            self.video_dir.parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.video_dir.name}.", suffix=PARTIAL_MARK,
                                                  dir=self.video_dir.parent))
            normal_dir_mode(self._staging)
        except OSError as exc:
            raise DatasetError(f"cannot create a folder next to {self.video_dir}: {exc.strerror or exc}") from exc
        return self

    def __enter__(self) -> VideoLayoutWriter:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _check_target(self) -> None:
        target = self.video_dir
        if target.exists() and not target.is_dir():
            raise DatasetError(f"{target} exists and is not a folder; choose another output path")
        if target.is_dir() and any(target.iterdir()) and not self.overwrite:
            raise DatasetError(f"{target} already exists and is not empty; choose another folder or overwrite")

    def _require_open(self) -> Path:
        if self._staging is None:
            raise DatasetError("VideoLayoutWriter is not open; use it in a `with` block or call open()")
        return self._staging

    def abort(self) -> None:
        """Remove everything written so far (the target is left as it was)."""
        staging, self._staging = self._staging, None
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    def commit(self) -> Path:
        """Finish the video (human_bbox.json) and rename it into place; returns the video folder."""
        staging = self._require_open()
        try:
            if self.frames_written == 0:
                raise DatasetError(f"no frames were written for {self.video_dir}")
            if self._bboxes is not None:
                (staging / BBOX_FILE).write_text(json.dumps(self._bboxes))
            self._check_target()
            replace_dir(staging, self.video_dir)  # an old folder (overwrite) is kept until the swap worked
            self._staging = None
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise DatasetError(f"cannot move {staging.name} into place as {self.video_dir}: "
                                   f"{exc.strerror or exc}") from exc
            raise
        return self.video_dir

    # content
    def frame_names(self, count: int) -> list[str]:
        start = self.frames_written + 1
        last = start + count - 1
        if len(str(last)) > self.name_width:
            raise DatasetError(f"{last} frames do not fit {self.name_width}-digit frame names (they would "
                               "sort wrongly); pass a larger name_width")
        return [f"{i:0{self.name_width}d}" for i in range(start, start + count)]

    def add_frames(self, images, layers: Mapping[str, object] | None = None,
                   bboxes: Sequence[Sequence[float]] | None = None) -> list[str]:
        """Append N frames: images uint8 (N, H, W, 3); layers name -> (N, H, W[, 3]); bboxes (N, 4).

        Bad arguments raise `DatasetError` before anything is written (the writer stays usable); a
        failure while writing removes the staging folder (the writer is then closed).
        """
        staging = self._require_open()
        images = _as_frames(IMAGES, images, None)
        count = len(images)
        if count == 0:
            raise DatasetError("add_frames got no frames")
        layers = dict(layers or {})
        unknown = [name for name in layers if name not in LAYER_NAMES]
        if unknown:
            raise DatasetError(f"unknown layer(s) {unknown}; expected some of {', '.join(LAYER_NAMES)}")
        arrays = {name: _as_frames(name, frames, count) for name, frames in layers.items()}
        size = images.shape[1:3]
        for name, array in arrays.items():
            if array.shape[1:3] != size:
                raise DatasetError(f"layer {name} is {array.shape[2]}x{array.shape[1]} but images are "
                                   f"{size[1]}x{size[0]}")
        if self._layers is not None and (tuple(sorted(arrays)) != self._layers or size != self._size):
            raise DatasetError(f"every chunk must hold the same layers and size: first {self._layers} "
                               f"{self._size}, now {tuple(sorted(arrays))} {size}")
        if self._layers is not None and (bboxes is None) != (self._bboxes is None):
            raise DatasetError("give bboxes with every chunk or with none")
        boxes = None
        if bboxes is not None:
            boxes = np.asarray(bboxes, dtype=np.float64)
            if boxes.shape != (count, 4) or not np.isfinite(boxes).all():
                raise DatasetError(f"bboxes must be finite numbers of shape ({count}, 4), got {boxes.shape}")
        names = self.frame_names(count)
        if self._layers is None:
            self._layers, self._size = tuple(sorted(arrays)), size
            self._bboxes = [] if boxes is not None else None
        try:
            self._write_frames(staging, images, arrays, names)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise DatasetError(f"cannot write frames for {self.video_dir}: {exc.strerror or exc}") from exc
            raise
        if boxes is not None:
            self._bboxes.extend([[float(v) for v in box] for box in boxes])
        self.frames_written += count
        return names

    def _write_frames(self, staging: Path, images: np.ndarray, arrays: Mapping[str, np.ndarray],
                      names: Sequence[str]) -> None:
        from PIL import Image

        folder = staging / IMAGES
        folder.mkdir(exist_ok=True)
        for frame, name in zip(images, names):
            rgb = np.repeat(frame, 3, -1) if frame.shape[-1] == 1 else frame
            if self.image_suffix == ".jpg":
                Image.fromarray(rgb).save(folder / f"{name}.jpg", quality=self.jpeg_quality)
            else:
                Image.fromarray(rgb).save(folder / f"{name}.png")
        for layer, array in arrays.items():
            folder = staging / layer
            folder.mkdir(exist_ok=True)
            for frame, name in zip(array, names):
                if layer in GRAYSCALE_LAYERS:
                    data = frame[..., 0]
                else:
                    data = np.repeat(frame, 3, -1) if frame.shape[-1] == 1 else frame
                Image.fromarray(np.ascontiguousarray(data)).save(folder / f"{name}.png")

    def _extra_path(self, name: str) -> Path:
        staging = self._require_open()
        reserved = {IMAGES, BBOX_FILE, *LAYER_NAMES}
        if Path(name).name != name or name.startswith(".") or name in reserved or Path(name).stem in reserved:
            raise DatasetError(f"extra file name {name!r} must be a plain file name other than "
                               f"{', '.join(sorted(reserved))}")
        if name in self._extras:
            raise DatasetError(f"extra file {name} was already written")
        self._extras.add(name)
        return staging / name

    def add_bytes(self, name: str, data: bytes | str) -> Path:
        """An extra file at the video's top level (e.g. a small JSON description)."""
        path = self._extra_path(name)
        try:
            path.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
        except OSError as exc:
            raise DatasetError(f"cannot write {name} for {self.video_dir}: {exc.strerror or exc}") from exc
        return path

    def add_image(self, name: str, image) -> Path:
        """An extra image file (e.g. background.png): uint8 (H, W), (H, W, 3) or (H, W, 4)."""
        from PIL import Image

        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise DatasetError(f"{name} must be a uint8 (H, W[, C]) image, got {array.dtype} {array.shape}")
        path = self._extra_path(name)
        try:
            Image.fromarray(np.ascontiguousarray(array)).save(path)
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"cannot write {name} for {self.video_dir}: {exc}") from exc
        return path

    def add_npz(self, name: str, **arrays) -> Path:
        """An extra .npz of plain (non-object) arrays, e.g. motion.npz; readable with allow_pickle=False."""
        if not name.endswith(".npz"):
            raise DatasetError(f"{name}: npz extras need a .npz name")
        plain = {}
        for key, value in arrays.items():
            array = np.asarray(value)
            if array.dtype == object:
                raise DatasetError(f"{name}: array {key!r} holds Python objects; store plain numbers or strings")
            plain[key] = array
        path = self._extra_path(name)
        try:
            with open(path, "wb") as handle:
                np.savez(handle, **plain)
        except OSError as exc:
            raise DatasetError(f"cannot write {name} for {self.video_dir}: {exc.strerror or exc}") from exc
        return path


def write_video(video_dir: str | os.PathLike, images, layers: Mapping[str, object] | None = None,
                bboxes: Sequence[Sequence[float]] | None = None, extras: Iterable[tuple[str, object]] = (),
                **writer_kwargs) -> Path:
    """One-call form of `VideoLayoutWriter` for frames already in memory; extras are (name, image array)."""
    with VideoLayoutWriter(video_dir, **writer_kwargs) as writer:
        writer.add_frames(images, layers, bboxes)
        for name, image in extras:
            writer.add_image(name, image)
    return Path(video_dir)
