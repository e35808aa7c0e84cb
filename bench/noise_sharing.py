"""How much of a model's temporal error comes from the sampler's per-frame noise: the quality bench's
stage-1 and stage-2 runs twice, once from its independent per-frame initial noise (as the bench and
the reference sample) and once from the first frame's noise map repeated over every frame.

    .venv/bin/python bench/noise_sharing.py                      # the built-in model, 4 held-out people
    .venv/bin/python bench/noise_sharing.py --videos 12 --weights RUN2/weights/final --json n.json

Same options, sequences and scores as bench/quality.py (docs/benchmarks.md, "Quality"). If sharing
the noise removes most of stage 1's temporal error, the flicker is the sampler's and not the
guidance's, and it is what the motion modules have to learn to remove.
Exit status: 0; 2 for bad input (one line); 130 on Ctrl-C.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import quality as quality_bench  # noqa: E402  (bench/quality.py: its options and settings)

from champ_core.evaluation import quality as q  # noqa: E402

RUNS = ("stage1_independent", "stage2_independent", "stage1_shared", "stage2_shared")
SCORES = ("fg_psnr", "psnr", "fg_iou", "temporal_error")


def shared_noise(latents):
    """(B, C, T, h, w) initial latents with frame 0's noise map in every frame."""
    return latents[:, :, :1].expand_as(latents).contiguous()


def run_noise_sharing(settings: q.QualitySettings, progress=None) -> dict:
    settings.validate()
    width, height = q.resolve_size(settings)
    models = q.load_models(settings)
    sequences, source = q.load_sequences(settings, width, height, progress)
    scores = {run: q.MethodScores(["psnr"], settings.models_dir, settings.device) for run in RUNS}
    options = {"stage1": q.sampling_options(settings, models.stage1), "stage2": q.sampling_options(settings, models.stage2)}
    pipelines = {"stage1": models.stage1, "stage2": models.stage2}
    done = 0
    for sequence in sequences:
        independent = q.initial_latents(models.stage2, options["stage2"], sequence.num_frames, width, height)
        noise = {"independent": independent, "shared": shared_noise(independent)}
        for run in RUNS:
            stage, kind = run.split("_")
            frames = q.sample_frames(pipelines[stage], sequence, options[stage], noise[kind])
            scores[run].add(sequence, frames)
            done += 1
            if progress is not None:
                progress(done, len(sequences) * len(RUNS), f"{sequence.name} {run}")
    pooled = {run: scores[run].result() for run in RUNS}
    results = {run: {k: pooled[run][k] for k in SCORES} for run in RUNS}
    ratios = {kind: results[f"stage2_{kind}"]["temporal_error"] / results[f"stage1_{kind}"]["temporal_error"]
              for kind in ("independent", "shared")}
    return {"weights": str(settings.weights), "videos": source["videos"], "frames": settings.frames,
            "width": width, "height": height, "steps": settings.steps, "guidance_scale": settings.guidance_scale,
            "seed": settings.seed, "runs": results, "temporal_error_ratio": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = quality_bench.build_parser()
    parser.description = __doc__.split("\n\n")[0]
    return quality_bench.guarded(run, parser.parse_args(argv))


def run(args) -> int:
    from champ_core.cli.errors import check_output_file

    for flag, value in (("--check", args.check), ("--save-frames", args.save_frames), ("--from-json", args.from_json)):
        if value:
            raise q.QualityError(f"{flag} belongs to bench/quality.py; this bench has no targets or frames to save")
    settings = quality_bench.settings_from_args(args)
    json_path = check_output_file(args.json, "--json", suffixes=(".json",)) if args.json else None
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    with quality_bench.progress_bar("noise sharing") as progress:
        results = run_noise_sharing(settings, progress)
    print(f"{'run':<20} " + " ".join(f"{s:>14}" for s in SCORES))
    for name, row in results["runs"].items():
        print(f"{name:<20} " + " ".join(f"{row[s]:>14.4g}" for s in SCORES))
    for kind, ratio in results["temporal_error_ratio"].items():
        print(f"stage2 / stage1 temporal error, {kind} noise: {ratio:.3f}")
    if json_path is not None:
        from champ_core.atomic import atomic_file

        with atomic_file(json_path) as tmp:
            tmp.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
