"""The quality bench: a Champ model animating held-out generated people, against two baselines.

What `run_quality` does (bench/quality.py is its command line; docs/benchmarks.md has the figures):

1. Sequences. By default `videos` people generated with `synth-data`'s own functions from the
   seed `HELD_OUT_SEED` (seeds from `HELD_OUT_SEED` on are reserved for evaluation: training data
   uses lower seeds) with random joint trajectories only, so neither person nor motion was seen in
   training. Or the videos of a folder made by `synth-data` (`CHAMP_QUALITY_DIR`), at any size.
   Either way every frame, mask, guidance map and the empty background is brought to the model's
   size (squashed, as the pipeline's default fit: Lanczos for RGB, bicubic for guidance, nearest
   for masks).
2. Methods, all with the same reference (frame 0), guidance, seed and initial noise:
   `stage2` (the model), `stage1` (the same folder's networks without motion modules, or
   `stage1_weights`: every frame denoised on its own), `stage2_zero_embedding` (the model with the
   image-encoder embedding replaced by zeros), `reference_repeated` (frame 0 for every frame) and
   `vae_reconstruction` (the ground truth through the VAE: the upper bound of every figure).
3. Scores over frames 1..T-1 (foreground.py for the definitions): `fg_psnr` (inside the dilated
   union of the sequence's ground-truth masks), `psnr`, `ssim` and `lpips` (the evaluation
   library's definitions; LPIPS only when its VGG16 file is present, else null), `fg_iou` (person
   mask against the background vs `mask/`) and `temporal_error` (E).
4. Targets (`check_targets`), the issue's: stage 2's foreground PSNR at least 4 dB and its
   whole-frame PSNR at least 1 dB above the repeated reference; its foreground IoU at least 0.85;
   its E at most 0.7x stage 1's, while its foreground PSNR is no more than 0.5 dB below stage 1's.

The JSON it returns has fixed keys (`RESULT_KEYS`, `METHODS`, `SCORES`, `TARGET_NAMES`); see
docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..models.builtin import BUILTIN_DIR, IMAGE_SIZE, BuiltinSampling
from .errors import EvaluationError
from .foreground import foreground_region, mask_iou, masked_psnr, person_mask, temporal_errors

FORMAT = "champ_core.quality"
VERSION = 1

# Seeds from here on are reserved for evaluation: training data (synth-data --seed) must use lower ones.
HELD_OUT_SEED = 1_000_000
QUALITY_DIR_ENV = "CHAMP_QUALITY_DIR"
HELD_OUT_MOTIONS = "random"

# Where the pack's own small model lives (champ_core/models/builtin.py: champ/, image_encoder/, vae/).
BUILTIN_MODEL_DIR = BUILTIN_DIR
DEFAULT_SIZE = IMAGE_SIZE  # used when the weights folder records no image size
SIZE_KEYS = ("image_size", "resolution")  # in champ_weights.json or model_card.json of the weights folder

DEFAULT_VIDEOS = 4
DEFAULT_FRAMES = 16
MIN_FRAMES = 3  # frame 0 is the reference; the temporal error needs two more

METHODS = ("stage2", "stage1", "stage2_zero_embedding", "reference_repeated", "vae_reconstruction")
SAMPLED_METHODS = ("stage2", "stage1", "stage2_zero_embedding")
SCORES = ("fg_psnr", "psnr", "ssim", "lpips", "fg_iou", "temporal_error")
RESULT_KEYS = ("format", "version", "settings", "sequences", "methods", "per_video", "speed", "targets", "passed",
               "warnings")

# (name, what it says, threshold); `target_values` computes the values.
TARGETS = (
    ("fg_psnr_over_reference", "stage2 fg_psnr - reference_repeated fg_psnr >= 4 dB", 4.0),
    ("psnr_over_reference", "stage2 psnr - reference_repeated psnr >= 1 dB", 1.0),
    ("fg_iou", "stage2 fg_iou >= 0.85", 0.85),
    ("temporal_error_ratio", "stage2 temporal_error / stage1 temporal_error <= 0.7", 0.7),
    ("fg_psnr_vs_stage1", "stage2 fg_psnr - stage1 fg_psnr >= -0.5 dB", -0.5),
)
TARGET_NAMES = tuple(name for name, _, _ in TARGETS)
AT_MOST = {"temporal_error_ratio"}  # the others are "at least"

Progress = Callable[[int, int, str], None]


class QualityError(EvaluationError):
    """Inputs the quality bench cannot use (one line: what is wrong and what to pass)."""


# ----------------------------------------------------------------------------------------------
# Sequences


@dataclass
class QualitySequence:
    """One held-out video at the model's size: frames, person masks, guidance maps, empty background."""

    name: str
    images: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, H, W) bool
    background: np.ndarray  # (H, W, 3) uint8
    layers: dict[str, np.ndarray]  # guidance type -> (T, H, W, 3) uint8

    @property
    def num_frames(self) -> int:
        return len(self.images)

    @property
    def reference(self) -> np.ndarray:
        return self.images[0]


