"""`python -m champ_core convert-weights`: released .pth -> the project's safetensors, loadable strictly."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from champ_core.cli import main as cli_main
from champ_core.models import load_champ_models

sys.path.insert(0, str(Path(__file__).parent))
from test_models_loading import make_released_folder  # noqa: E402

PARITY_DIR = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    return make_released_folder(tmp_path_factory.mktemp("convert") / "champ")


def predict(models, io):
    with torch.no_grad():
        reference = models.denoising_unet.prepare_reference(models.reference_unet(io["ref_latents"], 0, io["clip_embeds"]))
        return models.denoising_unet(io["noisy_latents"], io["timestep"], io["clip_embeds"], io["guidance_fea"], reference)


def test_convert_fp32_is_lossless(released, tmp_path, capsys):
    dst = tmp_path / "converted"
    assert cli_main(["convert-weights", str(released), str(dst)]) == 0
    assert "denoising_unet: " in capsys.readouterr().out
    names = sorted(p.name for p in dst.iterdir())
    assert names == sorted(["champ_weights.json", "denoising_unet.safetensors", "reference_unet.safetensors"]
                           + [f"guidance_encoder_{t}.safetensors" for t in ("depth", "normal", "semantic_map", "dwpose")])
    manifest = json.loads((dst / "champ_weights.json").read_text())
    assert manifest["format"] == "champ_core.weights" and manifest["version"] == 1
    # the project's naming: motion modules inside the denoising UNet file, `attention.*` in the encoders
    with safe_open(str(dst / "denoising_unet.safetensors"), "pt") as f:
        assert any(".motion_modules." in k for k in f.keys())
        assert f.metadata()["component"] == "denoising_unet"
    encoder_keys = load_file(dst / "guidance_encoder_depth.safetensors").keys()
    assert any(k.startswith("attention.") for k in encoder_keys)
    assert not any(k.startswith(("attentions.", "guidance_attention.")) for k in encoder_keys)
    assert manifest["components"]["guidance_encoder_depth"]["dropped_unused"]  # attentions.0-4 left out

    io = load_file(PARITY_DIR / "unet" / "io.safetensors")
    original, converted = load_champ_models(released), load_champ_models(dst)
    for a, b in [(original.reference_unet, converted.reference_unet),
                 (original.denoising_unet, converted.denoising_unet),
                 *[(original.guidance_encoders[t], converted.guidance_encoders[t]) for t in original.guidance_encoders]]:
        state_a, state_b = a.state_dict(), b.state_dict()
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    expected = io["pred_cond_nocfg"]
    assert (predict(converted, io) - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_convert_fp16(released, tmp_path):
    dst = tmp_path / "fp16"
    assert cli_main(["convert-weights", str(released), str(dst), "--dtype", "fp16"]) == 0
    state = load_file(dst / "reference_unet.safetensors")
    assert all(t.dtype == torch.float16 for t in state.values())
    models = load_champ_models(dst)  # loads as fp32 by default: values are the fp16-rounded weights
    source = load_file(PARITY_DIR / "unet" / "reference_unet.safetensors")
    params = models.reference_unet.state_dict()
    assert all(torch.equal(params[k], source[k].half().float()) for k in source)


def test_convert_errors_are_user_errors_and_leave_nothing_behind(released, tmp_path, capsys):
    src = tmp_path / "broken"
    src.mkdir()
    for p in released.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    state = torch.load(src / "reference_unet.pth", weights_only=True)
    state.pop("conv_in.weight")
    torch.save(state, src / "reference_unet.pth")
    dst = tmp_path / "out"
    assert cli_main(["convert-weights", str(src), str(dst)]) == 2
    assert "conv_in.weight" in capsys.readouterr().err
    assert not dst.exists() or not any(dst.iterdir())
    assert cli_main(["convert-weights", str(tmp_path / "nowhere"), str(dst)]) == 2
