"""`python -m champ_core animate`: a reference image + a motion folder -> an animation video."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from . import CommandError

HELP = "Animate a reference image along a guidance (motion) folder and write an mp4."

DTYPES = ("auto", "fp32", "fp16", "bf16")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 512x768") from exc
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..guidance import GUIDANCE_TYPES
    from ..pipeline.scheduler import BETA_SCHEDULES, SOLVERS
    from ..pipeline.windows import FUSIONS, SCHEDULES

    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--reference", required=True, type=Path, help="reference image (any size; RGBA/gray accepted)")
    io.add_argument("--guidance", required=True, type=Path,
                    help="motion folder with depth/ normal/ semantic_map/ dwpose/ [mask/] (as written by `render`)")
    io.add_argument("--weights", default=None, type=Path,
                    help="folder with champ/, image_encoder/, sd-vae-ft-mse/ (released layout or converted "
                         "safetensors); default: the pack's built-in small model (models/champ/builtin, 128 px, "
                         "trained on generated people)")
    io.add_argument("--out", required=True, type=Path, help="output video (.mp4)")
    io.add_argument("--grid", type=Path, default=None, help="also write reference | result | guidance maps here")
    io.add_argument("--frames", default=None, metavar="A:B", help="frame range of the motion folder (end exclusive)")
    io.add_argument("--fps", type=float, default=24.0, help="output frame rate (default 24, as the reference)")
    io.add_argument("--guidance-types", nargs="+", choices=GUIDANCE_TYPES, default=None,
                    help="use only these guidance types (default: every type present in both folders)")

    gen = parser.add_argument_group("generation")
    gen.add_argument("--width", type=int, default=None,
                     help="generation width (default 512; the built-in model: its training size, 128)")
    gen.add_argument("--height", type=int, default=None, help="generation height (default as --width)")
    gen.add_argument("--fit", choices=("squash", "crop", "pad"), default="squash",
                     help="how reference and maps reach the generation size (default squash, as the reference)")
    gen.add_argument("--output-size", type=_size, default=None, metavar="WxH",
                     help="resize the decoded frames to this size (default: the generation size)")
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--cfg", type=float, default=None,
                     help="classifier-free guidance scale (<= 1: off; default 3.5 as the reference, "
                          "the built-in model: its shipped 1.0)")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--solver", choices=tuple(SOLVERS), default="ddim")
    gen.add_argument("--beta-schedule", choices=BETA_SCHEDULES, default="linear",
                     help="linear: the reference's inference; scaled_linear: the training schedule")

    win = parser.add_argument_group("temporal windows")
    win.add_argument("--window-length", type=int, default=24)
    win.add_argument("--window-overlap", type=int, default=4)
    win.add_argument("--window-stride", type=int, default=1, help="dilation levels (the reference's context_stride)")
    win.add_argument("--window-schedule", choices=SCHEDULES, default="loop",
                     help="loop: wrap around (the reference); open: no wrap, for clips that are not loops")
    win.add_argument("--window-fusion", choices=FUSIONS, default="flat")
    win.add_argument("--shift-windows", action="store_true", help="move the window grid from step to step")
    win.add_argument("--show-windows", action="store_true", help="print the window plan and exit")

    run_group = parser.add_argument_group("device")
    run_group.add_argument("--device", default="auto", help="cuda, cpu, cuda:1, ... (default: cuda if available)")
    run_group.add_argument("--dtype", choices=DTYPES, default="auto", help="auto: fp16 on GPU, fp32 on CPU")
    run_group.add_argument("--decode-chunk", type=int, default=4, help="frames decoded at a time (default 4)")
    run_group.add_argument("--guidance-cache-mb", type=int, default=0,
                           help="keep encoded guidance up to this size instead of re-encoding each step")


def _window_options(args):
    from ..pipeline.windows import WindowOptions

    return WindowOptions(length=args.window_length, overlap=args.window_overlap, stride=args.window_stride,
                         schedule=args.window_schedule, fusion=args.window_fusion,
                         shift_per_step=args.shift_windows)


def _quiet_loaders() -> None:
    """diffusers/transformers print load chatter and their own bars; the CLI shows one bar of its own."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


REFERENCE_CFG = 3.5  # the reference's inference configs


def apply_weight_defaults(args) -> None:
    """No --weights: the built-in model, at the size it was trained at and its shipped CFG; otherwise
    512x512 and CFG 3.5 as the reference."""
    from ..models.builtin import BUILTIN_DIR, BuiltinSampling, builtin_model_dir, builtin_size
    from ..models.errors import CheckpointError

    if args.weights is None:
        try:
            args.weights = builtin_model_dir(BUILTIN_DIR)
            size = builtin_size(args.weights)
        except CheckpointError as exc:
            raise CommandError(f"no --weights given and {exc}") from None
        cfg = BuiltinSampling.guidance_scale
    else:
        size, cfg = (512, 512), REFERENCE_CFG
    if args.cfg is None:
        args.cfg = cfg
    if args.height is None:
        args.height = size[1] if args.width is None else args.width
    if args.width is None:
        args.width = size[0]