def _fit(frame: np.ndarray, width: int, height: int, resample: str) -> np.ndarray:
    from ..pipeline.inputs import fit_image

    return fit_image(frame, width, height, "squash", resample=resample)


def fit_sequence(sequence: QualitySequence, width: int, height: int) -> QualitySequence:
    """The sequence brought to width x height (RGB: Lanczos, guidance: bicubic, masks: nearest)."""
    if sequence.images.shape[1:3] == (height, width):
        return sequence
    images = np.stack([_fit(f, width, height, "lanczos") for f in sequence.images])
    masks = np.stack([_fit(m.astype(np.uint8) * 255, width, height, "nearest") > 127 for m in sequence.masks])
    layers = {k: np.stack([_fit(f, width, height, "bicubic") for f in v]) for k, v in sequence.layers.items()}
    return QualitySequence(sequence.name, images, masks, _fit(sequence.background, width, height, "lanczos"), layers)


def generation_size(width: int, height: int) -> int:
    """The square size held-out people are generated at: the larger side, a multiple of 8, at least 32."""
    return max(32, int(math.ceil(max(width, height) / 8)) * 8)


def held_out_options(videos: int, frames: int, width: int, height: int, seed: int = HELD_OUT_SEED):
    """The `synth-data` options of the held-out set (random motions only)."""
    from ..train.synth import SynthOptions

    if seed < HELD_OUT_SEED:
        raise QualityError(f"sequence seed {seed} is below {HELD_OUT_SEED:_}: seeds from {HELD_OUT_SEED:_} on are "
                           "reserved for evaluation (training data uses lower ones); pass a seed >= "
                           f"{HELD_OUT_SEED}")
    return SynthOptions(videos=videos, frames=frames, size=generation_size(width, height), seed=seed,
                        motions=HELD_OUT_MOTIONS)


def generated_sequences(videos: int, frames: int, width: int, height: int, seed: int = HELD_OUT_SEED,
                        progress: Progress | None = None) -> list[QualitySequence]:
    """Held-out people generated in memory with synth-data's functions (video i = synth-data's video i)."""
    from ..body.model import open_body_model
    from ..train.people import generate_video
    from ..train.synth import video_name

    options = held_out_options(videos, frames, width, height, seed)
    options.validate()
    body = open_body_model()
    sequences = []
    for index in range(videos):
        video = generate_video(options, index, body)
        layers = {k: v for k, v in video.layers.items() if k != "mask"}
        sequence = QualitySequence(video_name(index), video.images, video.layers["mask"] > 127, video.background, layers)
        sequences.append(fit_sequence(sequence, width, height))
        if progress is not None:
            progress(index + 1, videos, "generate")
    return sequences


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    from ..pipeline.inputs import to_rgb_uint8

    with Image.open(path) as image:
        return to_rgb_uint8(np.array(image.convert("RGB") if image.mode not in ("L", "RGB") else image))


def _read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("L"))


