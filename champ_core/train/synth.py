"""Generated people in Champ's training layout: the data the pack's own small model learns from.

Every video is a mannequin-like person (the open body with random proportions, clothing, skin and
hair colours and patterns on the body surface, diffuse shading from a random light) moving over a
random background (a third each flat, gradient, textured), seen by a camera at a random yaw of
-60 to 60 degrees and filling 50-90 % of the frame height. Motions are the built-ins at a random
phase, or random joint trajectories inside the fitter's joint ranges. Each video depends only on
(seed, video index): the same pair always gives the same frames, whatever else is generated.

The guidance maps come from the same renderer (torch back end, so every machine draws the same
pixels) and skeleton drawing as everywhere else in the pack; the RGB frame's person covers exactly
the mask's pixels. `background.png` is the empty background (the quality bench finds the
generated person against it).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MOTION_SOURCES = ("builtin", "random", "all")


class SynthError(ValueError):
    """Options `synth-data` cannot generate (one line: what is wrong and what to pass)."""


@dataclass(frozen=True)
class SynthOptions:
    videos: int = 8
    frames: int = 48
    size: int = 256
    seed: int = 0
    motions: str = "all"
    fps: float = 24.0
    height_range: tuple[float, float] = (0.5, 0.9)  # person height / frame height
    yaw_range_deg: tuple[float, float] = (-60.0, 60.0)
    betas_std: float = 1.0
    builtin_motion: str | None = None  # with motions="builtin": this built-in motion only (the demo's)

    def validate(self) -> None:
        if self.videos < 1:
            raise SynthError(f"--videos must be at least 1; got {self.videos}")
        if self.frames < 2:
            raise SynthError(f"--frames must be at least 2; got {self.frames}")
        if self.size < 32 or self.size % 8:
            raise SynthError(f"--size must be a multiple of 8, at least 32; got {self.size}")
        if self.motions not in MOTION_SOURCES:
            raise SynthError(f"--motions must be one of {', '.join(MOTION_SOURCES)}; got {self.motions!r}")
        if self.seed < 0:
            raise SynthError(f"--seed must be a non-negative integer; got {self.seed}")
        if self.builtin_motion is not None:
            from ..body.motions import BUILTIN_MOTIONS

            if self.motions != "builtin" or self.builtin_motion not in BUILTIN_MOTIONS:
                raise SynthError(f"builtin_motion {self.builtin_motion!r} needs motions='builtin' and one of "
                                 f"{', '.join(BUILTIN_MOTIONS)}")


def video_name(index: int) -> str:
    return f"synth_{index:05d}"


def write_video(video, folder: Path, overwrite: bool = False) -> Path:
    """One generated video (`people.SynthVideo`) into `folder` in the training layout, through the
    one layout writer."""
    from .layout import VideoLayoutWriter

    with VideoLayoutWriter(folder, overwrite=overwrite) as writer:
        writer.add_frames(video.images, layers=video.layers, bboxes=video.bboxes)
        writer.add_image("background.png", video.background)
        with tempfile.TemporaryDirectory() as tmp:
            motion_file = video.motion.save(Path(tmp) / "motion.npz")
            writer.add_bytes("motion.npz", motion_file.read_bytes())
        writer.add_bytes("synth.json", json.dumps(video.description, indent=1).encode())
    return folder


def generate_dataset(out: str | Path, options: SynthOptions, overwrite: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """`options.videos` videos into OUT/synth_00000, ...; each appears whole or not at all.

    Videos already present are kept unless `overwrite` (so an interrupted run resumes).
    """
    from ..body.model import open_body_model
    from .people import generate_video

    options.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    body = open_body_model()
    written = []
    for index in range(options.videos):
        folder = out / video_name(index)
        if overwrite or not folder.exists():
            write_video(generate_video(options, index, body), folder, overwrite=overwrite)
        else:
            _check_kept(folder, options, index)
        written.append(folder)
        if progress is not None:
            progress(index + 1, options.videos)
    return written


def _check_kept(folder: Path, options: SynthOptions, index: int) -> None:
    """A video kept from an earlier run must come from the same options, or the set would mix two."""
    try:
        kept = json.loads((folder / "synth.json").read_text())
    except (OSError, ValueError):
        kept = None
    wanted = {"seed": options.seed, "index": index, "frames": options.frames, "size": options.size, "fps": options.fps}
    if kept is None or any(kept.get(k) != v for k, v in wanted.items()):
        raise SynthError(f"{folder} exists but was not generated with these options (seed {options.seed}, "
                         f"{options.frames} frames, size {options.size}); pass --overwrite or another OUT folder")
