"""Data preparation: videos of people -> Champ training videos (the reference's six manual steps).

Per video (an mp4/mov/mkv/webm file or a folder of frames):

1. frames (PyAV for video files; frame folders sorted numerically by file stem when the stems are
   numbers, else by name);
2. keypoints: DWPose on every frame (`champ_core.pose`, the largest person of the first frame with
   anybody tracked by box overlap, `person` to choose another), or `KEYPOINTS/<video>.json` /
   `KEYPOINTS/<video>/*.json` from any detector (POSE_KEYPOINT; OpenPose-18, COCO-17, BODY_25 or
   whole-body 133 people);
3. SMPL fit of the whole sequence (`fit_keypoints` with the library's defaults, HMR2's camera for
   the frame size, feet and hands used when present), then `smooth_motion` (Gaussian, 1 frame);
4. guidance: depth, normal, semantic_map and mask rendered from the fitted body; dwpose = the
   fitted body's projected OpenPose-18 skeleton drawn with the detected hands and face;
   human_bbox.json = per frame the box around the body's mask and the keypoints;
5. written through `VideoLayoutWriter` (staged in a hidden sibling folder, renamed into place),
   with `motion.npz` (the fitted, smoothed motion, `Motion.load` reads it); then `.done` is
   written atomically, last. A rerun skips every video whose `.done` exists.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
DONE_FILE = ".done"
MOTION_FILE = "motion.npz"
GUIDANCE_LAYERS = ("depth", "normal", "semantic_map", "mask")
RENDER_CHUNK = 64  # frames rendered and written at a time

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


class PrepareError(ValueError):
    """A video (or the input folder) that cannot be prepared; the message names it and what to do."""


@dataclass(frozen=True)
class VideoSource:
    name: str
    path: Path

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


@dataclass
class PrepareOptions:
    device: str = "cpu"
    person: int = 0
    smoothing: str = "gaussian"
    smoothing_strength: float = 1.0
    image_format: str = "png"
    fps: float = 30.0  # for frame folders (video files carry their own)
    backend: str = "auto"
    fit: object | None = None  # a FitConfig; None = the library's defaults on `device`


@dataclass
class PrepareSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames: int = 0

    def line(self) -> str:
        text = f"{len(self.done)} prepared ({self.frames} frames), {len(self.skipped)} already done, {len(self.failed)} failed"
        if self.failed:
            text += ": " + "; ".join(f"{name}: {why}" for name, why in self.failed.items())
        return text


# ------------------------------------------------------------------------------------- inputs
def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir() if p.is_file())


def find_sources(videos: str | os.PathLike) -> list[VideoSource]:
    """The videos under `videos`: one video file, one frame folder, or a folder of both."""
    root = Path(videos)
    if root.is_file():
        if root.suffix.lower() not in VIDEO_SUFFIXES:
            raise PrepareError(f"{root}: not a video file ({', '.join(VIDEO_SUFFIXES)}) nor a folder of videos or frames")
        return [VideoSource(root.stem, root)]
    if not root.is_dir():
        raise PrepareError(f"{root} does not exist; give a video file, a frame folder or a folder of them")
    if _is_frame_folder(root):
        return [VideoSource(root.name, root)]
    sources = []
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(VideoSource(path.stem, path))
        elif path.is_dir() and _is_frame_folder(path):
            sources.append(VideoSource(path.name, path))
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PrepareError(f"{root}: several inputs map to the same video name ({', '.join(twice)}); rename one")
    if not sources:
        raise PrepareError(f"{root} holds no video files ({', '.join(VIDEO_SUFFIXES)}) and no frame folders")
    return sources


def _frame_key(path: Path):
    return (0, int(path.stem), "") if re.fullmatch(r"\d+", path.stem) else (1, 0, path.stem)


def read_frames(source: VideoSource, fps: float = 30.0) -> tuple[np.ndarray, float, list[str]]:
    """uint8 RGB frames (T, H, W, 3), the frame rate and the frame names of one video."""
    if not source.is_folder:
        from ..video import VideoError, read_video

        try:
            frames, rate = read_video(source.path)
        except VideoError as exc:
            raise PrepareError(f"cannot decode the video ({exc}); re-encode it or extract its frames") from exc
        except Exception as exc:  # PyAV decoding errors in the middle of a broken file
            raise PrepareError(f"cannot decode the video ({type(exc).__name__}: {exc}); re-encode it") from exc
        return frames, rate or fps, [f"{i + 1:04d}" for i in range(len(frames))]
    from PIL import Image, UnidentifiedImageError

    files = sorted((p for p in source.path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                   key=_frame_key)
    frames = []
    for path in files:
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as exc:
            raise PrepareError(f"frame {path.name} cannot be read ({exc}); replace or remove it") from exc
        if frames[-1].shape != frames[0].shape:
            raise PrepareError(f"frame {path.name} is {frames[-1].shape[1]}x{frames[-1].shape[0]}, the first is "
                               f"{frames[0].shape[1]}x{frames[0].shape[0]}; all frames need one size")
    return np.stack(frames), fps, [p.stem for p in files]


# ---------------------------------------------------------------------------------- keypoints
@dataclass
class VideoKeypoints:
    pose: object  # PoseFrames in frame pixels
    feet: np.ndarray | None  # (T, 6, 3)
    boxes: np.ndarray | None  # (T, 4) detector boxes (NaN where nobody), when detected


def keypoints_from_file(folder: Path, source: VideoSource, width: int, height: int, count: int,
                        person: int = 0) -> VideoKeypoints:
    """`folder/<video>.json` (POSE_KEYPOINT, a list of frames) or `folder/<video>/*.json` (one per frame)."""
    from ..body.keypoints import KeypointError
    from ..pose.format import parse_with_feet

    path = folder / f"{source.name}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PrepareError(f"{path} is not readable JSON ({exc}); rewrite it") from exc
    elif (folder / source.name).is_dir():
        files = sorted((folder / source.name).glob("*.json"), key=_frame_key)
        try:
            data = [json.loads(f.read_text()) for f in files]
        except (OSError, json.JSONDecodeError) as exc:
            raise PrepareError(f"{folder / source.name} holds a JSON file that cannot be read ({exc})") from exc
    else:
        raise PrepareError(f"no keypoints for it: expected {path} or a folder {folder / source.name} of per-frame JSON")
    frames = [data] if isinstance(data, dict) else list(data)
    if len(frames) != count:
        raise PrepareError(f"{path.name}: {len(frames)} keypoint frames for {count} video frames; they must match")
    try:
        pose, feet = parse_with_feet(frames, person="largest" if person == 0 else _index_of_rank(frames, person))
    except KeypointError as exc:
        raise PrepareError(f"keypoints {path.name}: {exc}") from exc
    if (pose.width, pose.height) != (width, height):  # keypoints of a resized copy: scale to the frames
        sx, sy = width / pose.width, height / pose.height
        for arr in (pose.body, pose.hands, pose.face, feet):
            if arr is not None:
                arr[..., 0] *= sx
                arr[..., 1] *= sy
        pose.width, pose.height = width, height
    return VideoKeypoints(pose, feet, None)


def _index_of_rank(frames: list, rank: int) -> int:
    """The index (in its frame's people list) of the `rank`-th largest person, by the box of their
    body points, in the first frame with anybody: what `--person` means for detections too."""
    for t, frame in enumerate(frames):
        areas = []
        for i, person in enumerate((frame or {}).get("people") or []):
            pts = np.asarray(person.get("pose_keypoints_2d") or [], dtype=np.float64).reshape(-1)
            pts = pts[: pts.size - pts.size % 3].reshape(-1, 3)
            pts = pts[(pts[:, 2] > 0) & np.isfinite(pts).all(1)]
            if len(pts) >= 2:
                span = pts[:, :2].max(0) - pts[:, :2].min(0)
                areas.append((-float(span[0] * span[1]), i))
        if areas:
            ranked = [i for _, i in sorted(areas)]
            if rank >= len(ranked):
                raise PrepareError(f"--person {rank}: frame {t} (the first with anybody) has {len(ranked)} people; "
                                   f"choose 0..{len(ranked) - 1}")
            return ranked[rank]
    return rank


def keypoints_from_detection(detection) -> VideoKeypoints:
    """A tracked `PoseSequence` -> PoseFrames (body, hands, face) and feet, in frame pixels."""
    from ..body.keypoints import PoseFrames
    from ..pose.format import wholebody_to_openpose

    T = len(detection.people)
    body, feet = np.zeros((T, 18, 3)), np.zeros((T, 6, 3))
    hands, face = np.zeros((T, 2, 21, 3)), np.zeros((T, 68, 3))
    boxes = np.full((T, 4), np.nan)
    present = np.zeros(T, dtype=bool)
    for t, (frame, index) in enumerate(zip(detection.people, detection.tracked)):
        if index is None:
            continue
        parts = wholebody_to_openpose(frame[index].keypoints)
        body[t], feet[t], hands[t], face[t] = parts["body"], parts["feet"], parts["hands"], parts["face"]
        boxes[t] = frame[index].box
        present[t] = (parts["body"][:, 2] > 0).sum() >= 3
    if not present.any():
        raise PrepareError("the tracked person never has 3 or more confident body keypoints; choose another --person")
    pose = PoseFrames(body, detection.width, detection.height, hands=hands, face=face, present=present)
    return VideoKeypoints(pose, feet, boxes)


# ------------------------------------------------------------------------------------- output
def person_boxes(mask: np.ndarray, pose, feet: np.ndarray | None, detected: np.ndarray | None) -> np.ndarray:
    """Per frame (T, 4) x0, y0, x1, y1: the box around the body's mask, the keypoints and the detector's box."""
    T, H, W = mask.shape
    boxes = np.full((T, 4), np.nan)
    for t in range(T):
        xs, ys = [], []
        rows, cols = np.nonzero(mask[t].any(1))[0], np.nonzero(mask[t].any(0))[0]
        if rows.size:
            xs += [cols[0], cols[-1] + 1]
            ys += [rows[0], rows[-1] + 1]
        points = [pose.body[t]] + [a[t].reshape(-1, 3) for a in (pose.hands, pose.face, feet) if a is not None]
        pts = np.concatenate(points)
        pts = pts[pts[:, 2] > 0]
        if pts.size:
            xs += [pts[:, 0].min(), pts[:, 0].max()]
            ys += [pts[:, 1].min(), pts[:, 1].max()]
        if detected is not None and np.isfinite(detected[t]).all():
            xs += [detected[t, 0], detected[t, 2]]
            ys += [detected[t, 1], detected[t, 3]]
        if xs:
            boxes[t] = [max(0.0, min(xs)), max(0.0, min(ys)), min(float(W), max(xs)), min(float(H), max(ys))]
    seen = np.isfinite(boxes).all(1)
    if not seen.any():
        boxes[:] = [0, 0, W, H]
    else:  # frames without anything: the nearest frame's box
        idx = np.nonzero(seen)[0]
        nearest = idx[np.abs(np.arange(T)[:, None] - idx[None]).argmin(1)]
        boxes = boxes[nearest]
    return boxes


def render_layers(motion, body, pose, start: int, stop: int, backend: str = "auto", device: str = "cpu") -> dict:
    """Guidance maps of frames start..stop-1 of a fitted motion (uint8, the layout's layers)."""
    from ..body.keypoints import skeleton_keypoints
    from ..render import draw_skeleton, render_guidance

    part = motion.slice(start, stop)
    posed = part.pose(body)
    layers = render_guidance(posed.vertices, body.faces, body.part_labels, part.camera, layers=GUIDANCE_LAYERS,
                             backend=backend, device=device)
    skeleton = skeleton_keypoints(posed.vertices, posed.joints, part.camera)
    hands = None if pose.hands is None else pose.hands[start:stop]
    face = None if pose.face is None else pose.face[start:stop]
    layers["dwpose"] = draw_skeleton(skeleton, part.camera.width, part.camera.height, hands=hands, face=face)
    return layers


def is_done(out: Path, name: str) -> bool:
    return (out / name / DONE_FILE).is_file()


def prepare_video(source: VideoSource, out: str | os.PathLike, body, options: PrepareOptions | None = None,
                  detector=None, keypoints_dir: str | os.PathLike | None = None,
                  progress: ProgressFn | None = None) -> Path:
    """Prepare one video into `out/<name>/` (see the module docstring); returns the video folder."""
    from ..atomic import atomic_file
    from ..body.fitting import FitConfig, fit_keypoints
    from ..body.keypoints import KeypointError
    from ..body.smoothing import smooth_motion
    from ..pose.errors import PoseDetectionError
    from .layout import DatasetError, VideoLayoutWriter

    options = options or PrepareOptions()
    target = Path(out) / source.name

    def report(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    frames, fps, names = read_frames(source, options.fps)
    T, H, W = frames.shape[:3]
    if keypoints_dir is not None:
        kp = keypoints_from_file(Path(keypoints_dir), source, W, H, T, options.person)
    else:
        if detector is None:
            raise PrepareError("no pose detector and no --keypoints folder given")
        try:
            detection = detector.detect_sequence(frames, person=options.person, total=T,
                                                 progress=lambda d, n: report("pose", d, n))
        except PoseDetectionError as exc:
            raise PrepareError(str(exc)) from exc
        kp = keypoints_from_detection(detection)
    config = options.fit or FitConfig(device=options.device)
    try:
        motion = fit_keypoints(kp.pose, body, fps=fps, config=config, frame_names=names, feet=kp.feet,
                               progress=lambda d, n: report("fit", d, n))
    except KeypointError as exc:
        raise PrepareError(f"cannot fit a body: {exc}") from exc
    motion = smooth_motion(motion, options.smoothing, options.smoothing_strength)
    body_cpu = body.to("cpu")
    try:
        with VideoLayoutWriter(target, overwrite=True, image_format=options.image_format) as writer:
            for start in range(0, T, RENDER_CHUNK):
                stop = min(T, start + RENDER_CHUNK)
                layers = render_layers(motion, body_cpu, kp.pose, start, stop, options.backend, options.device)
                boxes = person_boxes(layers["mask"], _sliced(kp.pose, start, stop),
                                     None if kp.feet is None else kp.feet[start:stop],
                                     None if kp.boxes is None else kp.boxes[start:stop])
                writer.add_frames(frames[start:stop], layers, bboxes=boxes)
                report("write", stop, T)
            with _temporary_npz(target.parent) as tmp:
                motion.save(tmp)
                with np.load(tmp, allow_pickle=False) as data:
                    writer.add_npz(MOTION_FILE, **{k: data[k] for k in data.files})
    except DatasetError as exc:
        raise PrepareError(str(exc)) from exc
    with atomic_file(target / DONE_FILE) as tmp:
        tmp.write_text(json.dumps({"frames": T, "fps": fps, "width": W, "height": H,
                                   "keypoints": "file" if keypoints_dir is not None else "dwpose"}))
    return target


class _sliced:
    """A PoseFrames view of frames start..stop-1 (only what `person_boxes` reads)."""

    def __init__(self, pose, start: int, stop: int) -> None:
        self.body = pose.body[start:stop]
        self.hands = None if pose.hands is None else pose.hands[start:stop]
        self.face = None if pose.face is None else pose.face[start:stop]


def _temporary_npz(folder: Path):
    import contextlib
    import tempfile

    @contextlib.contextmanager
    def manager():
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".motion.", suffix=".partial.npz", dir=folder)
        os.close(fd)
        try:
            yield Path(name)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    return manager()


def prepare_videos(sources: Sequence[VideoSource], out: str | os.PathLike, body, options: PrepareOptions | None = None,
                   detector=None, keypoints_dir: str | os.PathLike | None = None,
                   on_video: Callable[[VideoSource], ProgressFn | None] | None = None,
                   log: Callable[[str], None] = print) -> PrepareSummary:
    """Every video not finished yet; a failing video is logged, skipped and listed in the summary."""
    summary = PrepareSummary()
    for source in sources:
        if is_done(Path(out), source.name):
            summary.skipped.append(source.name)
            log(f"{source.name}: already prepared ({DONE_FILE} present), skipped")
            continue
        try:
            prepare_video(source, out, body, options, detector, keypoints_dir,
                          on_video(source) if on_video is not None else None)
        except PrepareError as exc:
            summary.failed[source.name] = str(exc)
            log(f"{source.name}: skipped: {exc}")
            continue
        with open(Path(out) / source.name / DONE_FILE) as handle:
            frames = int(json.load(handle)["frames"])
        summary.frames += frames
        summary.done.append(source.name)
        log(f"{source.name}: prepared {frames} frames")
    return summary


# ------------------------------------------------------------------------- a driving video
def driving_video_from_motion(name: str = "dance", seconds: float = 2.0, fps: float = 15.0, width: int = 256,
                              height: int = 256, body=None) -> tuple[np.ndarray, list[dict], object]:
    """A video of the open body moving through a built-in motion (its normal map over grey) and the
    POSE_KEYPOINT of its projected OpenPose-18 body, feet and hand points: a driving video the pack
    makes itself (tests, the template's example input, benchmarks). Returns (frames, keypoints, motion)."""
    from ..body.keypoints import skeleton_keypoints
    from ..body.model import LANDMARK_VERTICES, open_body_model
    from ..body.motions import builtin_motion, default_camera
    from ..render import render_guidance

    body = body or open_body_model()
    motion = builtin_motion(name, body, seconds=seconds, fps=fps, camera=default_camera(width, height))
    posed = motion.pose(body)
    maps = render_guidance(posed.vertices, body.faces, body.part_labels, motion.camera, layers=("normal", "mask"))
    alpha = (maps["mask"][..., None].astype(np.float32) / 255.0)
    frames = (maps["normal"] * alpha + 110 * (1 - alpha)).round().astype(np.uint8)
    body18 = skeleton_keypoints(posed.vertices, posed.joints, motion.camera)
    from ..body.keypoints import project

    verts = posed.vertices.cpu().numpy().astype(np.float64)
    joints = posed.joints.cpu().numpy().astype(np.float64)

    def points(ids):
        xy = project(verts[:, ids], motion.camera)
        return np.concatenate([xy, np.ones((*xy.shape[:2], 1))], -1)

    feet = points([LANDMARK_VERTICES[n] for n in ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
                                                  "right_small_toe", "right_heel")])
    hands = np.zeros((motion.num_frames, 2, 21, 3))
    for side, (wrist, prefix) in enumerate(((20, "left"), (21, "right"))):
        xy = project(joints[:, wrist:wrist + 1], motion.camera)
        hands[:, side, 0] = np.concatenate([xy[:, 0], np.ones((motion.num_frames, 1))], -1)
        tips = points([LANDMARK_VERTICES[f"{prefix}_{f}"] for f in ("thumb", "index", "middle", "ring", "pinky")])
        hands[:, side, [4, 8, 12, 16, 20]] = tips
    inside = lambda a: (a[..., 0] >= 0) & (a[..., 0] < width) & (a[..., 1] >= 0) & (a[..., 1] < height)  # noqa: E731
    for arr in (feet, hands):
        arr[~inside(arr)] = 0.0
    keypoints = []
    for t in range(motion.num_frames):
        person = {"pose_keypoints_2d": body18[t].reshape(-1).tolist(),
                  "hand_left_keypoints_2d": hands[t, 0].reshape(-1).tolist(),
                  "hand_right_keypoints_2d": hands[t, 1].reshape(-1).tolist(),
                  "foot_keypoints_2d": feet[t].reshape(-1).tolist()}
        keypoints.append({"people": [person], "canvas_width": width, "canvas_height": height})
    return frames, keypoints, motion