def read_sequence(folder: str | Path, frames: int, width: int, height: int, name: str | None = None) -> QualitySequence:
    """The first `frames` frames of one synth-data video folder, brought to width x height."""
    from ..guidance import GUIDANCE_TYPES
    from ..train.layout import VideoEntry, scan_video

    folder = Path(folder)
    present = [t for t in GUIDANCE_TYPES if (folder / t).is_dir()]
    info = scan_video(VideoEntry(folder, ""), guids=present or GUIDANCE_TYPES)  # DatasetError names the problem
    if not (folder / "mask").is_dir():
        raise QualityError(f"{folder}: no mask/ folder; the quality bench needs the person masks (a synth-data video)")
    background = folder / "background.png"
    if not background.is_file():
        raise QualityError(f"{folder}: no background.png; the quality bench needs the empty background of "
                           "each video (make the sequences with `python -m champ_core synth-data`)")
    if info.num_frames < frames:
        raise QualityError(f"{folder}: {info.num_frames} frames, the bench uses {frames}; pass --frames "
                           f"{info.num_frames} or fewer (at least {MIN_FRAMES})")
    mask_files = {p.stem: p for p in (folder / "mask").iterdir() if p.is_file()}
    names = info.frame_names[:frames]
    missing = [n for n in names if n not in mask_files]
    if missing:
        raise QualityError(f"{folder}: mask/ has no file for frame {missing[0]}; every frame needs a mask")
    images = np.stack([_read_rgb(p) for p in info.files["images"][:frames]])
    masks = np.stack([_read_gray(mask_files[n]) > 127 for n in names])
    layers = {t: np.stack([_read_rgb(p) for p in info.files[t][:frames]]) for t in present}
    sequence = QualitySequence(name or folder.name, images, masks, _read_rgb(background), layers)
    if sequence.background.shape != images.shape[1:]:
        raise QualityError(f"{background}: {sequence.background.shape[1]}x{sequence.background.shape[0]}, the "
                           f"frames are {images.shape[2]}x{images.shape[1]}; it must be the video's own background")
    return fit_sequence(sequence, width, height)


def folder_sequences(root: str | Path, frames: int, width: int, height: int, videos: int | None = None,
                     progress: Progress | None = None) -> list[QualitySequence]:
    """The videos of a synth-data folder (all, or the first `videos` in sorted order)."""
    from ..train.layout import find_videos

    entries = find_videos(root)
    if videos is not None:
        entries = entries[:videos]
    sequences = []
    for i, entry in enumerate(entries):
        sequences.append(read_sequence(entry.path, frames, width, height, name=entry.name))
        if progress is not None:
            progress(i + 1, len(entries), "read")
    return sequences


# ----------------------------------------------------------------------------------------------
# Settings and models


@dataclass(frozen=True)
class QualitySettings:
    weights: Path = BUILTIN_MODEL_DIR
    stage1_weights: Path | None = None  # default: the stage-2 folder's networks without motion modules
    width: int | None = None  # None: the size the weights folder records, else DEFAULT_SIZE
    height: int | None = None
    videos: int = DEFAULT_VIDEOS
    frames: int = DEFAULT_FRAMES
    steps: int = BuiltinSampling.steps  # the shipped templates' settings
    guidance_scale: float = BuiltinSampling.guidance_scale
    seed: int = BuiltinSampling.seed  # initial noise
    solver: str = BuiltinSampling.solver
    beta_schedule: str = BuiltinSampling.beta_schedule
    sequence_seed: int = HELD_OUT_SEED
    sequences_dir: Path | None = None  # a synth-data folder instead of generating (CHAMP_QUALITY_DIR)
    device: str = "cpu"
    dtype: str = "fp32"
    models_dir: Path | None = None  # LPIPS's VGG16 file (the evaluation library's default folders when None)

    def validate(self) -> None:
        if self.frames < MIN_FRAMES:
            raise QualityError(f"frames must be at least {MIN_FRAMES} (reference + 2 evaluated frames); got {self.frames}")
        if self.videos < 1:
            raise QualityError(f"videos must be at least 1; got {self.videos}")
        if self.steps < 1:
            raise QualityError(f"steps must be at least 1; got {self.steps}")
        if self.sequences_dir is None and self.sequence_seed < HELD_OUT_SEED:
            held_out_options(1, MIN_FRAMES, 32, 32, self.sequence_seed)  # raises the reserved-seed error


