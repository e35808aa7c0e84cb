"""How far a VAE's own reconstruction lets the quality bench's foreground IoU go, and why.

    .venv/bin/python bench/vae_bound.py [--vae DIR ...] [--videos 12] [--frames 4] [--size 128]

The quality bench finds the person of a generated frame as the pixels differing from the empty
background by more than 24/255, so every pixel a decoder gets that wrong outside the person is a
false positive, however good the person looks. For held-out generated people (the quality bench's
seeds), per VAE folder (default: the built-in model's), this prints per sequence: the kind of
background (flat, smooth, textured: by its mean neighbour difference), the person's share of the
frame, the IoU of the ground truth itself (the metric's ceiling), the reconstruction's IoU, and
the share of pixels off by more than 24 levels in a 3 px ring around the person and farther out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from champ_core.evaluation import quality as q  # noqa: E402
from champ_core.evaluation.foreground import error_outside_person, mask_iou, person_mask  # noqa: E402


def background_kind(background: np.ndarray) -> str:
    b = background.astype(np.float64)
    step = np.abs(np.diff(b, axis=0)).mean() + np.abs(np.diff(b, axis=1)).mean()
    return "flat" if step < 0.05 else "smooth" if step < 3.0 else "textured"


def sequence_row(sequence: q.QualitySequence, frames: np.ndarray) -> dict[str, float]:
    truth, masks = sequence.images[1:], sequence.masks[1:]
    outside = np.array([error_outside_person(f, t, m) for f, t, m in zip(frames[1:], truth, masks)])
    return {
        "gt_iou": float(np.mean([mask_iou(person_mask(t, sequence.background), m) for t, m in zip(truth, masks)])),
        "iou": float(np.mean([mask_iou(person_mask(f, sequence.background), m) for f, m in zip(frames[1:], masks)])),
        "ring": float(np.nanmean(outside[:, 0])), "far": float(np.nanmean(outside[:, 1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", action="append", default=None,
                        help="a diffusers AutoencoderKL folder (repeatable; default: the built-in model's vae/)")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    import torch

    from champ_core.cli.errors import CommandError, check_input_dir, check_positive
    from champ_core.pipeline.codecs import load_diffusers_vae

    try:
        for flag, value in (("--videos", args.videos), ("--frames", args.frames), ("--size", args.size)):
            check_positive(value, flag, integer=True)
        folders = [check_input_dir(v, "--vae") for v in (args.vae or [str(q.BUILTIN_MODEL_DIR / "vae")])]
        for folder in folders:
            if not (folder / "config.json").is_file():
                raise CommandError(f"--vae {folder}: no config.json there; give a diffusers AutoencoderKL folder "
                                   "(a `train vae` run writes it as OUTPUT_DIR/vae)")
    except CommandError as error:
        sys.exit(f"error: {error}")
    sequences = q.generated_sequences(args.videos, max(args.frames, q.MIN_FRAMES), args.size, args.size)
    for folder in folders:
        vae = load_diffusers_vae(folder, torch.float32, torch.device("cpu"))
        print(f"VAE {folder} ({len(sequences)} held-out people, {args.size} px, frames 1..{sequences[0].num_frames - 1})")
        print(f"  {'sequence':12s} {'background':10s} {'person':>6s} {'gt IoU':>6s} {'IoU':>5s} {'ring>24':>7s} {'far>24':>6s}")
        rows = []
        for sequence in sequences:
            row = sequence_row(sequence, q.vae_reconstruction(vae, sequence.images))
            rows.append(row)
            print(f"  {sequence.name:12s} {background_kind(sequence.background):10s} {sequence.masks.mean():6.3f} "
                  f"{row['gt_iou']:6.3f} {row['iou']:5.2f} {row['ring']:7.3f} {row['far']:6.3f}")
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"  {'mean':12s} {'':10s} {'':6s} {mean['gt_iou']:6.3f} {mean['iou']:5.2f} {mean['ring']:7.3f} {mean['far']:6.3f}")


if __name__ == "__main__":
    main()
