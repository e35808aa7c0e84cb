"""Bad inputs, as a table: every kind of hostile input of issue 12, for every CLI command.

Each case runs the CLI's `main(argv)` in this process (fast) and asserts exit status 2, exactly one
`error:` line with the specific message, no traceback, and no partial file or folder left behind.
Cases that need the operating system to refuse a write (a read-only folder, a full disk, a file
too large, a folder root could write into) run the same `main(argv)` in a child process:
- read-only: a read-only bind mount in a private user+mount namespace (`unshare -rm`); where that
  is not available, an unprivileged user (`setpriv` to nobody when running as root, else the
  current user) on a `chmod 555` folder;
- disk full: a small tmpfs in a private namespace; file too large: `RLIMIT_FSIZE` (Python ignores
  SIGXFSZ, so the write fails with EFBIG).
The library-level cases (IMAGE tensors, latents, keypoint canvases) call the one library function
that nodes, CLI and training share.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from champ_core.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(os.environ.get("CHAMP_PARITY_DIR", Path(__file__).parent / "fixtures" / "champ_parity"))
PIPE = FIXTURE / "pipeline"
PARTIAL_MARKS = (".partial", ".tmp.npz", ".old")


# -- helpers ---------------------------------------------------------------------------------

def leftovers(*folders: Path) -> list[str]:
    """Temporary files/folders (ours: '.partial', '.old'; today's main: '.tmp.npz') under the folders."""
    found = []
    for folder in folders:
        if folder.exists():
            found += [str(p) for p in folder.rglob("*") if any(mark in p.name for mark in PARTIAL_MARKS)]
    return found


def error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def expect_error(capsys, argv: list[str], *needles: str) -> str:
    """main(argv) exits 2 with one error line holding every needle (case-sensitive)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    line = error_line(err)
    for needle in needles:
        assert needle in line, line
    return line


def _tool(name: str) -> bool:
    return shutil.which(name) is not None


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


NAMESPACES = _tool("unshare") and _works(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || "
                                          "mount -t tmpfs -o size=64k tmpfs /tmp"])

DRIVER = """
import io, json, os, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from champ_core.cli import main
results = []
for argv, watch in {runs!r}:
    sys.stderr = io.StringIO()
    code = main(argv)
    err, sys.stderr = sys.stderr.getvalue(), sys.__stderr__
    listing = sorted(str(p) for d in watch if os.path.isdir(d) for p in Path(d).rglob('*'))
    results.append({{'code': code, 'stderr': err, 'listing': listing}})
print('@@' + json.dumps(results))
"""


def run_children(runs: list[tuple[list, list[Path]]], *, fsize: int | None = None, read_only: Path | None = None,
                 tmpfs: tuple[Path, int] | None = None, user: str | None = None) -> list[tuple[int, str, list[str]]]:
    """Several main(argv) runs, one after the other, in ONE child process under an OS limit (one start-up
    for all); returns (exit code, stderr, files under its `watch` folders) per run."""
    code = DRIVER.format(repo=str(REPO), runs=[([str(a) for a in argv], [str(w) for w in watch]) for argv, watch in runs])
    cmd = [sys.executable, "-c", code]
    mounts = []
    if read_only is not None:
        mounts.append(f"mount --bind {read_only} {read_only} && mount -o remount,ro,bind {read_only} {read_only}")
    if tmpfs is not None:
        mounts.append(f"mount -t tmpfs -o size={tmpfs[1]} tmpfs {tmpfs[0]}")
    if mounts:
        cmd = ["unshare", "-rm", "sh", "-c", " && ".join(mounts) + ' && exec "$@"', "sh", *cmd]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user if user != 'nobody' else 'nogroup'}",
               "--clear-groups", *cmd]

    def limit():
        if fsize is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=limit, env=env)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    assert marker, f"child failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return [(r["code"], r["stderr"], r["listing"]) for r in json.loads(marker[-1][2:])]


def run_child(argv: list, watch: list[Path], **limits) -> tuple[int, str, list[str]]:
    return run_children([(argv, watch)], **limits)[0]


def unwritable(folder: Path) -> dict:
    """run_child arguments that make `folder` refuse writes, the best way this machine allows."""
    if NAMESPACES:
        return {"read_only": folder}
    folder.chmod(0o555)
    if os.geteuid() == 0:
        if not _tool("setpriv"):
            pytest.fail("running as root without unshare or setpriv: no way to make a folder unwritable")
        for parent in [folder, *folder.parents]:  # nobody must reach the inputs
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o005)
        return {"user": "nobody"}
    return {}


# -- shared inputs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Small valid inputs every case starts from (and corrupts a copy of)."""
    from champ_core.body.motion import Motion
    from champ_core.camera import Camera
    from champ_core.guidance import write_layer_frames

    root = tmp_path_factory.mktemp("world")
    root.chmod(0o755)
    T = 2
    motion = Motion(np.tile([[np.pi, 0, 0]], (T, 1)), np.zeros((T, 23, 3)), np.zeros((1, 10)),
                    np.tile([[0.0, 0.2, 3.0]], (T, 1)), Camera.centred(60.0, 48, 64), fps=8)
    motion.save(root / "motion.npz")
    with np.load(REPO / "champ_core" / "body" / "data" / "open_body.npz") as data:
        smpl = {k: data[k] for k in data.files}
    smpl["posedirs"] = np.zeros((smpl["v_template"].shape[0], 3, 207), np.float32)
    np.savez(root / "smpl.npz", **smpl)
    # released-layout weights (the tiny parity networks) and a small motion folder
    champ = root / "weights" / "champ"
    champ.mkdir(parents=True)
    for name in ("denoising_unet", "motion_module", "reference_unet"):
        shutil.copy(FIXTURE / "unet" / f"{name}.safetensors", champ)
    for path in PIPE.glob("guidance_encoder_*.safetensors"):
        shutil.copy(path, champ)
    shutil.copytree(PIPE / "image_encoder", root / "weights" / "image_encoder")
    shutil.copytree(PIPE / "vae", root / "weights" / "sd-vae-ft-mse")
    config = json.loads((FIXTURE / "config.json").read_text())["set_definition"]["pipeline"]
    width, height, frames = config["width"], config["height"], config["video_length"]
    strip = np.array(Image.open(PIPE / "guidance_depth.png").convert("RGB")).reshape(frames, height, width, 3)
    write_layer_frames(root / "guidance" / "depth", strip[:4], [f"{i:04d}" for i in range(4)])
    shutil.copy(PIPE / "reference.png", root / "reference.png")
    (root / "a_file").write_text("not a folder")
    return {"root": root, "smpl": smpl, "width": width, "height": height}


@pytest.fixture
def out(tmp_path) -> Path:
    tmp_path.chmod(0o755)
    return tmp_path


def animate_argv(world, out_path, *extra) -> list:
    root = world["root"]
    return ["animate", "--reference", root / "reference.png", "--guidance", root / "guidance",
            "--weights", root / "weights", "--out", out_path, "--width", world["width"], "--height",
            world["height"], "--steps", "1", "--device", "cpu", *extra]


def corrupt_weights(world, tmp: Path, component: str, change) -> Path:
    """A copy of the weights folder whose `component` file went through `change(state)`."""
    weights = tmp / "weights"
    shutil.copytree(world["root"] / "weights", weights)
    path = weights / "champ" / f"{component}.safetensors"
    state = load_file(path)
    change(state)
    save_file(state, path)
    return weights


def write_smpl(world, path: Path, **changes) -> Path:
    arrays = dict(world["smpl"], **changes)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a command loads Champ models (cheap arguments must be checked before)."""
    import champ_core.pipeline.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("models were loaded before the cheap arguments were checked")

    monkeypatch.setattr(loading, "load_pipeline", refuse)


# == kind 1: NaN / inf values =================================================================

def _set_nan(key):
    def change(state):
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float("nan")
    return change


def test_nan_in_guidance_encoder_refused_by_convert_weights(world, out, capsys):
    src = corrupt_weights(world, out, "guidance_encoder_depth", _set_nan("conv_in.weight")) / "champ"
    expect_error(capsys, ["convert-weights", src, out / "converted"], "conv_in.weight", "NaN or infinite",
                 "guidance_encoder_depth")
    assert not (out / "converted").exists() and not leftovers(out)


def test_inf_in_denoising_unet_refused_by_animate(world, out, capsys):
    def change(state):
        key = next(k for k in state if k.endswith("conv_in.weight"))
        state[key] = state[key].clone()
        state[key].view(-1)[3] = float("inf")
    weights = corrupt_weights(world, out, "denoising_unet", change)
    argv = animate_argv(world, out / "o.mp4")
    argv[argv.index("--weights") + 1] = weights
    expect_error(capsys, argv, "conv_in.weight", "NaN or infinite", "denoising_unet")
    assert not (out / "o.mp4").exists() and not leftovers(out)


def test_nan_v_template_refused_by_convert_smpl_and_render(world, out, capsys):
    v = world["smpl"]["v_template"].copy()
    v[10, 1] = np.nan
    bad = write_smpl(world, out / "bad_smpl.npz", v_template=v)
    expect_error(capsys, ["convert-smpl", bad, out / "clean.npz"], "v_template", "NaN or infinite")
    assert not (out / "clean.npz").exists() and not leftovers(out)
    expect_error(capsys, ["render", "--motion", world["root"] / "motion.npz", "--out", out / "guid", "--body", bad],
                 "v_template", "NaN or infinite")
    assert not (out / "guid").exists() and not leftovers(out)


def test_inf_shapedirs_refused(world, out, capsys):
    s = world["smpl"]["shapedirs"].copy()
    s[0, 0, 0] = np.inf
    bad = write_smpl(world, out / "bad_smpl.npz", shapedirs=s)
    expect_error(capsys, ["convert-smpl", bad, out / "clean.npz"], "shapedirs", "NaN or infinite")
    assert not (out / "clean.npz").exists()


def test_nan_image_tensors_and_latents_refused_by_the_library(world):
    from champ_core.pipeline.inputs import InputError, images_to_uint8, to_rgb_uint8
    from champ_core.pipeline.loading import load_pipeline

    image = torch.rand(2, 8, 8, 3)
    image[1, 2, 2, 0] = float("nan")
    with pytest.raises(InputError, match="reference holds 1 NaN or infinite value"):
        images_to_uint8(image, "reference")
    with pytest.raises(InputError, match="NaN or infinite"):
        to_rgb_uint8(np.full((4, 4, 3), np.inf, np.float32))
    assert images_to_uint8(torch.full((1, 2, 2, 1), 2.0), "x").tolist() == [[[[255] * 3] * 2] * 2]  # clipped, gray
    pipe = load_pipeline(world["root"] / "weights", guidance_types=("depth",))
    latents = torch.zeros(1, 4, 3, 4, 4)
    latents[0, 0, 1] = float("nan")
    with pytest.raises(InputError, match="latents to decode holds 16 NaN"):
        next(pipe.decode(latents))
    guidance = {"depth": np.zeros((3, world["height"], world["width"], 3), np.uint8)}
    from champ_core.pipeline.inputs import ArrayGuidance
    from champ_core.pipeline.sampling import SamplingOptions

    reference = pipe.encode_reference(np.zeros((8, 8, 3), np.uint8), world["width"], world["height"])
    start = torch.zeros(1, 4, 3, world["height"] // 8, world["width"] // 8)
    start[..., 0, 0] = float("inf")
    with pytest.raises(InputError, match="initial latents holds 12 NaN"):
        pipe.denoise(reference, ArrayGuidance(guidance), world["width"], world["height"], SamplingOptions(steps=1),
                     latents=start)


# == kind 2: SMPL face indices out of range ===================================================

@pytest.mark.parametrize("change, needle", [
    (lambda f: np.where(f == f.max(), 6890, f), "range over 0..6890"),
    (lambda f: f.astype(np.int64) - 1, "range over -1.."),
    (lambda f: f.astype(np.float32) + 0.5, "not whole numbers"),
], ids=["past-the-end", "negative", "fractional"])
def test_face_indices_out_of_range_refused_by_convert_smpl(world, out, capsys, change, needle):
    bad = write_smpl(world, out / "bad_smpl.npz", f=change(world["smpl"]["f"].astype(np.int64)))
    expect_error(capsys, ["convert-smpl", bad, out / "clean.npz"], "face indices", needle)
    assert not (out / "clean.npz").exists() and not leftovers(out)


def test_face_indices_out_of_range_refused_by_render(world, out, capsys):
    f = world["smpl"]["f"].astype(np.int64)
    f[5, 2] = 10**6
    bad = write_smpl(world, out / "bad_smpl.npz", f=f)
    expect_error(capsys, ["render", "--motion", world["root"] / "motion.npz", "--out", out / "g", "--body", bad],
                 "face indices", "1000000")
    assert not (out / "g").exists()


# == kind 3: POSE_KEYPOINT frames with different canvas sizes ================================

def _person(points: np.ndarray) -> dict:
    return {"pose_keypoints_2d": np.concatenate([points, np.ones((18, 1))], -1).reshape(-1).tolist()}


def _skeleton(centre, size) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.asarray(centre) + (rng.random((18, 2)) - 0.5) * size


def test_each_keypoint_frame_is_read_with_its_own_canvas():
    from champ_core.body.keypoints import parse_pose_keypoint

    base = _skeleton((50, 50), 40)  # on a 100 x 100 canvas
    frames = [{"canvas_width": 100, "canvas_height": 100, "people": [_person(base)]},
              {"canvas_width": 1000, "canvas_height": 1000, "people": [_person(base * 10)]},  # same pose, 10x canvas
              {"people": [_person(base * 10)]}]  # no canvas: the previous frame's (1000) applies
    pose = parse_pose_keypoint(frames)
    assert (pose.width, pose.height) == (100, 100) and pose.present.all()
    np.testing.assert_allclose(pose.body[1, :, :2], base, atol=1e-9)
    np.testing.assert_allclose(pose.body[2, :, :2], base, atol=1e-9)


def test_other_aspect_canvas_is_fitted_not_squeezed():
    from champ_core.body.keypoints import parse_pose_keypoint

    base = _skeleton((0.5, 0.5), 0.4)  # normalised coordinates
    frames = [{"canvas_width": 200, "canvas_height": 100, "people": [_person(base)]},
              {"canvas_width": 100, "canvas_height": 100, "people": [_person(base)]}]
    pose = parse_pose_keypoint(frames)
    np.testing.assert_allclose(pose.body[0, :, :2], base * [200, 100])
    # the square frame fills the 100-high canvas, centred: x offset 50, uniform scale 100 (not squeezed)
    np.testing.assert_allclose(pose.body[1, :, :2], base * 100 + [50, 0])


@pytest.mark.parametrize("canvas, needle", [
    ({"canvas_width": 0, "canvas_height": 100}, "not a positive image size"),
    ({"canvas_width": "wide", "canvas_height": 100}, "must be numbers"),
    ({"canvas_width": float("nan"), "canvas_height": 100}, "not a positive image size"),
])
def test_bad_canvas_sizes_are_named(world, out, capsys, canvas, needle):
    frames = [{"canvas_width": 48, "canvas_height": 64, "people": [_person(_skeleton((24, 32), 20))]},
              {**canvas, "people": [_person(_skeleton((24, 32), 20))]}]
    path = out / "kp.json"
    path.write_text(json.dumps(frames))
    expect_error(capsys, ["render", "--motion", world["root"] / "motion.npz", "--out", out / "g", "--keypoints", path],
                 "frame 1", needle)
    assert not (out / "g").exists()


def test_render_draws_keypoints_of_mixed_canvases_in_place(world, out, capsys):
    base = _skeleton((24, 32), 20)
    frames = [{"canvas_width": 48, "canvas_height": 64, "people": [_person(base)]},
              {"canvas_width": 480, "canvas_height": 640, "people": [_person(base * 10)]}]
    (out / "kp.json").write_text(json.dumps(frames))
    assert main(["render", "--motion", str(world["root"] / "motion.npz"), "--out", str(out / "g"),
                 "--keypoints", str(out / "kp.json"), "--no-previews", "--backend", "torch"]) == 0
    first, second = (np.asarray(Image.open(out / "g" / "dwpose" / f"{n}.png")) for n in ("0001", "0002"))
    assert first.any(-1).sum() > 50  # a skeleton was drawn ...
    assert np.abs(first.astype(int) - second).mean() < 0.5  # ... and the 10x canvas frame lands on the same pixels


# == kind 4: checkpoint dtypes and a 5-channel guidance encoder ===============================

def _to_int(key_end):
    def change(state):
        key = next(k for k in state if k.endswith(key_end))
        state[key] = state[key].round().to(torch.int64)
    return change


def test_integer_tensor_refused_by_convert_weights(world, out, capsys):
    src = corrupt_weights(world, out, "guidance_encoder_normal", _to_int("conv_out.weight")) / "champ"
    expect_error(capsys, ["convert-weights", src, out / "converted"], "wrong dtypes", "conv_out.weight",
                 "file int64, network float32")
    assert not (out / "converted").exists() and not leftovers(out)


def test_integer_tensor_refused_by_animate(world, out, capsys):
    weights = corrupt_weights(world, out, "reference_unet", _to_int("conv_in.weight"))
    argv = animate_argv(world, out / "o.mp4")
    argv[argv.index("--weights") + 1] = weights
    expect_error(capsys, argv, "wrong dtypes", "conv_in.weight", "int64")
    assert not (out / "o.mp4").exists()


def test_integer_tensor_refused_by_the_loader(world, out):
    from champ_core.models import CheckpointError
    from champ_core.models.loading import load_guidance_encoder

    path = out / "ge.safetensors"
    state = load_file(PIPE / "guidance_encoder_depth.safetensors")
    key = next(k for k in state if k.endswith("conv_in.bias"))
    state[key] = state[key].to(torch.int32)
    save_file(state, path)
    with pytest.raises(CheckpointError, match=r"conv_in\.bias \(file int32, network float32\)"):
        load_guidance_encoder(path)


def _five_channels(state):
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, w[:, :2]], dim=1).contiguous()


def test_five_channel_guidance_encoder_refused_at_load(world, out, capsys):
    from champ_core.models import CheckpointError
    from champ_core.models.loading import load_guidance_encoder

    weights = corrupt_weights(world, out, "guidance_encoder_depth", _five_channels)
    with pytest.raises(CheckpointError, match="conv_in.weight takes 5 input channels"):
        load_guidance_encoder(weights / "champ" / "guidance_encoder_depth.safetensors")
    expect_error(capsys, ["convert-weights", weights / "champ", out / "converted"], "guidance_encoder_depth",
                 "conv_in.weight takes 5 input channels")
    argv = animate_argv(world, out / "o.mp4")
    argv[argv.index("--weights") + 1] = weights
    expect_error(capsys, argv, "conv_in.weight takes 5 input channels")
    assert not (out / "converted").exists() and not (out / "o.mp4").exists()


# == kind 5: OS errors, every command =========================================================

def _command_argv(world, command: str, target: Path) -> list:
    """argv for `command` writing its output to `target` (a file or folder path)."""
    root = world["root"]
    if command == "render":
        return ["render", "--motion", root / "motion.npz", "--out", target, "--no-previews", "--backend", "torch"]
    if command == "demo":
        return ["demo", "--out", target, "--seconds", "0.2", "--fps", "5"]
    if command == "animate":
        return animate_argv(world, target)
    if command == "convert-weights":
        return ["convert-weights", root / "weights" / "champ", target, "--guidance-types", "depth"]
    if command == "convert-smpl":
        return ["convert-smpl", root / "smpl.npz", target]
    raise KeyError(command)


OUTPUT_NAMES = {"render": "guid", "demo": "demo", "animate": "o.mp4", "convert-weights": "conv",
                "convert-smpl": "s.npz"}


@pytest.mark.parametrize("command", list(OUTPUT_NAMES))
def test_file_where_a_folder_should_be(world, out, capsys, command, no_model_loading):
    target = world["root"] / "a_file" / OUTPUT_NAMES[command]
    expect_error(capsys, _command_argv(world, command, target), "a_file is a file, not a folder")
    assert (world["root"] / "a_file").read_text() == "not a folder"


@pytest.mark.parametrize("command", ["render", "demo", "convert-weights"])
def test_output_folder_that_is_a_file(world, out, capsys, command):
    target = out / "taken"
    target.write_text("x")
    expect_error(capsys, _command_argv(world, command, target), f"{target}: is a file, not a folder")
    assert target.read_text() == "x"


@pytest.mark.parametrize("command", ["animate", "convert-smpl"])
def test_output_file_that_is_a_folder(world, out, capsys, command, no_model_loading):
    target = out / ("taken.mp4" if command == "animate" else "taken.npz")
    target.mkdir()
    expect_error(capsys, _command_argv(world, command, target), "is a folder; give a file name")


# the commands of other areas, writing into a folder (see NEW_COMMAND_CASES below)
OTHER_AREA_OUTPUTS = {
    "synth-data": lambda target: ["synth-data", target, "--videos", "1", "--frames", "2"],
    "prepare": lambda target: ["prepare", Path(__file__), target],
    "evaluate": lambda target: ["evaluate", target.parent, target.parent, "--json", target.with_suffix(".json")],
}


@pytest.fixture(scope="module")
def read_only_runs(world, tmp_path_factory):
    """Every command writing into one unwritable folder, all in one child process: command -> result."""
    folder = tmp_path_factory.mktemp("locked")
    folder.chmod(0o755)
    runs = {command: _command_argv(world, command, folder / OUTPUT_NAMES[command]) for command in OUTPUT_NAMES}
    runs.update({command: build(folder / "out") for command, build in OTHER_AREA_OUTPUTS.items()})
    results = run_children([(argv, [folder]) for argv in runs.values()], **unwritable(folder))
    return folder, dict(zip(runs, results))


@pytest.mark.parametrize("command", [*OUTPUT_NAMES, *OTHER_AREA_OUTPUTS])
def test_read_only_output_folder(read_only_runs, command):
    folder, results = read_only_runs
    code, err, listing = results[command]
    line = error_line(err)
    assert code == 2, err
    assert any(word in line for word in ("read-only", "not writable", "no permission", "permission denied")), line
    assert str(folder) in line and listing == []


@pytest.mark.parametrize("command", ["render", "convert-smpl", "convert-weights"])
def test_disk_full_or_file_too_large(world, out, command):
    """The write fails half-way: one line naming the output, and nothing of it left."""
    folder = out / "small"
    folder.mkdir()
    target = folder / OUTPUT_NAMES[command]
    argv = [a for a in _command_argv(world, command, target) if a != "--no-previews"]  # render: videos too
    if NAMESPACES and command in ("render", "convert-weights"):
        code, err, listing = run_child(argv, [folder], tmpfs=(folder, 16384))
        needle = "no space left"
    else:
        code, err, listing = run_child(argv, [folder], fsize=4096)
        needle = "largest size allowed"
    line = error_line(err)
    assert code == 2 and needle in line and str(target) in line, line
    assert listing == []  # no partial file, no empty output folder


def test_video_write_failing_half_way_names_the_video_and_leaves_nothing(out):
    """animate's and render's mp4s go through VideoWriter; a write error there (EFBIG here)."""
    code = f"""
import resource, sys
sys.path.insert(0, {str(REPO)!r})
import numpy as np
from champ_core.video import VideoWriter
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
try:
    with VideoWriter({str(out / 'v.mp4')!r}, fps=8) as writer:
        writer.write(np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8))
