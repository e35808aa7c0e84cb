"""The CLIP image encoder and the VAE, loaded from their folders, and CLIP preprocessing.

- image encoder: the released `image_encoder/` folder (transformers CLIPVisionModelWithProjection);
- VAE: `sd-vae-ft-mse/` (diffusers AutoencoderKL).
Nothing is downloaded: both load with `local_files_only=True` and a missing folder is a clear
error. CLIP preprocessing is done here (no torchvision, no transformers image processor).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import CheckpointError, ModelInputError
from .loading import resolve_dtype

CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _require_folder(folder: str | Path, what: str, files: tuple[str, ...], where: str) -> Path:
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not any((folder / name).is_file() for name in files):
        raise CheckpointError(
            f"{what} not found in {folder.resolve()}: expected config.json and one of {', '.join(files)} "
            f"({where})"
        )
    return folder


def load_image_encoder(folder: str | Path, dtype: torch.dtype | str = torch.float32,
                       device: str | torch.device = "cpu"):
    """transformers CLIPVisionModelWithProjection from a local folder (Champ's `image_encoder/`)."""
    from transformers import CLIPVisionModelWithProjection

    folder = _require_folder(folder, "CLIP image encoder", ("model.safetensors", "pytorch_model.bin"),
                             "Champ's released image_encoder/ folder, from lambdalabs/sd-image-variations-diffusers")
    model = CLIPVisionModelWithProjection.from_pretrained(
        str(folder), dtype=resolve_dtype(dtype), local_files_only=True, use_safetensors=None
    )
    return model.to(device).eval().requires_grad_(False)


def load_vae(folder: str | Path, dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu"):
    """diffusers AutoencoderKL from a local folder (Champ's `sd-vae-ft-mse/`)."""
    from diffusers import AutoencoderKL

    folder = _require_folder(
        folder, "VAE",
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors"),
        "the stabilityai/sd-vae-ft-mse folder",
    )
    model = AutoencoderKL.from_pretrained(
        str(folder), torch_dtype=resolve_dtype(dtype), local_files_only=True, low_cpu_mem_usage=False
    )
    return model.to(device).eval().requires_grad_(False)


def _pil_filter_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's bicubic (a = -0.5) resampling weights for one axis, in its 22-bit fixed point.

    Rows are output pixels. Pillow widens the kernel by the scale when shrinking (antialias),
    clips it at the borders and renormalises it, then rounds the weights to integers.
    """
    def cubic(x: float) -> float:
        x = abs(x)
        if x < 1.0:
            return (1.5 * x - 2.5) * x * x + 1.0
        if x < 2.0:
            return (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5
        return 0.0

    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 2.0 * filter_scale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        row = [cubic((x - center + 0.5) / filter_scale) for x in range(lo, hi)]
        total = sum(row)
        for x, w in zip(range(lo, hi), row):
            w = w / total if total != 0.0 else w
            weights[i, x] = float(int(w * (1 << PIL_PRECISION_BITS) + (-0.5 if w < 0 else 0.5)))
    return weights


PIL_PRECISION_BITS = 22


def pil_bicubic_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize uint8 (B, C, H, W) images to size=(h, w) exactly like Pillow's `Image.resize(..., BICUBIC)`.

    Pillow resamples horizontally, rounds and clips to 8 bits, then vertically. Integer sums are
    exact in float64 here (|sum| < 2**53).
    """
    x = images.to("cpu", torch.float64)
    height, width = size
    half = float(1 << (PIL_PRECISION_BITS - 1))
    shift = float(1 << PIL_PRECISION_BITS)
    if x.shape[-1] != width:
        x = torch.floor((x @ _pil_filter_matrix(x.shape[-1], width).T + half) / shift).clamp(0, 255)
    if x.shape[-2] != height:
        x = torch.floor((_pil_filter_matrix(x.shape[-2], height) @ x + half) / shift).clamp(0, 255)
    return x.to(torch.uint8).to(images.device)


def clip_preprocess(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] (or uint8) -> (B, 3, 224, 224) float32 CLIP input, as the reference makes it.

    The reference squashes the 8-bit image to 224x224 with PIL's bicubic filter (no aspect
    preservation), then the CLIP processor rescales by 1/255 and normalises with CLIP's mean and
    std (its resize and centre crop are no-ops at 224). Float input is first rounded to 8 bits.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ModelInputError(f"images must be (B, 3, H, W) RGB, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        pixels = images
    else:
        pixels = torch.round(images.float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    pixels = pil_bicubic_resize(pixels, (CLIP_SIZE, CLIP_SIZE))
    x = (pixels.to(torch.float64) / 255.0).to(torch.float32)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
