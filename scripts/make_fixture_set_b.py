"""Generate a second parity fixture set in the layout of `tests/fixtures/champ_parity` (set A).

    .venv/bin/python scripts/make_fixture_set_b.py OUT_DIR [--seed 7]
    CHAMP_PARITY_DIR=OUT_DIR .venv/bin/python -m pytest tests/test_pipeline_parity.py ...

Set A holds golden numbers from the reference implementation. This set holds numbers from THIS
project's own code, at other sizes: another generation size (landscape instead of portrait),
another frame count, another reference size, other seeds and other tiny network widths. Its only
purpose is to show that the fixture-driven tests read every size and path from the fixture they
are given (they must pass unchanged on it); it proves nothing about parity with the reference.

Written from disk round trips only: the networks are saved in the released file layout, then
loaded back through `load_pipeline` (as a user's weights would be) to compute every stored tensor.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SET_A = REPO / "tests" / "fixtures" / "champ_parity"

# the sizes that differ from set A (32 x 48, 30 frames, reference 32 x 48)
PIPELINE = {"width": 48, "height": 32, "video_length": 26, "num_inference_steps": 3, "guidance_scale": 3.5,
            "generator_seed": 11, "ref_size": [56, 40]}
UNET_WIDTHS = (32, 64)
CROSS_ATTENTION_DIM = 24
GUIDANCE_WIDTHS = (16, 32, 32, 32)
WINDOW_LENGTHS = (8, 24, 25, 26, 47, 50, 100, 250)
MAX_FRAMES = 32


def _liven(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give zero-initialised layers their default init and perturb constant parameters, so that every
    tensor of the tiny networks carries signal (as in set A)."""
    for layer in module.modules():
        weight = getattr(layer, "weight", None)
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)) and weight is not None:
            if not bool(weight.detach().abs().sum()):
                layer.reset_parameters()
    with torch.no_grad():
        for _, param in module.named_parameters():
            if param.numel() > 0 and bool((param == param.reshape(-1)[0]).all()):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def _build_networks(seed: int):
    from champ_core.models.config import GuidanceEncoderConfig, MotionModuleConfig, UNetConfig
    from champ_core.models.guidance_encoder import GuidanceEncoder
    from champ_core.models.unet import DenoisingUNet3D, ReferenceUNet

    common = dict(block_out_channels=UNET_WIDTHS, down_cross_attention=(True, False), up_cross_attention=(False, True),
                  layers_per_block=1, cross_attention_dim=CROSS_ATTENTION_DIM)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    denoising = DenoisingUNet3D(UNetConfig(**common, motion=MotionModuleConfig(max_frames=MAX_FRAMES)))
    _liven(denoising, generator)
    torch.manual_seed(seed + 1)
    reference = ReferenceUNet(UNetConfig(**common, out_channels=None))
    _liven(reference, generator)
    encoders = {}
    for k, kind in enumerate(("depth", "normal", "semantic_map", "dwpose")):
        torch.manual_seed(seed + 2 + k)
        encoder = GuidanceEncoder(GuidanceEncoderConfig(embedding_channels=UNET_WIDTHS[0],
                                                        block_out_channels=GUIDANCE_WIDTHS))
        _liven(encoder, generator)
        encoders[kind] = encoder
    return denoising, reference, encoders


def _save(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))


def _write_networks(out: Path, seed: int) -> None:
    denoising, reference, encoders = _build_networks(seed)
    unet = out / "unet"
    unet.mkdir(parents=True)
    state = denoising.state_dict()
    motion = {k: v for k, v in state.items() if ".motion_modules." in k}
    _save({k: v for k, v in state.items() if k not in motion}, unet / "denoising_unet.safetensors")
    _save(motion, unet / "motion_module.safetensors")
    _save(reference.state_dict(), unet / "reference_unet.safetensors")
    (unet / "denoising_unet_config.json").write_text(json.dumps({
        "unet_additional_kwargs": {"motion_module_kwargs": {"temporal_position_encoding_max_len": MAX_FRAMES}},
        "generated_by": "scripts/make_fixture_set_b.py (champ_core's own UNetConfig)",
        "config": denoising.config.to_dict() if hasattr(denoising, "config") else None,
    }, indent=1, default=str))
    pipe = out / "pipeline"
    pipe.mkdir(parents=True)
    for kind, encoder in encoders.items():
        _save(encoder.state_dict(), pipe / f"guidance_encoder_{kind}.safetensors")