def weights_size(weights: str | Path) -> tuple[int, int] | None:
    """(width, height) recorded in a weights folder (`image_size` or `resolution`: N or [W, H] in
    champ_weights.json of its Champ folder, or in model_card.json), or None."""
    weights = Path(weights)
    for path in (weights / "model_card.json", weights / "champ" / "champ_weights.json", weights / "champ_weights.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in SIZE_KEYS:
            value = data.get(key) if isinstance(data, dict) else None
            if isinstance(value, int) and value > 0:
                return value, value
            if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
                return int(value[0]), int(value[1])
    return None


def resolve_size(settings: QualitySettings) -> tuple[int, int]:
    if settings.width is not None and settings.height is not None:
        return settings.width, settings.height
    recorded = weights_size(settings.weights) or (DEFAULT_SIZE, DEFAULT_SIZE)
    return settings.width or recorded[0], settings.height or recorded[1]


def check_weights_folder(weights: str | Path, flag: str = "--weights") -> Path:
    """The weights folder, or a QualityError naming it (the built-in model's folder gets its own line)."""
    weights = Path(weights)
    if not weights.is_dir():
        if weights.resolve() == BUILTIN_MODEL_DIR.resolve():
            raise QualityError(f"no built-in model in {weights}: the pack's small model is not there yet; train it "
                               f"(docs/training.md) or pass {flag} DIR (champ/ + image_encoder/ + sd-vae-ft-mse/, or "
                               "a training run's weights/final)")
        raise QualityError(f"{flag} {weights}: weights folder does not exist; pass a folder with champ/ + "
                           "image_encoder/ + sd-vae-ft-mse/ (or a training run's weights/final)")
    return weights


def _champ_folder(root: Path) -> Path:
    return root / "champ" if (root / "champ").is_dir() else root


@dataclass
class QualityModels:
    stage2: object  # ChampPipeline with motion modules
    stage1: object  # ChampPipeline over the same VAE / image encoder, frames denoised independently
    champ_dir: Path
    stage1_dir: Path


def load_models(settings: QualitySettings) -> QualityModels:
    """The model (stage 2) and its stage-1 baseline; both strictly loaded."""
    import torch

    from ..models.loading import load_champ_models, resolve_dtype
    from ..pipeline.codecs import load_diffusers_vae, load_transformers_clip
    from ..pipeline.loading import resolve_weights
    from ..pipeline.sampling import ChampPipeline

    weights = check_weights_folder(settings.weights)
    champ_dir, clip_dir, vae_dir = resolve_weights(weights)
    dtype, device = resolve_dtype(settings.dtype), torch.device(settings.device)
    stage2 = load_champ_models(champ_dir, dtype=dtype, device=device)
    if not stage2.denoising_unet.has_motion_modules:
        raise QualityError(f"{champ_dir} holds stage-1 weights (no motion modules); pass the stage-2 model as "
                           "--weights and, if you like, these as --stage1-weights")
    stage1_dir = champ_dir
    if settings.stage1_weights is not None:  # a Champ folder, a released layout or a stage-1 training run
        from ..train.starting import find_stage1_weights

        folder = _champ_folder(check_weights_folder(settings.stage1_weights, "--stage1-weights"))
        stage1_dir = find_stage1_weights(folder, "latest")
    stage1 = load_champ_models(stage1_dir, dtype=dtype, device=device, guidance_types=list(stage2.guidance_types),
                               without_motion_modules=True)
    vae = load_diffusers_vae(vae_dir, dtype, device)
    clip = load_transformers_clip(clip_dir, dtype, device)
    return QualityModels(ChampPipeline(stage2, vae, clip), ChampPipeline(stage1, vae, clip), champ_dir, stage1_dir)


# ----------------------------------------------------------------------------------------------
# Producing frames


def sampling_options(settings: QualitySettings, pipeline):
    from ..pipeline.sampling import SamplingOptions
    from ..pipeline.windows import WindowOptions

    positions = getattr(pipeline.models.denoising_unet, "max_frames", None) or WindowOptions().length
    windows = WindowOptions(length=min(WindowOptions().length, int(positions)))
    windows = replace(windows, overlap=min(windows.overlap, windows.length - 1))
    return SamplingOptions(steps=settings.steps, guidance_scale=settings.guidance_scale, seed=settings.seed,
                           solver=settings.solver, beta_schedule=settings.beta_schedule, windows=windows)


def initial_latents(pipeline, options, num_frames: int, width: int, height: int):
    """The seeded initial noise (times the scheduler's initial sigma) every sampled method starts from."""
    scheduler, _ = pipeline.make_scheduler(options)
    return pipeline.model_noise(num_frames, width, height, options.seed) * scheduler.init_noise_sigma


def sample_frames(pipeline, sequence: QualitySequence, options, latents, zero_embedding: bool = False) -> np.ndarray:
    """uint8 (T, H, W, 3): the sequence animated from its frame 0 with its guidance maps."""
    import torch

    from ..pipeline.inputs import ArrayGuidance
    from ..pipeline.sampling import to_uint8

    height, width = sequence.images.shape[1:3]
    types = [t for t in pipeline.models.guidance_types if t in sequence.layers]
    if not types:
        raise QualityError(f"{sequence.name}: none of the model's guidance types ({', '.join(pipeline.models.guidance_types)}) "
                           f"is among the sequence's layers ({', '.join(sequence.layers)})")
    guidance = ArrayGuidance({t: sequence.layers[t] for t in types}, mask=sequence.masks.astype(np.uint8) * 255)
    reference = pipeline.encode_reference(sequence.reference, width, height)
    if zero_embedding:
        reference = replace(reference, clip_embeds=torch.zeros_like(reference.clip_embeds))
    final = pipeline.denoise(reference, guidance, width, height, options, latents=latents.clone())
    frames = np.empty((sequence.num_frames, height, width, 3), dtype=np.uint8)
    for index, chunk in pipeline.decode(final):
        frames[index.start:index.stop] = to_uint8(chunk)
    return frames


def vae_reconstruction(vae, images: np.ndarray, chunk: int = 4) -> np.ndarray:
    """uint8 frames through the VAE (posterior mean, then decode)."""
    import torch

    from ..pipeline.sampling import to_uint8

    out = np.empty_like(images)
    for start in range(0, len(images), chunk):
        pixels = torch.from_numpy(images[start:start + chunk]).permute(0, 3, 1, 2).float() / 255.0
        decoded = vae.decode(vae.encode(pixels)).float().cpu()
        out[start:start + chunk] = to_uint8(decoded.permute(0, 2, 3, 1))
    return out


# ----------------------------------------------------------------------------------------------
# Scores


def frame_metrics(models_dir=None) -> tuple[list[str], list[str]]:
    """(evaluation-library metrics to compute, warnings): psnr and ssim, plus lpips when its file is present."""
    from .backbones import VGG16, as_dirs, find_backbone, missing_message

    dirs = as_dirs(models_dir)
    if find_backbone(VGG16, dirs) is not None:
        return ["psnr", "ssim", "lpips"], []
    return ["psnr", "ssim"], [missing_message("lpips", VGG16, dirs) + " (lpips is null)"]


def foreground_scores(sequence: QualitySequence, frames: np.ndarray) -> dict[str, list[float]]:
    """Per evaluated frame (1..T-1) fg_psnr and fg_iou; per pair of them the temporal error."""
    if frames.shape != sequence.images.shape:
        raise QualityError(f"{sequence.name}: frames {frames.shape} differ from the ground truth {sequence.images.shape}")
    region = foreground_region(sequence.masks)
    gen, gt, masks = frames[1:], sequence.images[1:], sequence.masks[1:]
    return {
        "fg_psnr": [masked_psnr(g, t, region) for g, t in zip(gen, gt)],
        "fg_iou": [mask_iou(person_mask(g, sequence.background), m) for g, m in zip(gen, masks)],
        "temporal_error": [float(v) for v in temporal_errors(gen, gt, masks) if np.isfinite(v)],
    }


@dataclass
class MethodScores:
    """Scores of one method accumulated over videos (frame scores pooled over all evaluated frames)."""

    metrics: Sequence[str]
    models_dir: object = None
    device: object = None
    values: dict[str, list[float]] = field(default_factory=lambda: {"fg_psnr": [], "fg_iou": [], "temporal_error": []})
    per_video: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .evaluator import Evaluator

        self.evaluator = Evaluator(metrics=list(self.metrics), models_dir=self.models_dir, device=self.device)

    def add(self, sequence: QualitySequence, frames: np.ndarray) -> None:
        own = foreground_scores(sequence, frames)
        for key, values in own.items():
            self.values[key].extend(values)
        self.evaluator.add(sequence.name, frames[1:], sequence.images[1:])
        library = self.evaluator.per_video[sequence.name]
        self.per_video[sequence.name] = _score_dict(library, {k: _mean(v) for k, v in own.items()})

    def result(self) -> dict[str, float | None]:
        library = self.evaluator.result().values
        return _score_dict(library, {k: _mean(v) for k, v in self.values.items()})


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _score_dict(library: Mapping[str, float], own: Mapping[str, float | None]) -> dict[str, float | None]:
    merged = {**{k: float(v) for k, v in library.items()}, **own}
    return {key: merged.get(key) for key in SCORES}


# ----------------------------------------------------------------------------------------------
# Targets


def _score(methods: Mapping, method: str, score: str) -> float:
    try:
        value = methods[method][score]
    except (KeyError, TypeError) as exc:
        raise QualityError(f"results have no methods.{method}.{score}; give a JSON written by bench/quality.py") from exc
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise QualityError(f"methods.{method}.{score} is {value!r}, not a finite number")
    return float(value)


def target_values(methods: Mapping) -> dict[str, float]:
    """Each target's value from the methods' scores."""
    s2 = {k: _score(methods, "stage2", k) for k in ("fg_psnr", "psnr", "fg_iou", "temporal_error")}
    s1_e = _score(methods, "stage1", "temporal_error")
    ratio = s2["temporal_error"] / s1_e if s1_e > 0 else (0.0 if s2["temporal_error"] == 0 else math.inf)
    return {
        "fg_psnr_over_reference": s2["fg_psnr"] - _score(methods, "reference_repeated", "fg_psnr"),
        "psnr_over_reference": s2["psnr"] - _score(methods, "reference_repeated", "psnr"),
        "fg_iou": s2["fg_iou"],
        "temporal_error_ratio": ratio,
        "fg_psnr_vs_stage1": s2["fg_psnr"] - _score(methods, "stage1", "fg_psnr"),
    }


def check_targets(methods: Mapping) -> list[dict]:
    """[{name, rule, value, threshold, passed}] for every target, in `TARGETS` order."""
    values = target_values(methods)
    out = []
    for name, rule, threshold in TARGETS:
        value = values[name]
        passed = value <= threshold if name in AT_MOST else value >= threshold
        out.append({"name": name, "rule": rule, "value": value if math.isfinite(value) else None,
                    "threshold": threshold, "passed": bool(passed)})
    return out


def check_results(results: Mapping) -> list[dict]:
    """The targets of a saved result (recomputed from its `methods`; its own `passed` is not trusted)."""
    if not isinstance(results, Mapping) or results.get("format") != FORMAT:
        raise QualityError(f"not a quality-bench result (its \"format\" must be {FORMAT!r}); give a JSON written by "
                           "bench/quality.py --json")
    return check_targets(results.get("methods") or {})


# ----------------------------------------------------------------------------------------------
# The whole bench


def load_sequences(settings: QualitySettings, width: int, height: int,
                   progress: Progress | None = None) -> tuple[list[QualitySequence], dict]:
    if settings.sequences_dir is not None:
        sequences = folder_sequences(settings.sequences_dir, settings.frames, width, height, settings.videos, progress)
        source = {"source": "folder", "folder": str(settings.sequences_dir), "seed": None}
    else:
        sequences = generated_sequences(settings.videos, settings.frames, width, height, settings.sequence_seed, progress)
        source = {"source": "generated", "folder": None, "seed": settings.sequence_seed, "motions": HELD_OUT_MOTIONS}
    gt_iou = [mask_iou(person_mask(f, s.background), m) for s in sequences for f, m in zip(s.images[1:], s.masks[1:])]
    source.update(videos=[s.name for s in sequences], frames=settings.frames, width=width, height=height,
                  ground_truth_fg_iou=_mean(gt_iou))
    return sequences, source


def run_quality(settings: QualitySettings, progress: Progress | None = None, models: QualityModels | None = None,
                sequences: list[QualitySequence] | None = None,
                keep_frames: Callable[[str, str, np.ndarray], None] | None = None) -> dict:
    """Run the bench; returns the result dict (`RESULT_KEYS`). `keep_frames(video, method, frames)`
    receives every method's frames (and "ground_truth"), e.g. to save them."""
    settings.validate()
    width, height = resolve_size(settings)
    models = models or load_models(settings)
    if sequences is None:
        sequences, source = load_sequences(settings, width, height, progress)
    else:
        source = {"source": "given", "folder": None, "seed": None, "videos": [s.name for s in sequences],
                  "frames": settings.frames, "width": width, "height": height, "ground_truth_fg_iou": None}
    metrics, warnings = frame_metrics(settings.models_dir)
    for sequence in sequences:
        lacking = [t for t in models.stage2.models.guidance_types if t not in sequence.layers]
        if lacking:
            warnings.append(f"{sequence.name}: no {', '.join(lacking)} guidance; the model runs without it there")
    scores = {m: MethodScores(metrics, settings.models_dir, settings.device) for m in METHODS}
    options2 = sampling_options(settings, models.stage2)
    options1 = sampling_options(settings, models.stage1)
    seconds = {m: 0.0 for m in SAMPLED_METHODS}
    total, done = len(sequences) * (len(METHODS) - 1), 0
    for sequence in sequences:
        if sequence.images.shape[1:3] != (height, width):
            raise QualityError(f"{sequence.name}: frames are {sequence.images.shape[2]}x{sequence.images.shape[1]}, "
                               f"the bench runs at {width}x{height}")
        latents = initial_latents(models.stage2, options2, sequence.num_frames, width, height)
        outputs = {}
        for method in SAMPLED_METHODS:
            pipeline, options = (models.stage1, options1) if method == "stage1" else (models.stage2, options2)
            start = time.perf_counter()
            outputs[method] = sample_frames(pipeline, sequence, options, latents,
                                            zero_embedding=method == "stage2_zero_embedding")
            seconds[method] += time.perf_counter() - start
            done += 1
            if progress is not None:
                progress(done, total, f"{sequence.name} {method}")
        outputs["reference_repeated"] = np.repeat(sequence.reference[None], sequence.num_frames, axis=0)
        outputs["vae_reconstruction"] = vae_reconstruction(models.stage2.vae, sequence.images)
        done += 1
        if progress is not None:
            progress(done, total, f"{sequence.name} vae_reconstruction")
        for method in METHODS:
            scores[method].add(sequence, outputs[method])
        if keep_frames is not None:
            keep_frames(sequence.name, "ground_truth", sequence.images)
            for method in METHODS:
                keep_frames(sequence.name, method, outputs[method])
    methods = {m: scores[m].result() for m in METHODS}
    per_video = {s.name: {m: scores[m].per_video[s.name] for m in METHODS} for s in sequences}
    targets = check_targets(methods)
    frames = sum(s.num_frames for s in sequences)
    settings_out = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}
    settings_out.update(width=width, height=height, weights=str(settings.weights), champ_folder=str(models.champ_dir),
                        stage1_folder=str(models.stage1_dir), metrics=metrics)
    return {
        "format": FORMAT,
        "version": VERSION,
        "settings": settings_out,
        "sequences": source,
        "methods": methods,
        "per_video": per_video,
        "speed": {f"{m}_seconds_per_frame": seconds[m] / frames for m in SAMPLED_METHODS},
        "targets": targets,
        "passed": all(t["passed"] for t in targets),
        "warnings": warnings,
    }


