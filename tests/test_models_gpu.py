"""The networks on a CUDA device (run on a lent GPU machine: `pytest -m gpu tests/test_models_gpu.py`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from champ_core.models import load_champ_models

PARITY_DIR = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(("dtype", "rel"), [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_cfg_prediction_on_cuda(dtype, rel, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convs in full precision
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    io = {k: v.cuda() for k, v in load_file(PARITY_DIR / "unet" / "io.safetensors").items()}
    models = load_champ_models(PARITY_DIR / "unet", dtype=dtype, device="cuda", guidance_folder=PARITY_DIR / "pipeline")
    assert all(p.is_cuda for p in models.denoising_unet.parameters())
    clip = io["clip_embeds"]
    with torch.inference_mode():
        reference = models.denoising_unet.prepare_reference(models.reference_unet(io["ref_latents"], 0, clip))
        out = models.denoising_unet(
            io["noisy_latents"].repeat(2, 1, 1, 1, 1), io["timestep"], torch.cat([torch.zeros_like(clip), clip]),
            io["guidance_fea"].repeat(2, 1, 1, 1, 1), reference, torch.tensor([False, True], device="cuda"),
        )
    for got, key in ((out[0:1], "pred_uncond"), (out[1:2], "pred_cond")):
        expected = io[key]
        assert (got.float() - expected).abs().max() <= rel * expected.abs().max(), key
