"""`python -m champ_core train SUBCOMMAND ...`: training and its data check.

    python -m champ_core train check-data ROOT [--guids depth normal ...] [--data-parts all] [--bbox-crop]
    python -m champ_core train stage1|stage2 --config FILE.yaml [--set key=value ...] [--resume latest|STEP]
    python -m champ_core train vae --config configs/train/small_vae.yaml [--set key=value ...]
    python -m champ_core train export-builtin --work WORK/small [--out models/champ/builtin]

Sub-commands live in `SUBCOMMANDS` (name -> help, add_arguments, run), each with its heavy imports
inside its `run`, so `--help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

HELP = "train Champ and check training data (check-data)"


# -- check-data -------------------------------------------------------------------------------

CHECK_DATA_HELP = ("check a training data folder (layout, frame counts, masks, human_bbox.json, every image "
                   "decodes) and name the first bad video")


def add_check_data_arguments(parser) -> None:
    from ..guidance import GUIDANCE_TYPES

    parser.add_argument("root", metavar="ROOT", help="data folder: ROOT/<video>/images/... or ROOT/<part>/<video>/...")
    parser.add_argument("--guids", nargs="+", choices=GUIDANCE_TYPES, default=list(GUIDANCE_TYPES),
                        help="guidance types training uses (default: all four); mask/ is needed with semantic_map")
    parser.add_argument("--data-parts", nargs="+", default=["all"],
                        help="parts (sub-folders of ROOT) to check, or 'all' (default), as the yaml's data_parts")
    parser.add_argument("--bbox-crop", action="store_true",
                        help="require human_bbox.json in every video (training with data.bbox_crop true)")
    parser.add_argument("--quick", action="store_true", help="check the layout only, without decoding the images")


def run_check_data(args) -> int:
    from tqdm import tqdm

    from ..train.layout import DatasetError, check_dataset
    from . import CommandError
    from .errors import check_input_dir

    root = check_input_dir(args.root, "ROOT", "training data folder")
    with tqdm(desc="check-data", unit="video", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            summary = check_dataset(root, guids=args.guids, data_parts=args.data_parts, bbox_crop=args.bbox_crop,
                                    verify_images=not args.quick, progress=progress)
        except DatasetError as exc:
            raise CommandError(str(exc)) from None
    print(f"ok: {summary.line()}")
    return 0


# -- stage1 / stage2 --------------------------------------------------------------------------

STAGE_HELP = {
    "stage1": "train Champ's image stage (denoiser, ReferenceNet, guidance encoders) from a yaml config",
    "stage2": "train Champ's video stage (motion modules) from a yaml config and stage-1 weights",
}


def add_stage_arguments(parser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE.yaml",
                        help="training config with the reference's keys (configs/train/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted and typed, e.g. --set solver.learning_rate=1e-4 "
                             "(repeatable)")
    parser.add_argument("--resume", default=None, metavar="latest|STEP",
                        help="continue from output_dir/checkpoints/ (the newest, or checkpoint-STEP)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def run_stage(stage: str, args) -> int:
    from ..train.trainer import run_command

    return run_command(stage, args.config, args.overrides, args.resume, show_progress=not args.no_progress)


# -- vae -------------------------------------------------------------------------------------

VAE_HELP = "train a small AutoencoderKL on the frames of a data set in the training layout (configs/train/small_vae.yaml)"


def add_vae_arguments(parser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE.yaml", help="VAE training config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set video_folder=DIR (repeatable)")


def run_vae(args) -> int:
    from tqdm import tqdm

    from ..train.vae import load_vae_config, train_vae
    from .errors import check_input_dir, check_output_dir

    config = load_vae_config(args.config, args.overrides)
    check_input_dir(config.video_folder, "video_folder", "training data folder")
    check_output_dir(config.output_dir, "output_dir", overwrite=True)
    with tqdm(total=config.max_train_steps, desc="vae", unit="step", disable=None) as bar:
        def progress(step: int, total: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(step - bar.n)

        folder = train_vae(config, progress)
    print(f"wrote {folder}")
    return 0


# -- export-builtin --------------------------------------------------------------------------

EXPORT_HELP = ("pack a trained small model (the work folder of configs/train/train_builtin.sh) as the built-in "
               "model: fp16 safetensors, model card, SHA256SUMS")


def add_export_arguments(parser) -> None:
    parser.add_argument("--work", required=True, metavar="DIR", help="WORK/small of train_builtin.sh (vae/, stage1/, "
                        "stage2/, timings.json)")
    parser.add_argument("--out", default="models/champ/builtin", metavar="DIR",
                        help="where to write it (default: models/champ/builtin, replaced as a whole)")


def run_export(args) -> int:
    from ..train.config import ConfigError
    from ..train.export import export_builtin
    from . import CommandError

    try:
        folder = export_builtin(args.work, args.out)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {folder} (model_card.json, MODEL_CARD.md, SHA256SUMS)")
    return 0


# -- dispatch ---------------------------------------------------------------------------------

# sub-command -> (help, add_arguments(parser), run(args) -> int)
SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "check-data": (CHECK_DATA_HELP, add_check_data_arguments, run_check_data),
    "stage1": (STAGE_HELP["stage1"], add_stage_arguments, lambda args: run_stage("stage1", args)),
    "stage2": (STAGE_HELP["stage2"], add_stage_arguments, lambda args: run_stage("stage2", args)),
    "vae": (VAE_HELP, add_vae_arguments, run_vae),
    "export-builtin": (EXPORT_HELP, add_export_arguments, run_export),
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="train_command", metavar="SUBCOMMAND")
    sub.required = True
    for name, (help_text, add, run_sub) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        add(sub_parser)
        sub_parser.set_defaults(_train_run=run_sub, _parser=sub_parser)


def run(args) -> int:
    return int(args._train_run(args) or 0)
