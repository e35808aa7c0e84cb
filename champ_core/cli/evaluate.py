"""`python -m champ_core evaluate PRED GT`: the paper's metrics on predicted vs ground-truth videos."""

from __future__ import annotations

HELP = "L1, PSNR (published and corrected), SSIM, LPIPS, FID, FID-VID and FVD of predicted vs ground-truth videos"


def add_arguments(parser) -> None:
    from ..evaluation.definitions import METRIC_NAMES

    parser.add_argument("pred", metavar="PRED", help="predicted video: an mp4, a folder of frames, or a folder of "
                        "videos (mp4 files or frame folders) matched to GT's by name")  # fmt: skip
    parser.add_argument("gt", metavar="GT", help="ground truth, same layout as PRED")
    parser.add_argument("--metrics", action="append", metavar="NAMES",
                        help=f"metrics to compute, comma separated (or the flag repeated): {','.join(METRIC_NAMES)}; "
                             "default: every metric whose backbone file is present")  # fmt: skip
    parser.add_argument("--json", metavar="OUT", help="write the figures, per-video and per-frame values as JSON")
    parser.add_argument("--models", metavar="DIR", help="folder holding the backbone files (default: "
                        "./models/champ/eval, or ComfyUI's models/champ/eval)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="torch device for the networks (auto, cpu, cuda, ...)")
    parser.add_argument("--gif-palette", action="store_true",
                        help="legacy: quantise frames to a 256-colour palette per frame (DisCo's GIF step) "
                             "before FID-VID and FVD")  # fmt: skip


def _metric_names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return names or None


def run(args) -> int:
    import json
    import sys

    from tqdm import tqdm

    from ..atomic import atomic_file
    from ..evaluation import Evaluator
    from ..evaluation.io import check_sources, pair_sources
    from . import CommandError
    from .errors import check_device, check_input_dir, check_output_file

    out = check_output_file(args.json, "--json", suffixes=(".json",)) if args.json else None
    models = check_input_dir(args.models, "--models", "backbone folder") if args.models else None
    device = check_device(args.device)
    pairs = pair_sources(args.pred, args.gt)
    check_sources(pairs)
    evaluator = Evaluator(metrics=_metric_names(args.metrics), models_dir=models, device=device,
                          gif_palette=args.gif_palette)  # fmt: skip
    for line in evaluator.warnings:
        print(f"warning: {line}", file=sys.stderr)
    shown = len(evaluator.warnings)
    for name, pred, _ in pairs:  # frame counts known without decoding: too-short videos fail now
        count, _ = pred.probe()
        if count is not None:
            evaluator.check_length(count, name)
    for name, pred_source, gt_source in pairs:
        pred, gt = pred_source.read(), gt_source.read()
        with tqdm(total=evaluator.work(len(pred)), desc=f"evaluate {name}", unit="step", leave=False) as bar:

            def progress(done: int, total: int, bar=bar) -> None:
                bar.total = total
                bar.update(done - bar.n)

            evaluator.add(name, pred, gt, progress=progress)
    result = evaluator.result()
    for line in result.warnings[shown:]:
        print(f"warning: {line}", file=sys.stderr)
    print(result.table())
    if out is not None:
        with atomic_file(out) as tmp:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(result.to_json(), handle, indent=1)
                handle.write("\n")
        print(f"wrote {out}")
    if result.errors:
        raise CommandError("; ".join(result.errors))
    return 0