FRAMES_MARKER = "quality_frames.json"


def write_frames(folder: str | Path, collected: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """`folder/<video>/<method>/0001.png ...` for every method and the ground truth, plus
    `folder/<video>/strip.png` (one row per method, ground truth first); the folder is replaced as a whole."""
    from PIL import Image

    from ..atomic import atomic_dir

    folder = Path(folder)
    rows = ("ground_truth", *METHODS)
    with atomic_dir(folder, overwrite=True) as tmp:
        for video, methods in collected.items():
            for method, frames in methods.items():
                target = tmp / video / method
                target.mkdir(parents=True, exist_ok=True)
                for i, frame in enumerate(frames):
                    Image.fromarray(frame).save(target / f"{i + 1:04d}.png")
            strip = np.concatenate([np.concatenate(list(methods[r]), axis=1) for r in rows if r in methods], axis=0)
            Image.fromarray(strip).save(tmp / video / "strip.png")
        (tmp / FRAMES_MARKER).write_text(json.dumps({"format": FORMAT, "rows": list(rows),
                                                     "videos": list(collected)}, indent=1), encoding="utf-8")
    return folder


def format_table(results: Mapping) -> str:
    """The methods' scores and the targets as text."""
    rows = [("method", *SCORES)]
    for method in METHODS:
        scores = results["methods"][method]
        rows.append((method, *("-" if scores[k] is None else f"{scores[k]:.4g}" for k in SCORES)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for target in results["targets"]:
        value = "n/a" if target["value"] is None else f"{target['value']:.4g}"
        lines.append(f"{'PASS' if target['passed'] else 'MISS'}  {target['name']}: {value}  ({target['rule']})")
    return "\n".join(lines)
