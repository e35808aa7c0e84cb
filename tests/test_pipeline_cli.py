"""`python -m champ_core animate` end to end on the tiny fixture networks (released folder layout).

Sizes, frame counts and windows come from the fixture set (CHAMP_PARITY_DIR; see parity_fixture).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from parity_fixture import FIXTURE, FRAMES, HEIGHT, PIPE, WIDTH, guidance_strips, max_frames, run_windows
from PIL import Image

from champ_core.cli import main
from champ_core.guidance import write_layer_frames
from champ_core.video import read_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A weights folder in the released layout and a motion folder without dwpose."""
    root = tmp_path_factory.mktemp("animate")
    champ = root / "weights" / "champ"
    champ.mkdir(parents=True)
    for name in ("denoising_unet", "motion_module", "reference_unet"):
        shutil.copy(FIXTURE / "unet" / f"{name}.safetensors", champ)
    for path in PIPE.glob("guidance_encoder_*.safetensors"):
        shutil.copy(path, champ)
    shutil.copytree(PIPE / "image_encoder", root / "weights" / "image_encoder")
    shutil.copytree(PIPE / "vae", root / "weights" / "sd-vae-ft-mse")
    names = [f"{i:04d}" for i in range(FRAMES)]
    strips = guidance_strips()
    for kind in ("depth", "normal", "semantic_map"):
        write_layer_frames(root / "motion" / kind, strips[kind], names)
    write_layer_frames(root / "motion" / "mask", np.full((FRAMES, HEIGHT, WIDTH), 255, np.uint8), names)
    reference = np.array(Image.open(PIPE / "reference.png").convert("RGB"))
    rgba = np.concatenate([reference, np.full((*reference.shape[:2], 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(root / "ref_rgba.png")
    yield root


def test_animate_writes_video_and_grid(setup, tmp_path, capsys):
    out, grid = tmp_path / "out.mp4", tmp_path / "grid.mp4"
    code = main(["animate", "--reference", str(setup / "ref_rgba.png"), "--guidance", str(setup / "motion"),
                 "--weights", str(setup / "weights"), "--out", str(out), "--grid", str(grid),
                 "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "1", "--frames", f"3:{FRAMES - 1}",
                 "--fps", "10", "--window-schedule", "open", "--window-fusion", "pyramid"])
    assert code == 0
    video, fps = read_video(out)
    assert video.shape == (FRAMES - 4, HEIGHT, WIDTH, 3) and fps == pytest.approx(10)
    grid_video, _ = read_video(grid)
    assert grid_video.shape == (FRAMES - 4, HEIGHT, WIDTH * 5, 3)  # reference | result | depth | normal | semantic_map
    err = capsys.readouterr().err
    assert "denoise" in err and "decode" in err  # the progress bars


def test_show_windows_prints_the_plan(setup, capsys):
    code = main(["animate", "--reference", "unused.png", "--guidance", str(setup / "motion"),
                 "--weights", str(setup / "weights"), "--out", "unused.mp4", "--show-windows"])
    assert code == 0
    last = run_windows(FRAMES)[-1]
    assert f"[{last[0]}..{last[-1]}]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--weights": "nowhere"}, "does not exist"),
        ({"--guidance": "nowhere"}, "does not exist"),
        ({"--frames": f"{FRAMES + 10}:{FRAMES + 20}"}, "selects no frames"),
        ({"--window-length": str(max_frames() + 1)}, f"{max_frames()} frame positions"),
        ({"--width": str(WIDTH - 2)}, "multiple of"),
        ({"--out": "video.gif"}, ".mp4"),
    ],
)
def test_user_errors_exit_2_with_a_message(setup, tmp_path, capsys, change, message):
    args = {"--reference": str(PIPE / "reference.png"), "--guidance": str(setup / "motion"),
            "--weights": str(setup / "weights"), "--out": str(tmp_path / "o.mp4"), "--width": str(WIDTH),
            "--height": str(HEIGHT), "--steps": "1"}
    for key, value in change.items():
        args[key] = value if key in ("--frames", "--window-length", "--width") else str(tmp_path / value)
    argv = ["animate"] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_weights_layout_errors_name_the_folder(setup, tmp_path):
    from champ_core.pipeline.loading import WeightsError, load_pipeline, resolve_weights

    champ, clip, vae = resolve_weights(setup / "weights")
    assert (champ.name, clip.name, vae.name) == ("champ", "image_encoder", "sd-vae-ft-mse")
    partial = tmp_path / "weights"
    shutil.copytree(setup / "weights" / "champ", partial / "champ")
    with pytest.raises(WeightsError, match="image encoder folder"):
        resolve_weights(partial)
    shutil.copytree(setup / "weights" / "image_encoder", partial / "image_encoder")
    with pytest.raises(WeightsError, match="sd-vae-ft-mse"):
        resolve_weights(partial)
    with pytest.raises(WeightsError, match="denoising_unet"):
        resolve_weights(partial / "image_encoder")
    # only the encoders the guidance asks for are loaded; a type without an encoder file is skipped
    shutil.copytree(setup / "weights" / "sd-vae-ft-mse", partial / "vae")
    (partial / "champ" / "guidance_encoder_dwpose.safetensors").unlink()
    pipe = load_pipeline(partial, guidance_types=("normal", "dwpose"))
    assert list(pipe.models.guidance_encoders) == ["normal"]
    with pytest.raises(WeightsError, match="no guidance encoder"):
        load_pipeline(partial, guidance_types=("dwpose",))