def _write_codecs(out: Path, seed: int) -> None:
    from diffusers import AutoencoderKL
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    pipe = out / "pipeline"
    torch.manual_seed(seed + 10)
    vae = AutoencoderKL(block_out_channels=(8, 16, 16, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=8,
                        latent_channels=4, sample_size=64)
    _liven(vae, torch.Generator().manual_seed(seed + 10))
    vae.save_pretrained(pipe / "vae", safe_serialization=True)
    torch.manual_seed(seed + 11)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, patch_size=32,
        image_size=224, projection_dim=CROSS_ATTENTION_DIM))
    _liven(clip, torch.Generator().manual_seed(seed + 11))
    clip.save_pretrained(pipe / "image_encoder", safe_serialization=True)
    CLIPImageProcessor().save_pretrained(pipe / "image_processor")
    shutil.copytree(SET_A / "pipeline" / "scheduler", pipe / "scheduler")  # the same scheduler settings


def _write_images(out: Path, seed: int) -> None:
    from PIL import Image

    from champ_core.guidance import GUIDANCE_TYPES

    rng = np.random.default_rng(seed)
    width, height, frames = PIPELINE["width"], PIPELINE["height"], PIPELINE["video_length"]
    yy, xx = np.mgrid[0:height, 0:width]
    for k, kind in enumerate(GUIDANCE_TYPES):
        strip = np.zeros((frames, height, width, 3), np.uint8)
        for t in range(frames):  # a blob moving across the frame, plus noise: smooth but varying
            cx, cy = width * (0.2 + 0.6 * t / frames), height * (0.5 + 0.2 * np.sin(t / 3 + k))
            blob = np.exp(-(((xx - cx) / (0.2 * width)) ** 2 + ((yy - cy) / (0.3 * height)) ** 2))
            colour = rng.uniform(60, 255, 3)
            strip[t] = np.clip(blob[..., None] * colour + rng.normal(0, 8, (height, width, 3)), 0, 255)
        Image.fromarray(strip.reshape(frames * height, width, 3)).save(out / "pipeline" / f"guidance_{kind}.png")
    ref_w, ref_h = PIPELINE["ref_size"]
    yy, xx = np.mgrid[0:ref_h, 0:ref_w]
    reference = np.stack([xx * 255 / ref_w, yy * 255 / ref_h, 128 + 60 * np.sin(xx / 4.0)], -1)
    reference = np.clip(reference + rng.normal(0, 10, reference.shape), 0, 255).astype(np.uint8)
    Image.fromarray(reference).save(out / "pipeline" / "reference.png")


def _write_runs(out: Path) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    from champ_core.guidance import GUIDANCE_TYPES
    from champ_core.models import load_champ_models
    from champ_core.pipeline.codecs import load_diffusers_vae, load_transformers_clip
    from champ_core.pipeline.inputs import ArrayGuidance
    from champ_core.pipeline.sampling import ChampPipeline, SamplingOptions
    from champ_core.pipeline.windows import plan_windows

    pipe_dir = out / "pipeline"
    width, height, frames = PIPELINE["width"], PIPELINE["height"], PIPELINE["video_length"]
    models = load_champ_models(out / "unet", guidance_folder=pipe_dir)
    pipe = ChampPipeline(models, load_diffusers_vae(pipe_dir / "vae"), load_transformers_clip(pipe_dir / "image_encoder"))
    strips = {t: np.array(Image.open(pipe_dir / f"guidance_{t}.png").convert("RGB")).reshape(frames, height, width, 3)
              for t in GUIDANCE_TYPES}
    guidance = ArrayGuidance(strips)
    ref = pipe.encode_reference(pipe_dir / "reference.png", width, height)
    noise = ChampPipeline.initial_noise(frames, width, height, seed=PIPELINE["generator_seed"])
    features = pipe.encode_guidance_window(guidance, range(frames), width, height, "squash", GUIDANCE_TYPES, None)
    save_file({"clip_image_embeds": ref.clip_embeds[:, 0].contiguous(), "ref_image_latents": ref.latents.contiguous(),
               "guidance_fea": features.float().contiguous(), "init_noise": noise.contiguous()},
              str(pipe_dir / "intermediates.safetensors"))
    for name, scale, legacy in (("run_cfg3.5", PIPELINE["guidance_scale"], False), ("run_cfg1", 1.0, True)):
        tensors: dict[str, torch.Tensor] = {}
        window_outputs: list[torch.Tensor] = []

        def record(module, args, output, window_outputs=window_outputs):
            window_outputs.append((output[0] if isinstance(output, tuple) else output).detach().float().cpu())

        hook = pipe.models.denoising_unet.register_forward_hook(record)
        steps = []

        def on_step(step, t, model_output, latents, tensors=tensors, steps=steps):
            steps.append(int(t))
            tensors[f"model_output.step{step}"] = model_output.float().cpu().contiguous()
            tensors[f"latents.step{step}"] = latents.float().cpu().contiguous()

        options = SamplingOptions(steps=PIPELINE["num_inference_steps"], guidance_scale=scale,
                                  legacy_sum_without_cfg=legacy)
        try:
            latents = pipe.denoise(ref, guidance, width, height, options, latents=noise, on_step=on_step)
        finally:
            hook.remove()
        num_windows = plan_windows(frames).num_windows()
        for i in range(len(steps)):
            for j in range(num_windows):
                tensors[f"unet_out.step{i}.window{j}"] = window_outputs[i * num_windows + j].contiguous()
        video = torch.cat([chunk for _, chunk in pipe.decode(latents, chunk_size=7)])  # (F, H, W, 3)
        tensors["video"] = video.permute(3, 0, 1, 2)[None].contiguous()
        tensors["timesteps"] = torch.tensor(steps)
        save_file(tensors, str(pipe_dir / f"{name}.safetensors"))