except OSError as exc:
    print('errno', exc.errno, exc.filename)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"errno {errno.EFBIG} {out / 'v.mp4'}" in proc.stdout, proc.stderr
    assert list(out.iterdir()) == []


def test_os_error_lines_say_what_to_do():
    from champ_core.cli.errors import describe_os_error

    cases = {
        errno.ENOSPC: "free some space", errno.EFBIG: "raise the limit", errno.EROFS: "writable disk",
        errno.EACCES: "chmod", errno.ENOTDIR: "not a folder", errno.EISDIR: "give a file name",
        errno.ENAMETOOLONG: "shorter path", errno.ENOENT: "check the path", errno.EIO: "check the disk",
    }
    for code, advice in cases.items():
        line = describe_os_error(OSError(code, os.strerror(code), "/x/.out.mp4.abc123xy.partial.mp4"), "--out")
        assert line.startswith("--out /x/out.mp4: ") and advice in line, line


# == kind 6: animate checks cheap arguments before loading models =============================

@pytest.mark.parametrize("change, needle", [
    ({"--fps": "0"}, "--fps 0.0: must be a number > 0"),
    ({"--fps": "nan"}, "--fps nan: must be a number > 0"),
    ({"--output-size": "0x64"}, "--output-size 0x64: both sides must be positive"),
    ({"--device": "cuda:0"} if not torch.cuda.is_available() else {"--device": "cuda:99"}, "--device cuda"),
    ({"--device": "gpu-please"}, "--device gpu-please: not a device name"),
    ({"--out": "video.gif"}, "must end in .mp4 or .mov or .mkv"),
    ({"--reference": "missing.png"}, "--reference"),
    ({"--steps": "0"}, "--steps 0: must be an integer > 0"),
    ({"--width": "36"}, "--width 36: must be a multiple of 8"),
    ({"--decode-chunk": "0"}, "--decode-chunk 0"),
], ids=["fps0", "fps-nan", "output-size", "device-absent", "device-name", "out-suffix", "reference-missing",
        "steps", "width", "decode-chunk"])
