"""Strict, safe weight loading: released .pth layout, safetensors, dtypes, subsets, motion modules."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from champ_core.models import (
    CheckpointError,
    ModelInputError,
    WindowTooLongError,
    load_champ_models,
    load_motion_modules,
    load_reference_unet,
)

PARITY_DIR = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))
GUIDANCE_TYPES = ("depth", "normal", "semantic_map", "dwpose")


def make_released_folder(folder: Path, guidance_types=GUIDANCE_TYPES) -> Path:
    """The fixture's weights written as the released `.pth` files (plain torch state dicts)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("denoising_unet", "reference_unet", "motion_module"):
        torch.save(load_file(PARITY_DIR / "unet" / f"{name}.safetensors"), folder / f"{name}.pth")
    for guidance_type in guidance_types:
        state = load_file(PARITY_DIR / "pipeline" / f"guidance_encoder_{guidance_type}.safetensors")
        torch.save(state, folder / f"guidance_encoder_{guidance_type}.pth")
    return folder


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    return make_released_folder(tmp_path_factory.mktemp("released") / "champ")


@pytest.fixture(scope="module")
def unet_io():
    return load_file(PARITY_DIR / "unet" / "io.safetensors")


def predict(models, io, clip=None):
    clip = io["clip_embeds"] if clip is None else clip
    with torch.no_grad():
        features = models.reference_unet(io["ref_latents"], 0, clip)
        reference = models.denoising_unet.prepare_reference(features)
        return models.denoising_unet(io["noisy_latents"], io["timestep"], clip, io["guidance_fea"], reference)


@pytest.fixture(scope="module")
def released_models(released):
    return load_champ_models(released)


def test_released_pth_layout_gives_the_reference_prediction(released_models, unet_io):
    models = released_models
    assert sorted(models.guidance_encoders) == sorted(GUIDANCE_TYPES)
    for module in (models.reference_unet, models.denoising_unet, *models.guidance_encoders.values()):
        tensors = [*module.parameters(), *module.buffers()]
        assert all(t.device.type == "cpu" and not t.is_meta for t in tensors)
        assert not module.training and not any(p.requires_grad for p in module.parameters())
    out = predict(models, unet_io)
    scale = unet_io["pred_cond_nocfg"].abs().max()
    assert (out - unet_io["pred_cond_nocfg"]).abs().max() <= 1e-5 * scale


def test_motion_module_count_and_window_limit(released_models, unet_io):
    unet = released_models.denoising_unet
    names = {n.split(".temporal_transformer.")[0] for n, _ in unet.named_parameters() if ".motion_modules." in n}
    config = json.loads((PARITY_DIR / "unet" / "denoising_unet_config.json").read_text())["unet_2d_config_json"]
    blocks, layers = len(config["block_out_channels"]), config["layers_per_block"]
    # one after every resnet(+attention) unit: `layers` per down block, 1 in the mid block, `layers + 1` per
    # up block (7 in fixture set A, 21 at full size: see test_models_format)
    assert len(names) == blocks * layers + 1 + blocks * (layers + 1)
    assert unet.max_frames == 32
    sample = torch.zeros(1, 4, 33, 2, 2)
    with pytest.raises(WindowTooLongError, match="33 frames"):
        unet(sample, 10, unet_io["clip_embeds"])


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = make_released_folder(tmp_path / "champ", guidance_types=("depth",))
    torch.save({"conv_in.weight": torch.zeros(1), "payload": Exploit()}, folder / "reference_unet.pth")
    with pytest.raises(CheckpointError, match="refused to load .*reference_unet.pth"):
        load_champ_models(folder)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_reference_unet(folder / "reference_unet.pth")
    assert not marker.exists()


def test_strict_loading_names_every_missing_and_unexpected_tensor(tmp_path):
    state = load_file(PARITY_DIR / "unet" / "reference_unet.safetensors")
    state.pop("mid_block.attentions.0.proj_in.weight")
    state.pop("down_blocks.0.resnets.0.norm2.bias")
    state["module.extra.weight"] = torch.zeros(3)
    state["up_blocks.1.attentions.0.proj_out.bias"] = torch.zeros(7)
    path = tmp_path / "reference_unet.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        load_reference_unet(path)
    message = str(info.value)
    for name in ("mid_block.attentions.0.proj_in.weight", "down_blocks.0.resnets.0.norm2.bias",
                 "module.extra.weight", "up_blocks.1.attentions.0.proj_out.bias"):
        assert name in message
    assert "missing tensors (2)" in message and "unexpected tensors (1)" in message and "wrong shapes (1)" in message


