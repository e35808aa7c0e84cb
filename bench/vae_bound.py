"""How far a VAE's own reconstruction lets the quality bench's foreground IoU go, and why.

    .venv/bin/python bench/vae_bound.py [--vae DIR ...] [--resize FACTOR ...] [--videos 12] [--frames 4] [--size 128]

The quality bench finds the person of a generated frame as the pixels differing from the empty
background by more than 24/255, so every pixel a decoder gets that wrong outside the person is a
false positive, however good the person looks. For held-out generated people (the quality bench's
seeds), per VAE folder (default: the built-in model's) and per plain resizing (`--resize 4`:
4x4 block means brought back bicubically, what a 4x coarser grid keeps without learning), this
prints per sequence: the kind of background (flat, smooth, textured: by its mean neighbour
difference), the person's share of the frame, the IoU of the ground truth itself (the metric's ceiling), the reconstruction's IoU, the
share of pixels off by more than 24 levels in a 3 px ring around the person and farther out, and
the reconstruction's foreground and whole-frame PSNR (the quality bench's upper bounds).
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
from champ_core.evaluation.foreground import (  # noqa: E402
    error_outside_person,
    foreground_region,
    mask_iou,
    masked_psnr,
    person_mask,
)


def background_kind(background: np.ndarray) -> str:
    b = background.astype(np.float64)
    step = np.abs(np.diff(b, axis=0)).mean() + np.abs(np.diff(b, axis=1)).mean()
    return "flat" if step < 0.05 else "smooth" if step < 3.0 else "textured"


def sequence_row(sequence: q.QualitySequence, frames: np.ndarray) -> dict[str, float]:
    truth, masks = sequence.images[1:], sequence.masks[1:]
    region = foreground_region(sequence.masks)
    everywhere = np.ones(region.shape, dtype=bool)
    outside = np.array([error_outside_person(f, t, m) for f, t, m in zip(frames[1:], truth, masks)])
    return {
        "gt_iou": float(np.mean([mask_iou(person_mask(t, sequence.background), m) for t, m in zip(truth, masks)])),
        "iou": float(np.mean([mask_iou(person_mask(f, sequence.background), m) for f, m in zip(frames[1:], masks)])),
        "ring": float(np.nanmean(outside[:, 0])), "far": float(np.nanmean(outside[:, 1])),
        "fg_psnr": float(np.mean([masked_psnr(f, t, region) for f, t in zip(frames[1:], truth)])),
        "psnr": float(np.mean([masked_psnr(f, t, everywhere) for f, t in zip(frames[1:], truth)])),
    }


def format_row(row: dict[str, float]) -> str:
    return (f"{row['gt_iou']:6.3f} {row['iou']:5.2f} {row['ring']:7.3f} {row['far']:6.3f} "
            f"{row['fg_psnr']:6.2f} {row['psnr']:5.2f}")


def vae_codec(vae):
    return lambda images: q.vae_reconstruction(vae, images)


def resize_codec(factor: int):
    """Frames averaged over factor x factor blocks and brought back bicubically: what a latent grid
    `factor` times coarser keeps with no learning at all, a yardstick for a VAE of that scale."""
    import torch
    import torch.nn.functional as F

    def reconstruct(images: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        coarse = F.avg_pool2d(pixels, factor, ceil_mode=True)
        back = F.interpolate(coarse, size=pixels.shape[-2:], mode="bicubic", align_corners=False)
        return back.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    return reconstruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", action="append", default=None,
                        help="a diffusers AutoencoderKL folder (repeatable; default: the built-in model's vae/)")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--resize", type=int, action="append", default=[], metavar="FACTOR",
                        help="also score plain resizing by 1/FACTOR and back (repeatable), e.g. --resize 4")
    args = parser.parse_args()
    import torch

    from champ_core.cli.errors import CommandError, check_input_dir, check_positive
    from champ_core.pipeline.codecs import load_diffusers_vae

    try:
        for flag, value in (("--videos", args.videos), ("--frames", args.frames), ("--size", args.size),
                            *(("--resize", factor) for factor in args.resize)):
            check_positive(value, flag, integer=True)
        default = [] if args.resize else [str(q.BUILTIN_MODEL_DIR / "vae")]
        folders = [check_input_dir(v, "--vae") for v in (args.vae or default)]
        for folder in folders:
            if not (folder / "config.json").is_file():
                raise CommandError(f"--vae {folder}: no config.json there; give a diffusers AutoencoderKL folder "
                                   "(a `train vae` run writes it as OUTPUT_DIR/vae)")
    except CommandError as error:
        sys.exit(f"error: {error}")
    sequences = q.generated_sequences(args.videos, max(args.frames, q.MIN_FRAMES), args.size, args.size)
    codecs = [(f"VAE {folder}", vae_codec(load_diffusers_vae(folder, torch.float32, torch.device("cpu"))))
              for folder in folders]
    codecs += [(f"resize by 1/{factor} and back (area down, bicubic up)", resize_codec(factor)) for factor in args.resize]
    for title, reconstruct in codecs:
        print(f"{title} ({len(sequences)} held-out people, {args.size} px, frames 1..{sequences[0].num_frames - 1})")
        print(f"  {'sequence':12s} {'background':10s} {'person':>6s} {'gt IoU':>6s} {'IoU':>5s} {'ring>24':>7s} "
              f"{'far>24':>6s} {'fgPSNR':>6s} {'PSNR':>5s}")
        rows = []
        for sequence in sequences:
            row = sequence_row(sequence, reconstruct(sequence.images))
            rows.append(row)
            print(f"  {sequence.name:12s} {background_kind(sequence.background):10s} {sequence.masks.mean():6.3f} "
                  f"{format_row(row)}")
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"  {'mean':12s} {'':10s} {'':6s} {format_row(mean)}")

if __name__ == "__main__":
    main()