def test_animate_cheap_arguments_first(world, out, capsys, no_model_loading, change, needle):
    argv = animate_argv(world, out / "o.mp4")
    for flag, value in change.items():
        value = out / value if flag in ("--out", "--reference") else value
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    expect_error(capsys, argv, needle)
    assert list(out.iterdir()) == []


def test_animate_reference_that_is_not_an_image_is_refused_before_loading(world, out, capsys, no_model_loading):
    bad = out / "ref.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    argv = animate_argv(world, out / "o.mp4")
    argv[argv.index("--reference") + 1] = bad
    expect_error(capsys, argv, "--reference", "cannot read", "PNG or JPEG")
    assert sorted(p.name for p in out.iterdir()) == ["ref.png"]


def test_render_and_convert_check_outputs_before_reading(world, out, capsys):
    big_motion = world["root"] / "motion.npz"
    expect_error(capsys, ["render", "--motion", big_motion, "--out", out / "g", "--device", "tpu"],
                 "--device tpu")
    expect_error(capsys, ["convert-smpl", world["root"] / "smpl.npz", out / "x.txt"], "DST", "must end in .npz")
    expect_error(capsys, ["demo", "--out", out / "d", "--fps", "-1"], "--fps -1.0")
    expect_error(capsys, ["demo", "--out", out / "d", "--motion", "moonwalk"], "--motion moonwalk",
                 "built-in motion")
    expect_error(capsys, ["demo", "--photo", "--out", out / "d", "--motion", "moonwalk"], "--motion moonwalk",
                 "built-in motion")
    assert list(out.iterdir()) == []


