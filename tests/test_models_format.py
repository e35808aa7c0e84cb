"""The full-size released checkpoint layout maps onto the networks built on the meta device.

champ_checkpoint_format.json lists tensor name -> shape for every released file, derived from the
reference's model classes at the released config. Every tensor must land on a network tensor of
the same shape, or be dropped by a documented rule; no network tensor may stay unfilled.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from champ_core.models.checkpoints import ShapeOnlyFile
from champ_core.models.config import ChampConfig, GuidanceEncoderConfig, MotionModuleConfig, UNetConfig
from champ_core.models.loading import plan_denoising_unet, plan_guidance_encoder, plan_reference_unet

FORMAT = json.loads((Path(__file__).parent / "fixtures" / "champ_checkpoint_format.json").read_text())


def values(shapes) -> int:
    total = 0
    for shape in shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def assert_fills(plan, module, file_shapes: dict) -> None:
    plan.check(module)  # raises on any missing / unexpected / wrongly shaped tensor
    network = module.state_dict()
    assert set(plan.sources) == set(network)
    for target, (tensor_file, name) in plan.sources.items():
        assert tuple(file_shapes[tensor_file.path.name][name]) == tuple(network[target].shape)
    assert all(t.is_meta for t in network.values())


def test_denoising_unet_and_motion_modules():
    base = ShapeOnlyFile("denoising_unet.pth", FORMAT["denoising_unet.pth"])
    motion = ShapeOnlyFile("motion_module.pth", FORMAT["motion_module.pth"])
    plan = plan_denoising_unet(base, motion)
    assert plan.config == ChampConfig().denoising_unet == UNetConfig(motion=MotionModuleConfig())
    module = plan.build_meta()
    assert_fills(plan, module, {"denoising_unet.pth": base.shapes, "motion_module.pth": motion.shapes})
    assert len(plan.sources) == 686 + 588 and plan.dropped == []
    modules = {n.split(".temporal_transformer.")[0] for n in module.state_dict() if ".motion_modules." in n}
    assert len(modules) == 21
    assert module.max_frames == 32
    assert values(base.shapes) == 859_520_964 and values(motion.shapes) == 454_417_600


def test_reference_unet_has_no_output_head():
    file = ShapeOnlyFile("reference_unet.pth", FORMAT["reference_unet.pth"])
    plan = plan_reference_unet(file)
    assert plan.config == ChampConfig().reference_unet and plan.config.out_channels is None
    module = plan.build_meta()
    assert_fills(plan, module, {"reference_unet.pth": file.shapes})
    assert len(plan.sources) == 682 and plan.dropped == []
    assert len(module.transformer_blocks()) == 16  # 6 down, 1 mid, 9 up: every block writes tokens


@pytest.mark.parametrize("with_guidance_attention", [True, False])
def test_guidance_encoder_runs_only_the_last_attention(with_guidance_attention):
    shapes = dict(FORMAT["guidance_encoder_<type>.pth"])
    if not with_guidance_attention:  # how the released ~10.65 MB files most likely are
        shapes = {k: v for k, v in shapes.items() if not k.startswith("guidance_attention.")}
    file = ShapeOnlyFile("guidance_encoder_depth.pth", shapes)
    plan = plan_guidance_encoder(file)
    assert plan.config == GuidanceEncoderConfig()
    module = plan.build_meta()
    assert_fills(plan, module, {"guidance_encoder_depth.pth": file.shapes})
    # documented exceptions only: the never-run attentions.0-4 and guidance_attention
    assert all(n.startswith(("attentions.0.", "attentions.1.", "attentions.2.", "attentions.3.", "attentions.4.",
                             "guidance_attention.")) for n in plan.dropped)
    assert set(plan.dropped) | {src for _, src in plan.sources.values()} == set(shapes)
    assert sum(n.startswith("guidance_attention.") for n in plan.dropped) == (19 if with_guidance_attention else 0)
    assert all(n.startswith("attentions.5.") for n in shapes if n not in plan.dropped and "attention" in n)
    if not with_guidance_attention:
        assert round(values(shapes) * 4 / 1e6, 2) == 10.60  # matches the released files' size