def test_wrong_component_and_corrupt_files_are_clear_errors(tmp_path):
    folder = make_released_folder(tmp_path / "champ", guidance_types=("depth",))
    shutil.copy(folder / "motion_module.pth", folder / "reference_unet.pth")
    with pytest.raises(CheckpointError, match=r"reference_unet\.pth does not look like Champ's reference UNet"):
        load_champ_models(folder)
    (folder / "reference_unet.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_champ_models(folder)


def test_missing_files_name_the_file_and_folder(tmp_path):
    folder = make_released_folder(tmp_path / "champ", guidance_types=("depth",))
    with pytest.raises(CheckpointError, match=r"guidance_encoder_normal\.pth .*champ"):
        load_champ_models(folder, guidance_types=["depth", "normal"])
    (folder / "motion_module.pth").unlink()
    with pytest.raises(CheckpointError, match="holds no motion modules"):
        load_champ_models(folder)
    (folder / "reference_unet.pth").unlink()
    with pytest.raises(CheckpointError, match=r"reference_unet\.pth"):
        load_champ_models(folder)


def test_any_subset_of_guidance_encoders(released):
    models = load_champ_models(released, guidance_types=["depth", "dwpose"])
    assert sorted(models.guidance_encoders) == ["depth", "dwpose"]
    layer = torch.rand(1, 3, 2, 16, 16)
    both = models.encode_guidance({"depth": layer, "dwpose": layer})
    depth = models.encode_guidance({"depth": layer})
    with torch.no_grad():
        manual = models.guidance_encoders["depth"](layer) + models.guidance_encoders["dwpose"](layer)
    assert torch.allclose(both, manual, atol=1e-6) and not torch.allclose(both, depth)
    assert torch.equal(models.encode_guidance({"depth": layer}, strengths={"depth": 0.0}), torch.zeros_like(depth))
    with pytest.raises(ModelInputError, match="no guidance encoder loaded for \\['normal'\\]"):
        models.encode_guidance({"depth": layer, "normal": layer})
    only = load_champ_models(released, guidance_types=["semantic_map"])
    assert list(only.guidance_encoders) == ["semantic_map"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loading_and_forward(released, unet_io, dtype):
    models = load_champ_models(released, dtype=dtype)
    assert all(p.dtype == dtype for p in models.denoising_unet.parameters())
    assert all(b.dtype == dtype for b in models.denoising_unet.buffers())
    assert all(p.dtype == dtype for e in models.guidance_encoders.values() for p in e.parameters())
    out = predict(models, unet_io)
    assert out.dtype == dtype and torch.isfinite(out).all()
    expected = unet_io["pred_cond_nocfg"]
    rel = (out.float() - expected).abs().max() / expected.abs().max()
    assert rel < (2e-2 if dtype == torch.float16 else 1e-1), rel


def test_animatediff_motion_module_file(released, released_models, tmp_path, unet_io):
    """An AnimateDiff mm_sd_v15_v2-format checkpoint (same names) replaces the motion modules strictly."""
    motion = torch.load(released / "motion_module.pth", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    animatediff = {k: v if k.endswith(".pe") else v + 0.01 * torch.randn(v.shape, generator=generator)
                   for k, v in motion.items()}
    path = tmp_path / "mm_sd_v15_v2.ckpt"
    torch.save(animatediff, path)
    models = load_champ_models(released, motion_module=path)
    params = dict(models.denoising_unet.named_parameters())
    for name, tensor in animatediff.items():
        if not name.endswith(".pe"):
            assert torch.equal(params[name], tensor)
    baseline = released_models
    assert not torch.equal(predict(models, unet_io), predict(baseline, unet_io))
    # the same file into an already-loaded UNet (the model that did not get it stays unchanged)
    load_motion_modules(models.denoising_unet, released / "motion_module.pth")
    assert torch.equal(predict(models, unet_io), predict(baseline, unet_io))
    # a v1-style module (24 positions) is refused with the shapes named
    short = {k: (v[:, :24] if k.endswith(".pe") else v) for k, v in motion.items()}
    torch.save(short, tmp_path / "mm_v1.ckpt")
    with pytest.raises(CheckpointError, match=r"pos_encoder\.pe \(file \[1, 24, \d+\], network \[1, 32, \d+\]\)"):
        load_motion_modules(models.denoising_unet, tmp_path / "mm_v1.ckpt")


def test_bad_inputs_are_clear_errors(released_models, unet_io):
    models = released_models
    unet, clip = models.denoising_unet, unet_io["clip_embeds"]
    sample = unet_io["noisy_latents"]
    with torch.no_grad():
        reference = unet.prepare_reference(models.reference_unet(unet_io["ref_latents"], 0, clip))
        with pytest.raises(ModelInputError, match="guidance_features must have shape"):
            unet(sample, 1, clip, unet_io["guidance_fea"][:, :, :3], reference)
        with pytest.raises(ModelInputError, match="reference_batch_mask must have shape \\(1,\\)"):
            unet(sample, 1, clip, None, reference, torch.tensor([True, False]))
        with pytest.raises(ModelInputError, match="sample must be"):
            unet(sample[:, :, 0], 1, clip)
        with pytest.raises(ModelInputError, match="timestep"):
            unet(sample, torch.tensor([1, 2, 3]), clip)
        two = unet.prepare_reference(models.reference_unet(unet_io["ref_latents"].repeat(2, 1, 1, 1), 0, clip.repeat(2, 1, 1)))
        with pytest.raises(ModelInputError, match="reference batch 2 does not match sample batch 3"):
            unet(sample.repeat(3, 1, 1, 1, 1), 1, clip, None, two)
        with pytest.raises(ModelInputError, match="guidance must be"):
            models.guidance_encoders["depth"](torch.rand(1, 4, 2, 16, 16))
        with pytest.raises(ModelInputError, match="unknown guidance type"):
            models.encode_guidance({"pose": torch.rand(1, 3, 2, 16, 16)})


def test_gradients_reach_the_reference_net_and_guidance_encoder(released, unet_io):
    """For training later: reference attention and guidance features are differentiable end to end."""
    models = load_champ_models(released, guidance_types=["depth"])
    for module in (models.reference_unet, models.denoising_unet, models.guidance_encoders["depth"]):
        module.requires_grad_(True)
    clip = unet_io["clip_embeds"]
    features = models.reference_unet(unet_io["ref_latents"], 0, clip)
    reference = models.denoising_unet.prepare_reference(features)
    sample = unet_io["noisy_latents"][:, :, :2]
    layer = torch.rand(1, 3, 2, *[8 * s for s in sample.shape[-2:]])
    guidance = models.encode_guidance({"depth": layer})
    out = models.denoising_unet(sample, unet_io["timestep"], clip, guidance, reference)
    out.square().mean().backward()
    assert models.reference_unet.conv_in.weight.grad.abs().sum() > 0
    assert models.guidance_encoders["depth"].conv_in.weight.grad.abs().sum() > 0
    motion = next(p for n, p in models.denoising_unet.named_parameters() if ".motion_modules." in n and "to_q" in n)
    assert motion.grad.abs().sum() > 0


def test_no_guidance_encoder_at_all(tmp_path):
    folder = make_released_folder(tmp_path / "champ", guidance_types=())
    with pytest.raises(CheckpointError, match="no guidance encoder found in .*guidance_encoder_depth.pth"):
        load_champ_models(folder)


def test_reference_unet_file_with_an_output_head_is_refused_unless_asked(tmp_path, unet_io):
    """A swapped denoising_unet.pth (it has conv_norm_out/conv_out) must not load as the ReferenceNet."""
    folder = make_released_folder(tmp_path / "champ", guidance_types=("depth",))
    denoising_2d = torch.load(folder / "denoising_unet.pth", weights_only=True)
    torch.save(denoising_2d, folder / "reference_unet.pth")
    with pytest.raises(CheckpointError, match="has an output head .*conv_out.weight.*not reference_unet.pth"):
        load_champ_models(folder)
    # an SD1.5-style file with a head, on purpose: the head is dropped, everything else loads strictly
    reference = load_file(PARITY_DIR / "unet" / "reference_unet.safetensors")
    with_head = {**reference, **{k: v for k, v in denoising_2d.items() if k.startswith(("conv_norm_out.", "conv_out."))}}
    torch.save(with_head, tmp_path / "sd_unet.pth")
    unet = load_reference_unet(tmp_path / "sd_unet.pth", drop_output_head=True)
    assert unet.config.out_channels is None
    assert torch.equal(unet.state_dict()["conv_in.weight"], reference["conv_in.weight"])
