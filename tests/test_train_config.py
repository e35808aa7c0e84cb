"""Training config (the reference's yaml keys, --set typing, unknown keys), accelerate configs, safe
checkpoint state (booby-trapped files refused) and the checks that run before the first step."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_run_helpers import REPO, TINY_STAGE1, TINY_STAGE2, make_videos

from champ_core.cli import main
from champ_core.train import state as st
from champ_core.train.config import (
    STAGES,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)

FIXTURE = REPO / "tests" / "fixtures" / "champ_training" / "config.json"
ACCELERATE_CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def _write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("stage", STAGES)
def test_reference_yamls_parse_and_shipped_configs_hold_their_values(stage):
    reference = json.loads(FIXTURE.read_text())[stage]["yaml"]  # the reference's parsed yaml
    parsed = config_from_dict(stage, reference, "reference yaml")
    shipped = load_config(stage, REPO / "configs" / "train" / f"{stage}.yaml")
    assert config_to_dict(shipped) == config_to_dict(parsed)
    # every reference key comes back with its value (the project keys are additions)
    out = config_to_dict(parsed)

    def check(ref: dict, got: dict, where: str) -> None:
        for key, value in ref.items():
            assert key in got, f"{where}{key}"
            if isinstance(value, dict):
                check(value, got[key], f"{where}{key}.")
            else:
                assert got[key] == value, f"{where}{key}"

    check(reference, out, "")


def test_unknown_keys_are_errors_naming_key_and_file(tmp_path):
    path = _write_yaml(tmp_path / "bad.yaml", {"data": {"train_bs": 2, "video_foldr": "x"}})
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'data\.video_foldr'"):
        load_config("stage1", path)
    path = _write_yaml(tmp_path / "bad2.yaml", {"sample_frames": 3})
    with pytest.raises(ConfigError, match=r"bad2\.yaml.*unknown key 'sample_frames'"):
        load_config("stage1", path)
    # stage-2 keys are unknown to stage 1 and the other way round
    with pytest.raises(ConfigError, match=r"unknown key 'mm_path'"):
        config_from_dict("stage1", {"mm_path": "x"})
    with pytest.raises(ConfigError, match=r"unknown key 'data\.sample_margin'"):
        config_from_dict("stage2", {"data": {"sample_margin": 3}})


def test_set_overrides_are_typed(tmp_path):
    sets = ["solver.learning_rate=1e-4", "data.train_bs=3", "solver.gradient_checkpointing=true",
            "data.guids=[depth, dwpose]", "output_dir=/tmp/x", "uncond_ratio=0", "stage1_ckpt_step=2000",
            "validation.guidance_indexes=[1,2]"]
    config = config_from_dict("stage2", apply_overrides({}, sets))
    assert config.solver.learning_rate == 1e-4 and isinstance(config.solver.learning_rate, float)
    assert config.data.train_bs == 3 and isinstance(config.data.train_bs, int)
    assert config.solver.gradient_checkpointing is True
    assert config.data.guids == ["depth", "dwpose"]
    assert config.output_dir == "/tmp/x"
    assert config.uncond_ratio == 0.0 and isinstance(config.uncond_ratio, float)
    assert config.stage1_ckpt_step == "2000"
    assert config.validation.guidance_indexes == [1, 2]
    with pytest.raises(ConfigError, match=r"'data\.train_bs' must be int, got 'many'"):
        config_from_dict("stage1", apply_overrides({}, ["data.train_bs=many"]))
    with pytest.raises(ConfigError, match=r"'solver\.gradient_checkpointing' must be bool"):
        config_from_dict("stage1", apply_overrides({}, ["solver.gradient_checkpointing=3"]))
    with pytest.raises(ConfigError, match=r"unknown key 'solver\.lr'"):
        config_from_dict("stage1", apply_overrides({}, ["solver.lr=1"]))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["solver.learning_rate"])
    with pytest.raises(ConfigError, match=r"data\.guids has unknown type"):
        config_from_dict("stage1", apply_overrides({}, ["data.guids=[depth, pose]"]))


def test_tiny_configs_parse_with_builtin_models():
    for stage, path in (("stage1", TINY_STAGE1), ("stage2", TINY_STAGE2)):
        config = load_config(stage, path)
        assert config.base_model_path == config.vae_model_path == config.image_encoder_path == "builtin:tiny"
        assert config.solver.mixed_precision == "no" and config.weight_dtype == "fp32"
        assert config.solver.use_8bit_adam is False


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    code, err = _cli(capsys, "train", "stage1", "--config", str(tmp_path / "none.yaml"))
    assert code == 2 and err.count("\n") == 1 and "none.yaml does not exist" in err
    code, err = _cli(capsys, "train", "stage1", "--config", str(TINY_STAGE1), "--set", "data.bogus=1")
    assert code == 2 and err.count("\n") == 1 and "unknown key 'data.bogus'" in err and "tiny_stage1.yaml" in err
    code, err = _cli(capsys, "train", "stage1", "--config", str(TINY_STAGE1))
    assert code == 2 and "data.video_folder is empty" in err
    if not torch.cuda.is_available():
        code, err = _cli(capsys, "train", "stage1", "--config", str(REPO / "configs/train/stage1.yaml"),
                         "--set", f"data.video_folder={tmp_path}")
        assert code == 2 and err.count("\n") == 1 and "fp16 needs a CUDA GPU" in err


def test_missing_bitsandbytes_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    code, err = _cli(capsys, "train", "stage2", "--config", str(REPO / "configs/train/stage2.yaml"),
                     "--set", "solver.mixed_precision=no", "--set", "weight_dtype=fp32",
                     "--set", f"data.video_folder={tmp_path}")
    assert code == 2 and err.count("\n") == 1 and "bitsandbytes" in err and "use_8bit_adam=false" in err


@pytest.mark.parametrize("damage", ["frame_count", "mask_missing", "empty_images"])
def test_malformed_dataset_stops_before_any_model_is_loaded(tmp_path, capsys, damage):
    data = make_videos(tmp_path / "data", videos=2, frames=4)
    video = data / "video01"
    if damage == "frame_count":
        sorted((video / "normal").iterdir())[-1].unlink()
    elif damage == "mask_missing":
        for f in (video / "mask").iterdir():
            f.unlink()
        (video / "mask").rmdir()
    else:
        for f in (video / "images").iterdir():
            f.unlink()
    out = tmp_path / "run"
    code, err = _cli(capsys, "train", "stage1", "--config", str(TINY_STAGE1), "--set", f"data.video_folder={data}",
                     "--set", f"output_dir={out}", "--no-progress")
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "video01" in lines[0], err
    assert "Traceback" not in err
    assert not (out / "tiny_models").exists() and not (out / "log.jsonl").exists()  # nothing built or trained


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config.num_processes >= 1 and config.num_machines >= 1
    if config.distributed_type == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == 2
        plugin = DeepSpeedPlugin(**config.deepspeed_config)
        assert plugin.deepspeed_config["zero_optimization"]["stage"] == 2
        assert plugin.deepspeed_config["gradient_clipping"] == 1.0
        assert config.mixed_precision == "fp16"


def test_state_round_trip_is_exact(tmp_path):
    from diffusers.optimization import get_scheduler

    model = torch.nn.Linear(5, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=2, num_training_steps=10)
    for _ in range(3):
        model(torch.randn(4, 5)).square().mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    st.write_optimizer(tmp_path, optimizer.state_dict(), scheduler.state_dict())
    st.write_rng(tmp_path, 0)
    st.write_model(tmp_path, model.state_dict())
    st.save_json(tmp_path / st.TRAINER_JSON, {"version": st.FORMAT_VERSION, "step": 3})
    expected = (torch.rand(4), random.random(), np.random.rand())
    loaded = st.read_checkpoint(tmp_path, 0)
    st.set_rng_state(*loaded["rng"])
    again = (torch.rand(4), random.random(), np.random.rand())
    assert torch.equal(again[0], expected[0]) and again[1] == expected[1] and again[2] == expected[2]
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh_scheduler = get_scheduler("cosine", optimizer=fresh, num_warmup_steps=2, num_training_steps=10)
    fresh.load_state_dict(loaded["optimizer"])
    fresh_scheduler.load_state_dict(loaded["scheduler"])
    a, b = optimizer.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, entries in a["state"].items():
        for name, value in entries.items():
            assert torch.equal(value, b["state"][index][name]), (index, name)
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_booby_trapped_state_is_refused_by_name(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    st.write_optimizer(folder, optimizer.state_dict(), None)
    st.write_rng(folder, 0)
    st.write_model(folder, model.state_dict())
    st.save_json(folder / st.TRAINER_JSON, {"version": st.FORMAT_VERSION, "step": 4})
    st.read_checkpoint(folder, 0)  # the clean folder loads

    class Boom:
        def __reduce__(self):
            return (print, ("this must never run",))

    # a pickle in the place of a state file
    target = folder / "optimizer.safetensors"
    target.unlink()
    torch.save({"x": Boom()}, target)
    with pytest.raises(st.StateError, match=r"refusing to load .*optimizer\.safetensors: it is a zip archive"):
        st.read_checkpoint(folder, 0)
    import pickle

    target.write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises(st.StateError, match=r"optimizer\.safetensors: it is a Python pickle"):
        st.read_checkpoint(folder, 0)
    st.write_optimizer(folder, optimizer.state_dict(), None)
    # a pickle-format file next to the state (e.g. an accelerate random_states_0.pkl)
    (folder / "random_states_0.pkl").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(st.StateError, match=r"random_states_0\.pkl, a pickle-format file"):
        st.read_checkpoint(folder, 0)
    (folder / "random_states_0.pkl").unlink()
    (folder / st.TRAINER_JSON).write_bytes(pickle.dumps({"step": 4}))
    with pytest.raises(st.StateError, match=r"trainer_state\.json: it is a Python pickle"):
        st.read_checkpoint(folder, 0)


def test_checkpoint_lookup_and_rotation(tmp_path):
    for step in (2, 4, 6):
        folder = st.checkpoint_dir(tmp_path, step)
        folder.mkdir()
        st.save_json(folder / st.TRAINER_JSON, {"version": st.FORMAT_VERSION, "step": step})
    (tmp_path / "checkpoint-8").mkdir()  # incomplete (no trainer_state.json): never chosen
    assert st.find_checkpoint(tmp_path, "latest").name == "checkpoint-6"
    assert st.find_checkpoint(tmp_path, "4").name == "checkpoint-4"
    with pytest.raises(st.StateError, match=r"no checkpoint-5 .*available: 2, 4, 6"):
        st.find_checkpoint(tmp_path, "5")
    removed = st.rotate_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ["checkpoint-2"]
    assert [s for s, _ in st.list_checkpoints(tmp_path)] == [4, 6]


def test_tiny_unet_attention_levels_reach_the_champ_networks(tmp_path):
    from champ_core.train.config import TinyModelConfig
    from champ_core.train.starting import sd15_champ_config
    from champ_core.train.tiny import build_tiny_sd_unet, tiny_unet_config

    default = tiny_unet_config(TinyModelConfig(unet_block_out_channels=[32, 64, 64]))
    assert default["down_block_types"] == ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert default["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    tiny = TinyModelConfig(unet_block_out_channels=[32, 64, 64], unet_attention_levels=[False, True, True],
                           cross_attention_dim=16)
    folder = build_tiny_sd_unet(tmp_path / "sd", tiny)
    champ = sd15_champ_config(folder / "unet")
    assert champ.denoising_unet.down_cross_attention == (False, True, True)
    assert champ.denoising_unet.up_cross_attention == (True, True, False)
    with pytest.raises(ConfigError, match="2 entries for 3 UNet levels"):
        tiny_unet_config(TinyModelConfig(unet_block_out_channels=[32, 64, 64], unet_attention_levels=[True, False]))
