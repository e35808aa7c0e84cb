"""Starting points of both training stages and the weight files training writes (tiny seeded weights)."""

from __future__ import annotations

import json

import pytest
import torch

from champ_core.models import load_champ_models
from champ_core.models.checkpoints import TensorFile
from champ_core.models.config import ChampConfig, GuidanceEncoderConfig, MotionModuleConfig, UNetConfig
from champ_core.models.errors import CheckpointError
from champ_core.models.unet import DenoisingUNet3D
from champ_core.pipeline.sampling import ChampDenoiser
from champ_core.pipeline.windows import WindowOptions
from champ_core.train.starting import build_champ_model_for_stage, find_stage1_weights, save_champ_weights

TYPES = ["depth", "dwpose"]
SD_CONFIG = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 16, "attention_head_dim": 8, "norm_num_groups": 16,
}


def tiny_config() -> ChampConfig:
    unet = UNetConfig(block_out_channels=(32, 64), down_cross_attention=(True, False), up_cross_attention=(False, True),
                      layers_per_block=1, cross_attention_dim=16, norm_num_groups=16)
    return ChampConfig(denoising_unet=unet, reference_unet=UNetConfig.from_dict({**unet.to_dict(), "out_channels": None}),
                       guidance_encoder=GuidanceEncoderConfig(embedding_channels=32, block_out_channels=(8, 16, 16, 32)))


