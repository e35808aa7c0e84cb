"""Validation during training: the pack's own sampler (`ChampPipeline`) on the model being trained.

Stage 1 samples single images, one per entry of `validation.guidance_indexes` (frames of the
guidance folder); stage 2 samples a clip of `validation.clip_length` frames and writes it as mp4.
Each pair (`validation.ref_images[i]`, `validation.guidance_folders[i]`) gives one row; with both
lists empty the first training video is used (its first frame as the reference, its folder as the
guidance folder: a video in the training layout is also a motion folder). Paths are taken relative
to the current folder, as the reference does.

Outputs: `output_dir/validation/step-<N>/` (PNG grids in stage 1: reference | sample | guidance; mp4
in stage 2) and the same media in TensorBoard (`validation/<i>`; stage 2 as an image strip of the
frames, since TensorBoard videos need moviepy).

Validation leaves training exactly as it was: it runs without gradients, restores every random
generator (torch, NumPy, Python) afterwards and puts the model back into its training set-up.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("champ_core.train")


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    py_state = random.getstate()
    np_state = np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def without_autocast_wrapper(model) -> Iterator[None]:
    """Accelerate wraps a prepared model's forward in autocast (mixed precision); sampling runs the
    model in its own dtype instead, so the wrapper is lifted for the duration and put back."""
    wrapped = model.__dict__.get("forward")
    original = model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


def validation_pairs(config) -> list[tuple[Path, Path]]:
    v = config.validation
    if v.ref_images:
        return [(Path(r), Path(g)) for r, g in zip(v.ref_images, v.guidance_folders)]
    from ..guidance import list_frames
    from .layout import IMAGES, find_videos

    videos = find_videos(config.data.video_folder, tuple(config.data.data_parts))
    if not videos:
        return []
    first = videos[0].path
    frames = list_frames(first / IMAGES)
    return [(frames[0], first)] if frames else []


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def run_validation(config, model, vae, image_encoder, step: int, out_dir: Path, writer, stage: int) -> list[Path]:
    """Sample with the current weights; returns the files written."""
    from ..pipeline.codecs import DiffusersVAE, TransformersCLIP
    from ..pipeline.inputs import FolderGuidance, InputError, fit_image, to_rgb_uint8
    from ..pipeline.sampling import ChampPipeline, SamplingOptions
    from .trainable import prepare_for_inference, prepare_for_training

    pairs = validation_pairs(config)
    if not pairs:
        logger.info("validation skipped: no validation.ref_images and no training video to sample from")
        return []
    size = config.data.image_size
    options = SamplingOptions(steps=config.validation.num_inference_steps,
                              guidance_scale=config.validation.guidance_scale, seed=config.seed,
                              beta_schedule=config.noise_scheduler_kwargs.beta_schedule)
    types = [t for t in config.data.guids]
    written: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with preserved_rng(), torch.no_grad(), without_autocast_wrapper(model):
        prepare_for_inference(model)
        try:
            pipeline = ChampPipeline(model, DiffusersVAE(vae), TransformersCLIP(image_encoder))
            for row, (reference, folder) in enumerate(pairs):
                try:
                    ref_tile = np.asarray(fit_image(to_rgb_uint8(reference), size, size, "squash"))
                    if stage == 1:
                        probe = FolderGuidance(folder, types)
                        images = []
                        for index in config.validation.guidance_indexes:
                            if index >= probe.num_frames:
                                continue
                            guidance = FolderGuidance(folder, types, slice(index, index + 1))
                            result = pipeline.animate(reference, guidance, size, size, options)
                            sample = _to_uint8(result.frames)[0]
                            maps = guidance.read([0], size, size, "squash")
                            images.append(np.concatenate([ref_tile, sample] + [maps[t][0] for t in guidance.types], 1))
                        if not images:
                            continue
                        grid = np.concatenate(images, 0)
                        path = out_dir / f"val-{row}.png"
                        from PIL import Image

                        from ..atomic import atomic_file

                        with atomic_file(path) as tmp:
                            Image.fromarray(grid).save(tmp)
                        written.append(path)
                        if writer is not None:
                            writer.add_image(f"validation/{row}", grid, step, dataformats="HWC")
                    else:
                        from ..video import VideoWriter

                        length = config.validation.clip_length
                        guidance = FolderGuidance(folder, types, slice(0, length))
                        path = out_dir / f"val-{row}.mp4"
                        with VideoWriter(path, 8.0) as video:
                            result = pipeline.animate(reference, guidance, size, size, options, writer=video)
                        written.append(path)
                        if writer is not None:
                            frames = _to_uint8(result.frames)
                            writer.add_image(f"validation/{row}", np.concatenate(list(frames), 1), step,
                                             dataformats="HWC")
                except InputError as exc:
                    logger.warning("validation row %d skipped: %s", row, exc)
        finally:
            prepare_for_training(model, stage, gradient_checkpointing=config.solver.gradient_checkpointing,
                                 reference_bank_fp32=config.reference_bank_fp32)
    if writer is not None:
        writer.flush()
    logger.info("validation at step %d: %s", step, ", ".join(str(p) for p in written) or "nothing written")
    return written
