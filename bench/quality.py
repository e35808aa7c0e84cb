"""Quality bench: a Champ model on held-out generated people, against the repeated reference and
stage 1 frame by frame, with the issue's targets (champ_core/evaluation/quality.py holds the logic).

    .venv/bin/python bench/quality.py                         # the built-in model, 4 held-out people
    .venv/bin/python bench/quality.py --weights RUN2/weights/final --json q.json --check
    CHAMP_QUALITY_DIR=DATA .venv/bin/python bench/quality.py  # sequences made by synth-data instead
    .venv/bin/python bench/quality.py --from-json q.json --check   # re-check a saved result

Exit status: 0; 1 with --check when a target is missed; 2 for bad input (one line); 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from champ_core.evaluation import quality as q  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from champ_core.pipeline.scheduler import BETA_SCHEDULES

    defaults = q.QualitySettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(q.BUILTIN_MODEL_DIR),
                        help="stage-2 weights folder: champ/ + image_encoder/ + sd-vae-ft-mse/, or a training run's "
                             "weights/final (default: the built-in model, models/champ/builtin)")
    parser.add_argument("--stage1-weights", default=None,
                        help="stage-1 Champ weights for the frame-by-frame baseline (default: the --weights networks "
                             "without motion modules; stage 2 trains only the motion modules)")
    parser.add_argument("--size", default=None,
                        help=f"S or WxH (default: the size the weights folder records, else {q.DEFAULT_SIZE})")
    parser.add_argument("--frames", type=int, default=defaults.frames, help=f"frames per sequence, frame 0 = "
                        f"reference (default {defaults.frames})")
    parser.add_argument("--videos", type=int, default=defaults.videos, help=f"sequences (default {defaults.videos})")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"DDIM steps (default {defaults.steps})")
    parser.add_argument("--cfg", type=float, default=defaults.guidance_scale,
                        help=f"classifier-free guidance scale (default {defaults.guidance_scale:g}, as the templates)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"initial-noise seed (default {defaults.seed})")
    parser.add_argument("--beta-schedule", default=defaults.beta_schedule, choices=BETA_SCHEDULES,
                        help=f"the sampler's betas (default {defaults.beta_schedule}, as the templates)")
    parser.add_argument("--sequence-seed", type=int, default=q.HELD_OUT_SEED,
                        help=f"seed of the generated held-out people, >= {q.HELD_OUT_SEED} (default {q.HELD_OUT_SEED})")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default=defaults.dtype, choices=("fp32", "fp16", "bf16"),
                        help=f"network precision (default {defaults.dtype})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--models", default=None, help="folder with LPIPS's vgg16-397923af.pth "
                        "(default: models/champ/eval); without it lpips is null")
    parser.add_argument("--json", default=None, help="write the results here (fixed keys, docs/benchmarks.md)")
    parser.add_argument("--save-frames", default=None, help="write every method's frames and a strip per video here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--from-json", default=None, help="check a saved result instead of running the bench")
    return parser


def parse_size(text: str | None) -> tuple[int | None, int | None]:
    from champ_core.cli.errors import CommandError

    if text is None:
        return None, None
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 8 or any(v % 8 for v in values):
        raise CommandError(f"--size {text}: give S or WxH, multiples of 8 (e.g. 128 or 128x192)")
    return values[0], values[-1]


def settings_from_args(args) -> q.QualitySettings:
    from champ_core.cli.errors import check_device, check_input_dir, check_positive

    width, height = parse_size(args.size)
    for flag, value in (("--frames", args.frames), ("--videos", args.videos), ("--steps", args.steps)):
        check_positive(value, flag, integer=True)
    check_positive(args.cfg, "--cfg", allow_zero=True)
    if args.threads is not None:
        check_positive(args.threads, "--threads", integer=True)
    device = check_device(args.device)
    quality_dir = os.environ.get(q.QUALITY_DIR_ENV) or None
    if quality_dir is not None:
        quality_dir = check_input_dir(quality_dir, q.QUALITY_DIR_ENV, "folder of synth-data sequences")
    return q.QualitySettings(
        weights=q.check_weights_folder(args.weights),
        stage1_weights=Path(args.stage1_weights) if args.stage1_weights else None,
        width=width, height=height, videos=args.videos, frames=args.frames, steps=args.steps,
        guidance_scale=args.cfg, seed=args.seed, beta_schedule=args.beta_schedule,
        sequence_seed=args.sequence_seed, sequences_dir=quality_dir,
        device=str(device), dtype=args.dtype, models_dir=Path(args.models) if args.models else None,
    )


def check_frames_dir(path: str):
    from champ_core.cli.errors import CommandError, check_output_dir

    folder = Path(path)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / q.FRAMES_MARKER).is_file():
        raise CommandError(f"--save-frames {folder}: exists and holds other files; give an empty or new folder "
                           "(a folder written by this bench is replaced)")
    return check_output_dir(folder, "--save-frames", overwrite=True)


@contextmanager
def progress_bar(description: str):
    """A tqdm bar on stderr as the library's `progress(done, total, what)` callback."""
    from tqdm import tqdm

    with tqdm(desc=description, unit="run", file=sys.stderr) as bar:
        def progress(done: int, total: int, what: str) -> None:
            if bar.total != total:  # a new phase: generating/reading sequences, then the runs
                bar.reset(total=total)
            bar.set_postfix_str(what, refresh=False)
            bar.update(done - bar.n)

        yield progress


def print_targets(targets) -> None:
    for target in targets:
        value = "n/a" if target["value"] is None else f"{target['value']:.4g}"
        print(f"{'PASS' if target['passed'] else 'MISS'}  {target['name']}: {value}  ({target['rule']})")


def run(args) -> int:
    from champ_core.cli.errors import check_input_file, check_output_file

    if args.from_json:
        path = check_input_file(args.from_json, "--from-json", "result file")
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise q.QualityError(f"--from-json {path}: not JSON ({exc}); give a file written by --json") from exc
        targets = q.check_results(results)
        print_targets(targets)
        return 1 if args.check and not all(t["passed"] for t in targets) else 0

    settings = settings_from_args(args)
    json_path = check_output_file(args.json, "--json", suffixes=(".json",)) if args.json else None
    frames_dir = check_frames_dir(args.save_frames) if args.save_frames else None
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    collected: dict = {}
    keep = (lambda video, method, frames: collected.setdefault(video, {}).__setitem__(method, frames)) \
        if frames_dir is not None else None
    with progress_bar("quality") as progress:
        results = q.run_quality(settings, progress=progress, keep_frames=keep)
    for line in results["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    print(q.format_table(results))
    speed = results["speed"]
    print(f"sampling: stage2 {speed['stage2_seconds_per_frame']:.3g} s/frame, stage1 "
          f"{speed['stage1_seconds_per_frame']:.3g} s/frame ({settings.steps} steps, cfg {settings.guidance_scale:g}, "
          f"{results['settings']['width']}x{results['settings']['height']}, {settings.device})")
    if json_path is not None:
        from champ_core.atomic import atomic_file

        with atomic_file(json_path) as tmp:
            tmp.write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"wrote {json_path}")
    if frames_dir is not None:
        q.write_frames(frames_dir, collected)
        print(f"wrote {frames_dir}")
    return 1 if args.check and not results["passed"] else 0


def main(argv: list[str] | None = None) -> int:
    return guarded(run, build_parser().parse_args(argv))


def guarded(command, args) -> int:
    """`command(args)`'s exit status, with the benches' failure convention around it."""
    from champ_core.cli.errors import report

    try:
        return command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # expected failures -> one line, exit 2; a bug keeps its traceback
        status = report(exc)
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())
