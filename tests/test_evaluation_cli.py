"""`python -m champ_core evaluate`: inputs as people give them (mp4 files, frame folders, folders of
videos), the JSON and the table, missing backbones, and bad inputs as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from champ_core.cli import main
from champ_core.evaluation.pixel import psnr_legacy_frame

REPO = Path(__file__).resolve().parents[1]


def make_frames(seed, count=4, size=(24, 32)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, (count, *size, 3), dtype=np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-25, 26, gt.shape), 0, 255).astype(np.uint8)
    return pred, gt


def write_folder(folder: Path, frames) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{index + 1}.png")  # natural order: 1, 2, ..., 10
    return folder


def run_cli(capsys, *argv):
    code = main(["evaluate", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    """stderr without tqdm's carriage-return progress lines."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith(("error:", "Traceback"))]


def test_frame_folders_json_table_and_default_warnings(tmp_path, capsys):
    pred, gt = make_frames(0)
    out = tmp_path / "result.json"
    empty_models = tmp_path / "models"
    empty_models.mkdir()
    code, stdout, stderr = run_cli(capsys, write_folder(tmp_path / "pred", pred), write_folder(tmp_path / "gt", gt),
                                   "--json", out, "--models", empty_models)  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    assert sorted(document["metrics"]) == ["l1", "psnr", "psnr_legacy", "ssim"]
    expected = np.mean([psnr_legacy_frame(p, g) for p, g in zip(pred, gt)])
    assert document["metrics"]["psnr_legacy"]["value"] == pytest.approx(expected, rel=1e-12)
    assert document["per_frame"]["pred"]["psnr_legacy"] == pytest.approx(
        [psnr_legacy_frame(p, g) for p, g in zip(pred, gt)], rel=1e-12)
    assert "psnr_legacy" in stdout and f"{expected:.6g}" in stdout
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4 and all(str(empty_models) in w for w in warnings)
    assert not list(tmp_path.glob("*.partial*"))


def test_mp4_inputs_and_several_videos_matched_by_name(tmp_path, capsys):
    from champ_core.video import write_video

    pred_root, gt_root = tmp_path / "pred", tmp_path / "gt"
    pred_root.mkdir()
    gt_root.mkdir()
    for seed, name in ((1, "b_video"), (2, "a_video")):
        pred, gt = make_frames(seed, size=(32, 32))
        write_video(pred_root / f"{name}.mp4", pred, fps=8)
        write_folder(gt_root / name, gt)  # one side as frame folders: matched by name all the same
    out = tmp_path / "r.json"
    code, stdout, _ = run_cli(capsys, pred_root, gt_root, "--metrics", "psnr,l1", "--json", out)
    assert code == 0
    document = json.loads(out.read_text())
    assert list(document["metrics"]) == ["psnr", "l1"]
    assert sorted(document["per_video"]) == ["a_video", "b_video"]
    assert document["samples"]["psnr"] == 8
    means = [document["per_video"][n]["psnr"] for n in ("a_video", "b_video")]
    assert document["metrics"]["psnr"]["value"] == pytest.approx(np.mean(means), rel=1e-12)


def test_explicit_metric_without_backbone_exits_2_after_writing_the_others(tmp_path, capsys):
    pred, gt = make_frames(3)
    out = tmp_path / "r.json"
    code, _, stderr = run_cli(capsys, write_folder(tmp_path / "p", pred), write_folder(tmp_path / "g", gt),
                              "--metrics", "ssim", "--metrics", "fid", "--models", tmp_path, "--json", out)  # fmt: skip
    assert code == 2
    assert list(json.loads(out.read_text())["metrics"]) == ["ssim"]
    lines = error_lines(stderr)
    assert len(lines) == 1 and "pt_inception-2015-12-05-6726825d.pth" in lines[0] and str(tmp_path) in lines[0]


@pytest.mark.parametrize("problem", ["missing", "count", "size", "corrupt", "short", "names", "metric"])
def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys, problem):
    pred, gt = make_frames(4)
    gt_dir = write_folder(tmp_path / "gt", gt)
    extra: list = []
    if problem == "missing":
        pred_path, expected = tmp_path / "nothere", "does not exist"
    elif problem == "count":
        pred_path, expected = write_folder(tmp_path / "pred", pred[:3]), "3 frames"
    elif problem == "size":
        pred_path, expected = write_folder(tmp_path / "pred", pred[:, :, :16]), "16x24"
    elif problem == "corrupt":
        pred_path, expected = tmp_path / "pred.mp4", "pred.mp4"
        pred_path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    elif problem == "short":
        pred_path, expected = write_folder(tmp_path / "pred", pred), "16"
        extra = ["--metrics", "l1,fvd", "--models", tmp_path]
        (tmp_path / "i3d_pretrained_400.pt").write_bytes(b"placeholder")  # found, never loaded: fails first
    elif problem == "names":
        (tmp_path / "P").mkdir()
        (tmp_path / "G").mkdir()
        write_folder(tmp_path / "P" / "one", pred)
        write_folder(tmp_path / "G" / "two", gt)
        pred_path, gt_dir, expected = tmp_path / "P", tmp_path / "G", "only in PRED: one"
    else:
        pred_path, expected = write_folder(tmp_path / "pred", pred), "unknown metric"
        extra = ["--metrics", "psnr_star"]
    code, stdout, stderr = run_cli(capsys, pred_path, gt_dir, *extra)
    assert code == 2
    lines = error_lines(stderr)
    assert len(lines) == 1 and expected in lines[0], stderr
    assert "Traceback" not in stderr


def test_command_line_process_prints_no_traceback(tmp_path):
    pred, gt = make_frames(5)
    gt_dir = write_folder(tmp_path / "gt", gt)
    pred_dir = write_folder(tmp_path / "pred", pred[:2])
    process = subprocess.run([sys.executable, "-m", "champ_core", "evaluate", str(pred_dir), str(gt_dir),
                              "--metrics", "l1"], cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        f"error: pred: {pred_dir} has 2 frames, {gt_dir} has 4; evaluate videos of equal length"
    ]
