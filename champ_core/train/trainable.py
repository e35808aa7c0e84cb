"""Which parameters train in each stage, and putting a `ChampModel` into training mode.

- Stage 1 (image stage): the denoising UNet without motion modules (all of it), the ReferenceNet
  except every parameter whose name contains "up_blocks.3" (its last up block: only its tokens
  are used, the last block's output never is), and every guidance encoder.
- Stage 2 (video stage): only parameters under modules named "motion_modules".
VAE and CLIP are never trained.

Parameter names are `ChampModel`'s (`reference_unet.*`, `denoising_unet.*`,
`guidance_encoder_<type>.*`), the reference's training-wrapper names. One naming difference: the
guidance encoder keeps only the attention block the reference runs, as `attention.*`; the
reference calls it `attentions.<last>.*` and also builds never-run blocks (`attentions.0..<last-1>`,
`guidance_attention`), whose gradients are always None there. `reference_parameter_name` maps a
name to the reference's.
"""

from __future__ import annotations

import re

from torch import nn

FROZEN_REFERENCE_RULE = "up_blocks.3"
MOTION_RULE = "motion_modules"


def is_trainable(name: str, stage: int) -> bool:
    """The reference's freezing rule for a `ChampModel` parameter name."""
    if stage == 1:
        if name.startswith("reference_unet."):
            return FROZEN_REFERENCE_RULE not in name
        if name.startswith("denoising_unet."):
            return MOTION_RULE not in name
        return name.startswith("guidance_encoder_")
    if stage == 2:
        return name.startswith("denoising_unet.") and MOTION_RULE in name
    raise ValueError(f"stage must be 1 or 2, got {stage}")


def trainable_names(model: nn.Module, stage: int) -> list[str]:
    return [name for name, _ in model.named_parameters() if is_trainable(name, stage)]


def prepare_for_training(
    model: nn.Module,
    stage: int,
    *,
    gradient_checkpointing: bool = False,
    reference_bank_fp32: bool = False,
) -> list[tuple[str, nn.Parameter]]:
    """Set requires_grad per stage, train mode, the autograd-exact cross-attention; return the trainable
    (name, parameter) pairs in module order.

    Stage 1 needs a denoiser without motion modules (the reference builds none in stage 1).
    reference_bank_fp32: hand the reference tokens over in the model dtype instead of the
    reference's float16 rounding (a diagnostic; the reference rounds).
    """
    if stage == 1 and model.denoising_unet.has_motion_modules:
        raise ValueError("stage 1 trains a denoiser without motion modules; build it with "
                         "build_champ_model_for_stage(1, ...)")
    if stage == 2 and not model.denoising_unet.has_motion_modules:
        raise ValueError("stage 2 trains the motion modules, but this denoiser has none")
    pairs = []
    for name, parameter in model.named_parameters():
        train = is_trainable(name, stage)
        parameter.requires_grad_(train)
        if train:
            pairs.append((name, parameter))
    model.train()
    # the reference's ReferenceNet comes from from_pretrained in eval mode; no layer here depends
    # on the mode (all dropouts have p = 0), it is kept for fidelity
    model.reference_unet.eval()
    model.set_cross_attention_shortcut(False)
    model.set_gradient_checkpointing(gradient_checkpointing)
    model.denoising_unet.round_reference_to_fp16 = not reference_bank_fp32
    return pairs


def prepare_for_inference(model: nn.Module) -> None:
    """Back to what the loaders return: eval mode, no grads, the fast cross-attention path."""
    model.requires_grad_(False)
    model.eval()
    model.set_cross_attention_shortcut(True)
    model.set_gradient_checkpointing(False)


_ENCODER_ATTENTION = re.compile(r"^(guidance_encoder_[a-z_]+)\.attention\.")


def reference_parameter_name(name: str, model: nn.Module) -> str:
    """`ChampModel` name -> the reference's name (guidance encoder `attention.` -> `attentions.<last>.`)."""
    match = _ENCODER_ATTENTION.match(name)
    if match is None:
        return name
    encoder = getattr(model, match.group(1))
    last = encoder.num_reference_attention_blocks - 1
    return f"{match.group(1)}.attentions.{last}." + name[match.end():]


def is_never_built(reference_name: str) -> bool:
    """Reference guidance-encoder parameters this model does not build (never run by the reference)."""
    match = re.match(r"^guidance_encoder_[a-z_]+\.(.*)$", reference_name)
    if match is None:
        return False
    rest = match.group(1)
    return rest.startswith("guidance_attention.") or bool(re.match(r"attentions\.\d+\.", rest))
