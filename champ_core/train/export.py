"""Packing a trained small model as the pack's built-in model (`train export-builtin`).

Input: the work folder of `configs/train/train_builtin.sh` (WORK/vae/, WORK/stage1/, WORK/stage2/,
WORK/timings.json). Output: the built-in layout (see `champ_core/models/builtin.py`) with every
floating tensor in fp16 (the size budget is 25 MB; the loaders cast to the compute dtype), the
model card in JSON and Markdown, and SHA256SUMS. The folder is replaced as a whole, atomically.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

from ..models.builtin import (
    CARD_JSON,
    CARD_MD,
    CHAMP_SUBDIR,
    CLIP_SUBDIR,
    DOMAIN_NOTE,
    VAE_SUBDIR,
    BuiltinSampling,
    write_sums,
)
from .config import ConfigError

CHAMP_STEMS = ("denoising_unet", "reference_unet", "motion_module")
SIZE_LIMIT_BYTES = 25 * 1024 * 1024


def _fp16_copy(source: Path, target: Path) -> None:
    """A safetensors file with its floating tensors cast to fp16 (others unchanged), metadata kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    import torch

    tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(target), metadata=metadata)


def _model_folder(source: Path, target: Path, weights_name: str) -> None:
    target.mkdir(parents=True)
    shutil.copy2(source / "config.json", target / "config.json")
    _fp16_copy(source / weights_name, target / weights_name)


def _image_encoder_of(run: Path) -> Path:
    """The seeded tiny CLIP the stage-1 run used (built under its tiny_models/ cache)."""
    found = sorted(run.glob("tiny_models/tiny-image-encoder-*/config.json"))
    if not found:
        raise ConfigError(f"{run}: no tiny_models/tiny-image-encoder-*/ (was stage 1 run with image_encoder_path "
                          "builtin:tiny?)")
    return found[0].parent


def _hardware() -> dict:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "gpu": None}


def _card_markdown(card: dict) -> str:
    timings = card["training"]["seconds"]
    rows = "\n".join(f"| {name} | {seconds / 60:.1f} min |" for name, seconds in timings.items())
    files = "\n".join(f"- `{name}`" for name in card["files"])
    return f"""# The pack's built-in Champ (small)

A small Champ (ReferenceNet, denoising UNet with motion modules, four guidance encoders) with its
own VAE and image encoder, trained with this pack's trainer at {card['image_size']}x{card['image_size']}.

**Domain:** {DOMAIN_NOTE}.

- Sampling as shipped: DDIM, {card['sampling']['steps']} steps, CFG {card['sampling']['guidance_scale']},
  {card['sampling']['beta_schedule']} betas, windows of {card['sampling']['context_frames']} frames.
- Image encoder: {card['image_encoder']}.
- Size: {card['total_bytes'] / 1e6:.1f} MB (fp16 safetensors).
- Trained on {card['training']['hardware']['cpu']} ({card['training']['hardware']['cpu_cores']} cores,
  torch {card['training']['hardware']['torch']}), no GPU:

| stage | wall time |
|---|---|
{rows}

Commands: `bash configs/train/train_builtin.sh` (configs/train/small_*.yaml); docs/training.md.

Files (sha256 in SHA256SUMS):
{files}
"""


def export_builtin(work: str | Path, out: str | Path, sampling: dict | None = None) -> Path:
    from ..atomic import atomic_dir

    work = Path(work)
    stage2 = work / "stage2" / "weights" / "final"
    for path in (work / "vae" / "config.json", stage2 / "denoising_unet.safetensors"):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: run configs/train/train_builtin.sh to the end first")
    manifest = json.loads((stage2 / "champ_weights.json").read_text(encoding="utf-8"))
    image_size = json.loads((work / "vae" / "training.json").read_text(encoding="utf-8"))["config"]["image_size"]
    timings = json.loads((work / "timings.json").read_text(encoding="utf-8")) if (work / "timings.json").is_file() else {}
    out = Path(out)
    with atomic_dir(out, overwrite=True) as staging:
        champ = staging / CHAMP_SUBDIR
        champ.mkdir()
        stems = list(CHAMP_STEMS) + [f"guidance_encoder_{t}" for t in manifest["guidance_types"]]
        for stem in stems:
            _fp16_copy(stage2 / f"{stem}.safetensors", champ / f"{stem}.safetensors")
        manifest.update(dtype="float16", source="builtin", image_size=image_size)
        (champ / "champ_weights.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _model_folder(_image_encoder_of(work / "stage1"), staging / CLIP_SUBDIR, "model.safetensors")
        _model_folder(work / "vae", staging / VAE_SUBDIR, "diffusion_pytorch_model.safetensors")
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        total = sum((staging / f).stat().st_size for f in files)
        if total > SIZE_LIMIT_BYTES:
            raise ConfigError(f"the exported model is {total / 2**20:.1f} MiB, over the 25 MiB budget: train a "
                              "smaller architecture (tiny_model in configs/train/small_stage*.yaml)")
        card = {
            "name": "champ-builtin-small",
            "image_size": image_size,
            "domain": DOMAIN_NOTE,
            "image_encoder": "the seeded tiny CLIP vision model (builtin:tiny), frozen in both stages: the "
                             "appearance reaches the denoiser through the ReferenceNet, as in the reference's "
                             "stage 1, and training it would double the cost of every step on a CPU",
            "sampling": sampling or {"solver": BuiltinSampling.solver, "steps": BuiltinSampling.steps,
                                     "guidance_scale": BuiltinSampling.guidance_scale,
                                     "beta_schedule": BuiltinSampling.beta_schedule,
                                     "context_frames": BuiltinSampling.window_length,
                                     "context_overlap": BuiltinSampling.window_overlap},
            "training": {"seconds": timings, "total_seconds": round(sum(timings.values()), 1),
                         "hardware": _hardware(),
                         "commands": "bash configs/train/train_builtin.sh",
                         "configs": ["configs/train/small_vae.yaml", "configs/train/small_stage1.yaml",
                                     "configs/train/small_stage2.yaml"]},
            "files": files,
            "total_bytes": total,
        }
        (staging / CARD_JSON).write_text(json.dumps(card, indent=1), encoding="utf-8")
        notes = work / "card_notes.md"  # measured quality etc., written by whoever trained it
        markdown = _card_markdown(card) + ("\n" + notes.read_text(encoding="utf-8") if notes.is_file() else "")
        (staging / CARD_MD).write_text(markdown, encoding="utf-8")
        write_sums(staging, files + [CARD_JSON, CARD_MD])
    return out
