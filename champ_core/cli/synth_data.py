"""`python -m champ_core synth-data OUT`: generated people in Champ's training layout.

Each video (OUT/synth_00000, ...) is written whole through the layout writer, or not at all, so an
interrupted run can simply be started again: finished videos are kept (checked against the options).
"""

from __future__ import annotations

HELP = "generate people (mannequins with random clothing, motion, camera, background) in the training layout"


def add_arguments(parser) -> None:
    from ..train.synth import MOTION_SOURCES, SynthOptions

    defaults = SynthOptions()
    parser.add_argument("out", metavar="OUT", help="output folder (one sub-folder per video)")
    parser.add_argument("--videos", type=int, default=defaults.videos, help=f"number of videos (default {defaults.videos})")
    parser.add_argument("--frames", type=int, default=defaults.frames, help=f"frames per video (default {defaults.frames})")
    parser.add_argument("--size", type=int, default=defaults.size, help=f"square frame size in pixels (default {defaults.size})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="data set seed; (seed, video index) fixes a video")
    parser.add_argument("--motions", default=defaults.motions, choices=MOTION_SOURCES,
                        help="built-in motions, random joint trajectories, or both (default)")
    parser.add_argument("--fps", type=float, default=defaults.fps, help=f"frame rate (default {defaults.fps:g})")
    parser.add_argument("--overwrite", action="store_true", help="regenerate videos that already exist")


def run(args) -> int:
    import time

    from tqdm import tqdm

    from ..train.layout import check_dataset
    from ..train.synth import SynthOptions, generate_dataset
    from .errors import check_output_dir, check_positive

    options = SynthOptions(videos=args.videos, frames=args.frames, size=args.size, seed=args.seed,
                           motions=args.motions, fps=args.fps)  # fmt: skip
    check_positive(args.fps, "--fps")
    options.validate()
    out = check_output_dir(args.out, "OUT", overwrite=True)  # existing videos are kept or checked, never mixed
    start = time.time()
    with tqdm(total=options.videos, desc="synth-data", unit="video") as bar:
        generate_dataset(out, options, overwrite=args.overwrite, progress=lambda done, total: bar.update(done - bar.n))
    summary = check_dataset(out, bbox_crop=True)
    print(f"wrote {out}: {summary.line()} in {time.time() - start:.1f} s")
    return 0
