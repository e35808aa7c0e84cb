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
    from tqdm import tqdm

    from ..models.convert import convert_weights
    from ..models.errors import CheckpointError, ModelInputError
    from . import CommandError

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
    finally:
        for bar in bars:
            bar.n = bar.total if bar.total else bar.n
            bar.close()
    for name, info in manifest["components"].items():
        dropped = f", {len(info['dropped_unused'])} unused tensors left out" if info["dropped_unused"] else ""
        print(f"{name}: {info['tensors']} tensors{dropped}")
    print(f"wrote {args.dst} (dtype: {manifest['dtype']})")
    return 0