def _write_config(out: Path, seed: int) -> None:
    from champ_core.guidance import GUIDANCE_TYPES
    from champ_core.pipeline.windows import plan_windows

    set_a = json.loads((SET_A / "config.json").read_text())
    config = {
        "set": "B-generated", "set_name": "generated by scripts/make_fixture_set_b.py (project code, not the reference)",
        "set_definition": {"name": "generated", "seed": seed, "pipeline": PIPELINE,
                           "unet": {"block_out_channels": list(UNET_WIDTHS), "cross_attention_dim": CROSS_ATTENTION_DIM},
                           "guidance_encoder": {"block_out_channels": list(GUIDANCE_WIDTHS)}},
        "guidance_types_order": list(GUIDANCE_TYPES),
        "scheduler_kwargs": set_a["scheduler_kwargs"],
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    windows = {}
    for n in WINDOW_LENGTHS:
        plan = plan_windows(n)
        windows[str(n)] = {"num_windows": plan.num_windows(), "windows": plan.frame_lists(0),
                           "frame_coverage_count": plan.coverage().tolist()}
    (out / "windows.json").write_text(json.dumps({"windows": windows}))
    (out / "README.md").write_text(
        "Generated by scripts/make_fixture_set_b.py from the project's own code, at other sizes than set A.\n"
        "For checking that fixture-driven tests read every size and path from the fixture; not parity data.\n")


# what the fixture-driven tests read (tests/parity_fixture.py and the four test_pipeline_* files)
READ_PATHS = ("config.json", "windows.json", "unet/denoising_unet.safetensors", "unet/motion_module.safetensors",
              "unet/reference_unet.safetensors", "unet/denoising_unet_config.json", "pipeline/reference.png",
              "pipeline/vae/config.json", "pipeline/image_encoder/config.json", "pipeline/intermediates.safetensors",
              "pipeline/run_cfg3.5.safetensors", "pipeline/run_cfg1.safetensors",
              *(f"pipeline/guidance_{t}.png" for t in ("depth", "normal", "semantic_map", "dwpose")),
              *(f"pipeline/guidance_encoder_{t}.safetensors" for t in ("depth", "normal", "semantic_map", "dwpose")))


def check_layout(out: Path) -> None:
    """The generated set has every file the tests read, with set A's tensor names, at other sizes."""
    from safetensors import safe_open

    missing = [p for p in READ_PATHS if not (out / p).is_file() or not (SET_A / p).is_file()]
    if missing:
        raise SystemExit(f"layout differs from set A: {missing}")
    for name in ("intermediates", "run_cfg3.5", "run_cfg1"):
        keys = {}
        for root in (SET_A, out):
            with safe_open(str(root / "pipeline" / f"{name}.safetensors"), "pt") as handle:
                keys[root] = set(handle.keys())
        lacking = keys[SET_A] - keys[out] - {"ref_image_tensor"}  # set A's extra input copy; no test reads it
        if lacking:
            raise SystemExit(f"{name}.safetensors lacks set A's tensors {sorted(lacking)}")
    a = json.loads((SET_A / "config.json").read_text())["set_definition"]["pipeline"]
    same = [k for k in ("width", "height", "video_length", "ref_size") if a[k] == PIPELINE[k]]
    if same:
        raise SystemExit(f"the generated set must differ from set A in every size; same: {same}")


def make_set(out: Path, seed: int = 7) -> Path:
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _write_networks(staging, seed)
        _write_codecs(staging, seed)
        _write_images(staging, seed)
        _write_config(staging, seed)
        _write_runs(staging)
        check_layout(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    staging.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (replaced)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"wrote {make_set(args.out, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