# == kind 7: half-written files ===============================================================

def test_motion_save_leaves_nothing_on_a_write_error(world, out):
    code = f"""
import sys, resource
sys.path.insert(0, {str(REPO)!r})
import numpy as np
from champ_core.body.motion import Motion
m = Motion.load({str(world['root'] / 'motion.npz')!r})
m = m.slice(0, 1)
big = Motion(np.zeros((20000, 3)), np.zeros((20000, 23, 3)), np.zeros((1, 10)), np.ones((20000, 3)), m.camera)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    big.save({str(out / 'big.npz')!r})
except OSError as exc:
    print('errno', exc.errno, exc.filename)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"errno {errno.EFBIG} {out / 'big.npz'}" in proc.stdout, proc.stderr
    assert list(out.iterdir()) == []


def test_demo_failing_half_way_leaves_no_output_folder(world, out, capsys, monkeypatch):
    from champ_core.body.motion import Motion

    def full_disk(self, path):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Motion, "save", full_disk)
    expect_error(capsys, ["demo", "--photo", "--out", out / "demo", "--seconds", "0.2", "--fps", "5", "--motion", "wave"],
                 f"{out / 'demo' / 'motion_aligned.npz'}: no space left")
    assert list(out.iterdir()) == []


def test_convert_smpl_keeps_an_existing_output_on_failure(world, out):
    target = out / "s.npz"
    target.write_bytes(b"previous result")
    code, err, listing = run_child(["convert-smpl", world["root"] / "smpl.npz", target], [out], fsize=8192)
    assert code == 2 and "largest size allowed" in error_line(err)
    assert listing == [str(target)] and target.read_bytes() == b"previous result"


# == kind 8: motion files =====================================================================

def _motion_variants(world, out: Path) -> dict[str, Path]:
    with np.load(world["root"] / "motion.npz") as data:
        good = {k: data[k] for k in data.files}
    raw = (world["root"] / "motion.npz").read_bytes()
    paths = {}

    def put(name, **arrays):
        paths[name] = out / f"{name}.npz"
        np.savez(paths[name], **arrays)

    paths["truncated"] = out / "truncated.npz"
    paths["truncated"].write_bytes(raw[: len(raw) // 2])
    paths["not-npz"] = out / "text.npz"
    paths["not-npz"].write_text("global_orient,body_pose\n1,2\n")
    put("missing-keys", **{k: v for k, v in good.items() if k not in ("transl", "fx")})
    put("wrong-shape", **dict(good, body_pose=np.zeros((2, 22, 3), np.float32)))
    put("nan-transl", **dict(good, transl=np.full((2, 3), np.nan, np.float32)))
    put("bad-camera", **dict(good, fx=np.float64(0.0)))
    put("pickled", **dict(good, frame_names=np.array([{"a": 1}, {"b": 2}], dtype=object)))
    return paths


MOTION_CASES = {
    "truncated": "damaged or truncated", "not-npz": "is not a motion npz", "missing-keys": "missing transl, fx",
    "wrong-shape": "motion body_pose has shape (2, 22, 3); expected (2, 23, 3)", "nan-transl": "NaN or infinite",
    "bad-camera": "not a usable camera", "pickled": "npz of plain arrays",
}


@pytest.mark.parametrize("case", list(MOTION_CASES))
def test_bad_motion_files_render(world, out, capsys, case):
    path = _motion_variants(world, out)[case]
    expect_error(capsys, ["render", "--motion", path, "--out", out / "g"], str(path), MOTION_CASES[case])
    assert not (out / "g").exists()


@pytest.mark.parametrize("case", ["truncated", "missing-keys", "wrong-shape"])
def test_bad_motion_files_demo(world, out, capsys, monkeypatch, case):
    import champ_core.body.fitting as fitting

    path = _motion_variants(world, out)[case]
    monkeypatch.setattr(fitting, "fit_reference", lambda *a, **k: None)  # the motion fails first; skip the fit
    needle = {"truncated": "damaged or truncated", "missing-keys": "cannot read motion",
              "wrong-shape": "expected (2, 23, 3)"}[case]
    expect_error(capsys, ["demo", "--photo", "--out", out / "d", "--motion", path], needle)
    assert not (out / "d").exists()


def test_bad_amass_and_smpl_result_files(out):
    from champ_core.body.model import open_body_model
    from champ_core.body.motions import MotionSourceError
    from champ_core.body.sources import load_amass, load_hmr2_results

    np.savez(out / "amass.npz", poses=np.zeros((5, 72)), trans=np.zeros((4, 3)))
    with pytest.raises(MotionSourceError, match=r"'trans' has shape \(4, 3\), expected \(5, 3\)"):
        load_amass(out / "amass.npz", open_body_model())
    np.savez(out / "amass_nan.npz", poses=np.full((5, 72), np.nan), trans=np.zeros((5, 3)))
    with pytest.raises(MotionSourceError, match="NaN or infinite"):
        load_amass(out / "amass_nan.npz", open_body_model())
    np.save(out / "0001.npy", np.array({"smpls": {"global_orient": np.zeros((1, 2, 2))}, "cam_t": np.zeros((1, 3))},
                                       dtype=object), allow_pickle=True)
    with pytest.raises(MotionSourceError, match="not a usable HMR2 result"):
        load_hmr2_results(out)


# == kind 9: reference images (16-bit, gray, RGBA) and folder modes ===========================

def _gray16(path: Path, width=48, height=64) -> np.ndarray:
    ramp = np.linspace(0, 65535, width * height).reshape(height, width).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    return (ramp / 65535 * 255).round().astype(np.uint8)


def test_sixteen_bit_gray_reference_keeps_its_range(out):
    from champ_core.pipeline.inputs import to_rgb_uint8

    expected = _gray16(out / "g16.png")
    assert Image.open(out / "g16.png").mode.startswith("I")
    rgb = to_rgb_uint8(out / "g16.png")
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1 and (rgb[..., 0] == rgb[..., 2]).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: the white background
    Image.fromarray(rgba, "RGBA").save(out / "clear.png")
    assert (to_rgb_uint8(out / "clear.png") == 255).all()


def test_render_reference_16_bit_gray_overlay_is_not_white(world, out):
    from champ_core.video import read_video

    expected = _gray16(out / "g16.png")
    assert main(["render", "--motion", str(world["root"] / "motion.npz"), "--out", str(out / "g"), "--reference",
                 str(out / "g16.png"), "--backend", "torch"]) == 0
    overlay, _ = read_video(out / "g" / "overlay.mp4")
    corner = overlay[0, :16, :10].astype(float).mean()  # away from the body: the reference shows (dark there)
    assert abs(corner - expected[:16, :10].mean()) < 12 and corner < 100  # today's main: white (255)


def test_output_folders_and_files_get_normal_permissions(world, out):
    old = os.umask(0o022)
    try:
        assert main(["render", "--motion", str(world["root"] / "motion.npz"), "--out", str(out / "g"),
                     "--backend", "torch"]) == 0
        assert main(["convert-smpl", str(world["root"] / "smpl.npz"), str(out / "s.npz")]) == 0
    finally:
        os.umask(old)
    assert (out / "g").stat().st_mode & 0o777 == 0o755
    assert (out / "g" / "preview.mp4").stat().st_mode & 0o777 == 0o644
    assert (out / "s.npz").stat().st_mode & 0o777 == 0o644
    assert not leftovers(out)


# == commands of other areas (train, synth-data, prepare, evaluate): the same error style ========

# (id, argv builder (world, out), needles); the builders put outputs under `out`
NEW_COMMAND_CASES = [
    ("train-root-is-file", lambda w, o: ["train", "check-data", w["root"] / "a_file"], ["ROOT", "is a file"]),
    ("train-root-missing", lambda w, o: ["train", "check-data", o / "nowhere"], ["ROOT", "does not exist"]),
    ("train-config-missing", lambda w, o: ["train", "stage1", "--config", o / "none.yaml"],
     ["none.yaml does not exist"]),
    ("synth-data-file-where-folder", lambda w, o: ["synth-data", w["root"] / "a_file" / "d", "--videos", "1"],
     ["OUT", "a_file is a file, not a folder"]),
    ("synth-data-fps", lambda w, o: ["synth-data", o / "d", "--fps", "0"], ["--fps 0.0: must be a number > 0"]),
    ("prepare-file-where-folder", lambda w, o: ["prepare", w["root"] / "reference.png", w["root"] / "a_file" / "d"],
     ["OUT", "a_file"]),
    ("prepare-videos-missing", lambda w, o: ["prepare", o / "none.mp4", o / "d"], ["VIDEOS", "does not exist"]),
    ("evaluate-json-file-where-folder", lambda w, o: ["evaluate", w["root"] / "guidance", w["root"] / "guidance",
                                                      "--json", w["root"] / "a_file" / "r.json"],
     ["--json", "a_file is a file, not a folder"]),
    ("evaluate-json-suffix", lambda w, o: ["evaluate", w["root"] / "guidance", w["root"] / "guidance", "--json",
                                           o / "r.txt"], ["--json", "must end in .json"]),
    ("evaluate-device", lambda w, o: ["evaluate", w["root"] / "guidance", w["root"] / "guidance", "--device", "gpu9"],
     ["--device gpu9"]),
]
NEW_COMMAND_ROWS = {build({"root": Path("/r")}, Path("/o"))[0] for _, build, _ in NEW_COMMAND_CASES}


@pytest.mark.parametrize("case", NEW_COMMAND_CASES, ids=[c[0] for c in NEW_COMMAND_CASES])
def test_commands_of_other_areas_answer_in_one_line(world, out, capsys, case):
    name, build, needles = case
    if build(world, out)[0] not in COMMANDS:
        pytest.fail(f"{build(world, out)[0]} is not a registered command any more; update the table")
    expect_error(capsys, build(world, out), *needles)
    assert not leftovers(out) and not (out / "d").exists()


# == every command: the table covers all of COMMANDS ==========================================

def test_every_registered_command_has_rows():
    covered = set(OUTPUT_NAMES) | NEW_COMMAND_ROWS
    assert set(COMMANDS) <= covered, f"commands without bad-input rows: {sorted(set(COMMANDS) - covered)}"
