"""The pack's own small Champ: where it lives, how it is checked, how it is written.

The built-in model ships inside the pack, in the released weights layout, so every loader that
reads released weights reads it too:

    models/champ/builtin/
      champ/           denoising_unet, reference_unet, motion_module, guidance_encoder_<type>
                       (.safetensors, fp16) + champ_weights.json
      image_encoder/   transformers CLIPVisionModelWithProjection (config.json + model.safetensors)
      vae/             diffusers AutoencoderKL (config.json + diffusion_pytorch_model.safetensors)
      model_card.json  what it is, its size, how and on what hardware it was trained
      MODEL_CARD.md    the same for people
      SHA256SUMS       one line per file above ("<sha256>  <relative path>")

It was trained on generated mannequins only (`synth-data`); real photographs are outside its
domain. docs/training.md ("The built-in model") has the commands that made it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from .errors import CheckpointError

PACK_DIR = Path(__file__).resolve().parents[2]
BUILTIN_DIR = PACK_DIR / "models" / "champ" / "builtin"
# The name the loaders (nodes) and the CLI show for it; listed first wherever a model is chosen.
BUILTIN_CHOICE = "builtin (pack's small model, 128 px)"
IMAGE_SIZE = 128  # the size it is trained at (configs/train/small_*.yaml); its model card records the same
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
SUMS = "SHA256SUMS"
CHAMP_SUBDIR, CLIP_SUBDIR, VAE_SUBDIR = "champ", "image_encoder", "vae"
DOMAIN_NOTE = ("trained on generated mannequins only (python -m champ_core synth-data); real photographs are "
               "outside its domain, use the released Champ weights for them")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sums(folder: str | Path) -> dict[str, str]:
    """relative path -> sha256, from `folder/SHA256SUMS`."""
    sums = {}
    for line in (Path(folder) / SUMS).read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    return sums


def write_sums(folder: str | Path, names: Iterable[str]) -> Path:
    folder = Path(folder)
    lines = [f"{file_sha256(folder / name)}  {name}" for name in sorted(names)]
    path = folder / SUMS
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def verify_sums(folder: str | Path) -> list[str]:
    """The files whose sha256 differs from SHA256SUMS or that are missing (empty: all good)."""
    folder = Path(folder)
    bad = []
    for name, digest in read_sums(folder).items():
        path = folder / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
        elif file_sha256(path) != digest:
            bad.append(f"{name} (sha256 differs)")
    return bad


def builtin_model_dir(folder: str | Path | None = None) -> Path:
    """The built-in model's folder, or a CheckpointError saying what is missing and what to do."""
    folder = Path(folder) if folder is not None else BUILTIN_DIR
    needed = [folder / CHAMP_SUBDIR / "denoising_unet.safetensors", folder / CLIP_SUBDIR / "config.json",
              folder / VAE_SUBDIR / "config.json", folder / CARD_JSON]
    missing = [str(p.relative_to(folder)) for p in needed if not p.is_file()]
    if missing:
        raise CheckpointError(f"the built-in model is incomplete in {folder} ({', '.join(missing)} missing): restore "
                              "the pack's models/champ/builtin/ folder (git checkout -- models/champ/builtin) or "
                              "pass your own weights folder")
    return folder


def read_card(folder: str | Path | None = None) -> dict:
    return json.loads((builtin_model_dir(folder) / CARD_JSON).read_text(encoding="utf-8"))


def builtin_size(folder: str | Path | None = None) -> tuple[int, int]:
    """(width, height) the built-in model was trained at."""
    size = read_card(folder).get("image_size", IMAGE_SIZE)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class BuiltinSampling:
    """How the built-in model is sampled as shipped: the templates, `demo`, `animate` and
    bench/quality.py all read these numbers from here."""

    steps = 20
    guidance_scale = 1.0  # chosen on training people (docs/training.md): CFG > 1 only hurt this small model
    solver = "ddim"
    beta_schedule = "linear"
    seed = 42
    window_length = 24
    window_overlap = 4