@pytest.fixture(scope="module")
def sd15_folder(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(3)
    unet = UNet2DConditionModel(**SD_CONFIG)
    folder = tmp_path_factory.mktemp("sd15") / "unet"
    unet.save_pretrained(folder, safe_serialization=True)
    return folder, unet.eval()


def test_stage1_from_an_sd15_unet_folder_matches_diffusers(sd15_folder):
    folder, oracle = sd15_folder
    model = build_champ_model_for_stage(1, None, guidance_types=TYPES, sd15_unet_dir=folder)
    assert not model.denoising_unet.has_motion_modules and model.guidance_types == tuple(TYPES)
    expected = oracle.state_dict()
    for name, tensor in model.denoising_unet.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert set(model.denoising_unet.state_dict()) == set(expected)  # strict: every tensor used
    reference = model.reference_unet.state_dict()
    assert set(reference) == {k for k in expected if not k.startswith(("conv_norm_out.", "conv_out."))}
    assert all(torch.equal(v, expected[k]) for k, v in reference.items())
    for encoder in model.guidance_encoders.values():  # fresh encoders add nothing at first
        assert not encoder.conv_out.weight.any() and not encoder.conv_out.bias.any()
    # the stage-1 denoiser on one frame is diffusers' UNet2DConditionModel
    x = torch.randn(2, 4, 1, 6, 4)
    clip = torch.randn(2, 1, 16)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        ours = model(x, t, clip, guidance_features=torch.zeros(2, 32, 1, 6, 4))
        theirs = oracle(x[:, :, 0], t, encoder_hidden_states=clip).sample
    assert (ours[:, :, 0] - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_sd15_folder_with_a_wrong_tensor_is_refused_by_name(sd15_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = sd15_folder
    state = load_file(folder / "diffusion_pytorch_model.safetensors")
    state.pop("mid_block.attentions.0.proj_in.weight")
    bad = tmp_path / "unet"
    bad.mkdir()
    (bad / "config.json").write_text((folder / "config.json").read_text())
    save_file(state, str(bad / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"mid_block\.attentions\.0\.proj_in\.weight"):
        build_champ_model_for_stage(1, None, guidance_types=TYPES, sd15_unet_dir=bad)


def test_random_init_is_seeded_and_shares_the_2d_weights():
    a = build_champ_model_for_stage(1, tiny_config(), guidance_types=TYPES, seed=5)
    b = build_champ_model_for_stage(1, tiny_config(), guidance_types=TYPES, seed=5)
    c = build_champ_model_for_stage(1, tiny_config(), guidance_types=TYPES, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["denoising_unet.conv_in.weight"], sc["denoising_unet.conv_in.weight"])
    for name, tensor in a.reference_unet.state_dict().items():
        assert torch.equal(tensor, a.denoising_unet.state_dict()[name])


def test_stage1_output_loads_frame_by_frame_and_stage2_starts_from_it(tmp_path):
    stage1 = build_champ_model_for_stage(1, tiny_config(), guidance_types=TYPES, seed=1)
    with torch.no_grad():  # give the guidance encoders and the heads non-trivial weights
        for p in stage1.parameters():
            p.add_(0.01 * torch.randn_like(p))
    written = save_champ_weights(stage1, tmp_path / "weights" / "step-10", stage=1)
    names = sorted(p.name for p in written)
    assert names == sorted(["champ_weights.json"] + [f"{s}.{x}" for s in
                            ["denoising_unet", "reference_unet", "guidance_encoder_depth", "guidance_encoder_dwpose"]
                            for x in ("pth", "safetensors")])
    assert not list((tmp_path / "weights").glob(".*"))  # no temporary leftovers
    folder = find_stage1_weights(tmp_path, "latest")
    assert folder == tmp_path / "weights" / "step-10" and find_stage1_weights(tmp_path, 10) == folder
    # the .pth files are plain tensor dicts (weights_only) in the reference's names
    pth = TensorFile(folder / "guidance_encoder_depth.pth")
    assert any(k.startswith("attentions.5.") for k in pth.keys()) and not any(k.startswith("attention.") for k in pth.keys())
    assert json.loads((folder / "champ_weights.json").read_text())["motion_modules"] is False

    loaded = load_champ_models(folder)  # the loader mode: no motion modules, frames independent
    assert not loaded.denoising_unet.has_motion_modules
    ours = stage1.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in loaded.state_dict().items()) and set(loaded.state_dict()) == set(ours)
    plan = ChampDenoiser(loaded).window_plan(30, WindowOptions())
    covered = sorted(f for w in plan.windows(0) for f in w.frames)
    assert covered == list(range(30))  # every frame denoised exactly once

    # stage 2 with fresh motion modules: identity modules, so the video UNet is the image UNet per frame
    fresh = build_champ_model_for_stage(2, None, guidance_types=TYPES, stage1_dir=tmp_path, seed=2)
    assert fresh.denoising_unet.has_motion_modules
    inputs = (torch.randn(1, 4, 3, 4, 4), 500, torch.randn(1, 1, 16))
    extra = {"guidance": torch.rand(1, 6, 3, 32, 32), "reference_latents": torch.randn(1, 4, 4, 4)}
    with torch.no_grad():
        video, frames = fresh(*inputs, **extra), loaded(*inputs, **extra)
    assert (video - frames).abs().max() <= 1e-5 * frames.abs().max()

    # stage 2 from an AnimateDiff-style motion-module checkpoint: every tensor mapped
    donor = DenoisingUNet3D(UNetConfig.from_dict({**tiny_config().denoising_unet.to_dict(),
                                                  "motion": MotionModuleConfig().__dict__}))
    motion = {k: v for k, v in donor.state_dict().items() if ".motion_modules." in k}
    torch.save({"state_dict": motion}, tmp_path / "mm_sd_v15_v2.ckpt")
    model = build_champ_model_for_stage(2, None, guidance_types=TYPES, stage1_dir=folder,
                                        motion_module_path=tmp_path / "mm_sd_v15_v2.ckpt")
    state = model.denoising_unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in motion.items())
    assert all(torch.equal(state[k], v) for k, v in loaded.denoising_unet.state_dict().items())
    written = save_champ_weights(model, tmp_path / "weights" / "final", stage=2)
    assert {p.name for p in written} >= {"motion_module.pth", "motion_module.safetensors"}
    again = load_champ_models(tmp_path / "weights" / "final")
    assert again.denoising_unet.has_motion_modules
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())

    motion["down_blocks.0.motion_modules.0.extra.weight"] = torch.zeros(2)
    torch.save(motion, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"unexpected tensors.*extra\.weight"):
        build_champ_model_for_stage(2, None, guidance_types=TYPES, stage1_dir=folder, motion_module_path=tmp_path / "bad.ckpt")


def test_stage1_denoiser_gradients_match_diffusers(sd15_folder):
    """Training through the stage-1 denoiser backpropagates as diffusers' UNet2DConditionModel does."""
    from champ_core.train.trainable import prepare_for_training

    folder, oracle = sd15_folder
    model = build_champ_model_for_stage(1, None, guidance_types=TYPES, sd15_unet_dir=folder)
    prepare_for_training(model, 1)
    from diffusers import UNet2DConditionModel

    theirs = UNet2DConditionModel.from_pretrained(folder).train()
    generator = torch.Generator().manual_seed(0)
    x, target = torch.randn(2, 4, 1, 6, 4, generator=generator), torch.randn(2, 4, 1, 6, 4, generator=generator)
    clip, t = torch.randn(2, 1, 16, generator=generator), torch.tensor([10, 700])
    ours = model(x, t, clip, guidance_features=torch.zeros(2, 32, 1, 6, 4))
    ((ours - target) ** 2).mean().backward()
    (((theirs(x[:, :, 0], t, encoder_hidden_states=clip).sample - target[:, :, 0]) ** 2).mean()).backward()
    reference = dict(theirs.named_parameters())
    for name, parameter in model.denoising_unet.named_parameters():
        expected = reference[name].grad
        assert parameter.grad is not None, name
        scale = max(expected.abs().max().item(), 1e-12)
        assert (parameter.grad - expected).abs().max().item() <= 1e-5 * scale + 1e-9, name
