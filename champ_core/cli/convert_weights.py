"""`python -m champ_core convert-weights SRC DST [--dtype fp16]`: released Champ weights -> safetensors."""

from __future__ import annotations

HELP = "convert the released Champ .pth weights into the project's safetensors layout"


def add_arguments(parser) -> None:
    parser.add_argument("src", help="folder with denoising_unet.pth, reference_unet.pth, motion_module.pth, "
                                    "guidance_encoder_<type>.pth (the released champ/ folder)")
    parser.add_argument("dst", help="output folder (created); gets <component>.safetensors + champ_weights.json")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                        help="store floating-point tensors in this dtype (default: keep the source dtype)")
    parser.add_argument("--guidance-types", nargs="+", default=None, metavar="TYPE",
                        help="only these guidance encoders (default: every guidance_encoder_<type> file present)")


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from ..models.convert import convert_weights
    from ..models.errors import CheckpointError, ModelInputError
    from . import CommandError
    from .errors import check_input_dir, check_output_dir, os_error_from_text

    check_input_dir(args.src, "SRC", "released champ/ weights folder")
    dst = check_output_dir(args.dst, "DST", overwrite=True)  # files inside are replaced one by one
    if Path(args.src).resolve() == dst.resolve():
        raise CommandError(f"DST {dst}: is the source folder; give another output folder")
    created = not dst.exists()
    bars = []  # created on the first progress report, so an early error prints no empty bar

    def progress(name: str, index: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="file", desc="convert-weights"))
        bars[0].n = index
        bars[0].set_postfix_str(name)
        bars[0].refresh()

    try:
        manifest = convert_weights(args.src, args.dst, args.dtype, args.guidance_types, progress)
    except (CheckpointError, ModelInputError) as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(dst)
        raise
    except Exception as exc:  # safetensors reports a failed write (disk full, ...) as its own error type
        os_error = os_error_from_text(exc, dst) if type(exc).__name__ == "SafetensorError" else None
        if os_error is None:
            raise
        raise os_error from exc
    finally:
        if created and dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()  # a failed conversion leaves no empty output folder behind
        for bar in bars:
            bar.n = bar.total if bar.total else bar.n
            bar.close()
    for name, info in manifest["components"].items():
        dropped = f", {len(info['dropped_unused'])} unused tensors left out" if info["dropped_unused"] else ""
        print(f"{name}: {info['tensors']} tensors{dropped}")
    print(f"wrote {args.dst} (dtype: {manifest['dtype']})")
    return 0