def check_arguments(args) -> None:
    """Every check that needs no model: numbers, output paths, the device, the reference image."""
    from .errors import check_input_dir, check_input_file, check_output_file, check_positive

    apply_weight_defaults(args)
    check_positive(args.fps, "--fps")
    check_positive(args.steps, "--steps", integer=True)
    check_positive(args.width, "--width", integer=True)
    check_positive(args.height, "--height", integer=True)
    for flag, value in (("--width", args.width), ("--height", args.height)):
        if value % 8:
            raise CommandError(f"{flag} {value}: must be a multiple of 8 (the VAE's scale), e.g. {max(8, value // 8 * 8)}")
    if not np.isfinite(args.cfg):
        raise CommandError(f"--cfg {args.cfg}: must be a finite number (e.g. 3.5; <= 1 turns guidance off)")
    if args.output_size is not None:
        w, h = args.output_size
        if w <= 0 or h <= 0:
            raise CommandError(f"--output-size {w}x{h}: both sides must be positive, e.g. 512x768")
    check_positive(args.decode_chunk, "--decode-chunk", integer=True)
    check_positive(args.window_length, "--window-length", integer=True)
    check_positive(args.window_overlap, "--window-overlap", integer=True, allow_zero=True)
    check_positive(args.window_stride, "--window-stride", integer=True)
    check_positive(args.guidance_cache_mb, "--guidance-cache-mb", integer=True, allow_zero=True)
    check_input_dir(args.guidance, "--guidance", "motion folder")
    if args.show_windows:
        return
    check_output_file(args.out, "--out", VIDEO_SUFFIXES)
    if args.grid is not None:
        check_output_file(args.grid, "--grid", VIDEO_SUFFIXES)
        if Path(args.grid).absolute() == Path(args.out).absolute():
            raise CommandError(f"--grid {args.grid}: is the same file as --out; give it another name")
    check_input_file(args.reference, "--reference", "reference image")
    check_input_dir(args.weights, "--weights", "weights folder")


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from ..pipeline.inputs import FolderGuidance, InputError, parse_frame_range, to_rgb_uint8
    from ..pipeline.loading import WeightsError, load_pipeline, resolve_weights
    from ..pipeline.sampling import SamplingOptions, to_uint8
    from ..pipeline.windows import WindowError, plan_windows
    from ..video import VideoWriter
    from .errors import check_device

    check_arguments(args)
    try:
        frames = parse_frame_range(args.frames)
    except InputError as exc:
        raise CommandError(f"--frames {args.frames}: {exc}") from exc
    try:
        guidance = FolderGuidance(args.guidance, args.guidance_types, frames)
        windows = _window_options(args)
        plan = plan_windows(guidance.num_frames, windows)
    except (InputError, WindowError) as exc:
        raise CommandError(f"--guidance {args.guidance}: {exc}" if isinstance(exc, InputError) else str(exc)) from exc
    if args.show_windows:
        print(plan.describe(args.steps))
        return 0
    try:
        reference_image = to_rgb_uint8(args.reference)
    except InputError as exc:
        raise CommandError(f"--reference {args.reference}: {exc}; give a PNG or JPEG photograph") from exc
    device = check_device(args.device)
    try:
        resolve_weights(args.weights)
    except WeightsError as exc:
        raise CommandError(f"--weights {args.weights}: {exc}") from exc

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(args.dtype)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    _quiet_loaders()
    try:
        pipeline = load_pipeline(args.weights, dtype=dtype, device=device, guidance_types=guidance.types)
    except (WeightsError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    try:
        pipeline.check_size(args.width, args.height)
    except InputError as exc:
        raise CommandError(f"--width/--height: {exc}") from exc

    options = SamplingOptions(steps=args.steps, guidance_scale=args.cfg, seed=args.seed, solver=args.solver,
                              beta_schedule=args.beta_schedule, windows=windows,
                              guidance_cache_bytes=args.guidance_cache_mb * 2**20)
    bars: dict[str, tqdm] = {}

    def progress(event) -> None:
        bar = bars.get(event.phase)
        if bar is None:
            for other in bars.values():
                other.close()
            unit = {"denoise": "window", "decode": "frame"}.get(event.phase, "pass")
            bar = bars[event.phase] = tqdm(total=event.total, desc=event.phase, unit=unit, dynamic_ncols=True)
        if event.phase == "denoise":
            bar.set_postfix_str(f"step {event.step + 1}/{event.num_steps}, window {event.window + 1}/{event.num_windows}",
                                refresh=False)
        bar.update(event.done - bar.n)

    try:
        reference = pipeline.encode_reference(reference_image, args.width, args.height, args.fit)
        latents = pipeline.denoise(reference, guidance, args.width, args.height, options, args.fit,
                                   progress=progress)
        out_w, out_h = args.output_size or (args.width, args.height)
        with VideoWriter(args.out, args.fps) as writer:
            if args.grid is None:
                for _, chunk in pipeline.decode(latents, args.decode_chunk, args.output_size, progress):
                    writer.write(to_uint8(chunk))
            else:
                from ..pipeline.inputs import WHITE, fit_image

                ref_tile = fit_image(reference_image, out_w, out_h, args.fit, "lanczos", WHITE)
                with VideoWriter(args.grid, args.fps) as grid_writer:
                    for frames, chunk in pipeline.decode(latents, args.decode_chunk, args.output_size, progress):
                        result = to_uint8(chunk)
                        writer.write(result)
                        maps = guidance.read(list(frames), out_w, out_h, args.fit)
                        tiles = [[ref_tile] * len(result), result] + [maps[t] for t in guidance.types]
                        grid_writer.write(np.concatenate([np.asarray(t) for t in tiles], axis=2))
    except InputError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        for bar in bars.values():
            bar.close()
    print(f"wrote {args.out}" + (f" and {args.grid}" if args.grid else ""))
    return 0
