"""Body model: LBS against smplx, the safe SMPL loader, the open body, convert-smpl."""

from __future__ import annotations

import importlib.util
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from champ_core.body.model import (
    LANDMARK_VERTICES,
    BodyModelError,
    load_body_model,
    open_body_model,
)
from champ_core.body.safe_pickle import UnsafePickleError

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("make_open_body", ROOT / "scripts" / "make_open_body.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_params(rng, T=6):
    return (torch.tensor(rng.normal(size=(T, 3)), dtype=torch.float32),
            torch.tensor(rng.normal(size=(T, 69)) * 0.6, dtype=torch.float32),
            torch.tensor(rng.normal(size=(T, 10)), dtype=torch.float32),
            torch.tensor(rng.normal(size=(T, 3)), dtype=torch.float32))


@pytest.fixture(scope="module")
def dense_model_folder(tmp_path_factory):
    """The open body with soft skinning weights and random pose blend shapes, as SMPL_NEUTRAL.pkl."""
    gen = _generator()
    rng = np.random.default_rng(0)
    arrays = gen.make_open_body()
    weights = rng.random((6890, 24)) ** 4
    arrays["weights"] = (weights / weights.sum(1, keepdims=True)).astype(np.float32)
    folder = tmp_path_factory.mktemp("smpl")
    gen.write_smplx_pickle(arrays, folder, posedirs=rng.normal(size=(6890, 3, 207)) * 0.01)
    return folder


def test_lbs_matches_smplx(dense_model_folder):
    smplx = pytest.importorskip("smplx")  # test oracle (requirements-dev)
    reference = smplx.create(str(dense_model_folder / "SMPL_NEUTRAL.pkl"), model_type="smpl", num_betas=10)
    ours = load_body_model(dense_model_folder)
    go, bp, betas, transl = _random_params(np.random.default_rng(1))
    expected = reference(global_orient=go, body_pose=bp, betas=betas, transl=transl)
    got = ours(go, bp, betas, transl)
    assert got.vertices.shape == (6, 6890, 3)
    assert (got.vertices - expected.vertices).abs().max() < 1e-5
    assert (got.joints - expected.joints[:, :24]).abs().max() < 1e-5
    # pose blend shapes really contribute (the comparison is not trivially about rigid skinning)
    assert (ours(go, bp, betas, transl).vertices - load_body_model(dense_model_folder)(go, bp * 0, betas, transl).vertices).abs().max() > 0.01


def test_open_body_matches_smplx_and_is_deterministic(tmp_path):
    smplx = pytest.importorskip("smplx")
    gen = _generator()
    a, b = gen.make_open_body(), gen.make_open_body()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with np.load(ROOT / "champ_core" / "body" / "data" / "open_body.npz") as shipped:
        for k in a:
            assert a[k].dtype == shipped[k].dtype and a[k].shape == shipped[k].shape, k
            if np.issubdtype(a[k].dtype, np.floating):
                # the generator's float math may round differently on another BLAS build by ~1e-18 m
                assert np.abs(a[k].astype(np.float64) - shipped[k]).max() < 1e-9, k
            else:
                assert np.array_equal(a[k], shipped[k]), k
    gen.write_smplx_pickle(a, tmp_path)
    reference = smplx.create(str(tmp_path / "SMPL_NEUTRAL.pkl"), model_type="smpl", num_betas=10)
    body = open_body_model()
    go, bp, betas, transl = _random_params(np.random.default_rng(2))
    expected = reference(global_orient=go, body_pose=bp, betas=betas, transl=transl)
    got = body(go, bp, betas, transl)
    assert (got.vertices - expected.vertices).abs().max() < 1e-5


def test_open_body_layout():
    body = open_body_model()
    assert body.num_vertices == 6890 and body.shapedirs.shape == (6890, 3, 10)
    assert body.parents.tolist()[1:] == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    assert torch.equal(body.part_labels, body.lbs_weights.argmax(1))
    assert set(body.part_labels[torch.unique(body.faces)].tolist()) == set(range(24))
    v = body.v_template.numpy()
    head_centre = v[body.part_labels.numpy() == 15].mean(0)
    nose, leye, reye = (v[LANDMARK_VERTICES[k]] for k in ("nose", "left_eye", "right_eye"))
    assert nose[2] > head_centre[2] + 0.05  # in front of the face (the body faces +z)
    assert leye[0] > 0 > reye[0] and leye[1] > nose[1]  # SMPL's left is +x; eyes above the nose
    assert v[LANDMARK_VERTICES["left_big_toe"], 2] > v[LANDMARK_VERTICES["left_heel"], 2] + 0.15
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 < height < 1.9
    # shape directions: beta 0 = stature, beta 1 = girth (negative = heavier)
    taller = body.v_template + body.shapedirs[:, :, 0] * 2
    assert float(taller[:, 1].max() - taller[:, 1].min()) > height + 0.08
    heavier = body.v_template - body.shapedirs[:, :, 1] * 3
    torso = body.part_labels == 9
    assert float(heavier[torso, 0].max()) > float(body.v_template[torso, 0].max()) * 1.1
    faces = body.faces
    normals = torch.cross(v_t := body.v_template[faces[:, 1]] - body.v_template[faces[:, 0]],
                          body.v_template[faces[:, 2]] - body.v_template[faces[:, 0]], dim=1)
    assert v_t.shape[0] == faces.shape[0] and torch.isfinite(normals).all()


def test_generated_file_is_small():
    assert (ROOT / "champ_core" / "body" / "data" / "open_body.npz").stat().st_size < 3_000_000


class _FakeCh:
    """Stands in for chumpy.ch.Ch while *writing* a file shaped like the official SMPL pickles."""

    def __init__(self, x):
        self.x = x

    def __getstate__(self):
        return {"x": self.x, "_dirty_vars": set()}


def test_official_style_pickle_with_chumpy_and_sparse(tmp_path, monkeypatch):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    arrays = _generator().make_open_body()
    fake = types.ModuleType("chumpy.ch")
    _FakeCh.__module__, _FakeCh.__qualname__ = "chumpy.ch", "Ch"
    fake.Ch = _FakeCh
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", fake)
    content = {
        "v_template": _FakeCh(arrays["v_template"].astype(np.float64)),
        "shapedirs": _FakeCh(arrays["shapedirs"].astype(np.float64)),
        "posedirs": np.zeros((6890, 3, 207)),
        "J_regressor": scipy_sparse.csc_matrix(arrays["J_regressor"].astype(np.float64)),
        "weights": _FakeCh(arrays["weights"].astype(np.float64)),
        "kintree_table": arrays["kintree_table"], "f": arrays["f"], "bs_type": "lrotmin",
    }
    path = tmp_path / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"
    path.write_bytes(pickle.dumps(content, protocol=2))
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    monkeypatch.delitem(sys.modules, "chumpy")
    body = load_body_model(tmp_path)  # found by its official name, read without chumpy
    assert np.allclose(body.v_template.numpy(), arrays["v_template"])
    assert np.allclose(body.J_regressor.numpy(), arrays["J_regressor"])
    assert "chumpy" not in sys.modules


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil(marker)}))
    with pytest.raises(UnsafePickleError, match="not allowed"):
        load_body_model(tmp_path)
    assert not marker.exists()


def test_missing_and_wrong_model_files(tmp_path):
    with pytest.raises(BodyModelError, match="smpl.is.tue.mpg.de") as info:
        load_body_model(tmp_path)
    assert str(tmp_path) in str(info.value) and "SMPL_NEUTRAL.pkl" in str(info.value)
    np.savez(tmp_path / "SMPL_NEUTRAL.npz", something=np.zeros(3))
    with pytest.raises(BodyModelError, match="not an SMPL model file"):
        load_body_model(tmp_path)
    arrays = _generator().make_open_body()
    arrays["J_regressor"] = arrays["J_regressor"][:22]
    np.savez(tmp_path / "SMPL_MALE.npz", posedirs=np.zeros((6890, 3, 207)), **arrays)
    with pytest.raises(BodyModelError, match="J_regressor"):
        load_body_model(tmp_path, gender="male")
    (tmp_path / "SMPL_FEMALE.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_body_model(tmp_path, gender="female")


def test_convert_smpl_command(dense_model_folder, tmp_path, capsys):
    from champ_core.cli import main

    out = tmp_path / "clean.npz"
    assert main(["convert-smpl", str(dense_model_folder), str(out)]) == 0
    converted = load_body_model(out)
    original = load_body_model(dense_model_folder)
    go, bp, betas, transl = _random_params(np.random.default_rng(3), T=2)
    assert torch.allclose(converted(go, bp, betas, transl).vertices, original(go, bp, betas, transl).vertices, atol=1e-6)
    with np.load(out, allow_pickle=False) as data:
        assert set(data.files) == {"v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f"}
    assert main(["convert-smpl", str(tmp_path / "nowhere"), str(tmp_path / "x.npz")]) == 2
    assert "smpl.is.tue.mpg.de" in capsys.readouterr().err


def _chain_kinematics(rot_mats: torch.Tensor, joints: torch.Tensor, parents: list[int]):
    """Forward kinematics one joint at a time (the textbook recursion), to check the batched one."""
    rots, locs = [rot_mats[:, 0]], [joints[:, 0]]
    for j in range(1, len(parents)):
        p = parents[j]
        rots.append(rots[p] @ rot_mats[:, j])
        locs.append(locs[p] + (rots[p] @ (joints[:, j] - joints[:, p])[..., None])[..., 0])
    return torch.stack(locs, 1), torch.stack(rots, 1)


@pytest.mark.parametrize("parents", [
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21],  # SMPL's tree
    [-1, 0, 1, 1, 3, 0, 2, 6, 6],  # uneven depths: a parent with several children, siblings out of order
])
def test_forward_kinematics_matches_the_joint_by_joint_recursion(parents):
    from champ_core.body.model import axis_angle_to_matrix, forward_kinematics

    generator = torch.Generator().manual_seed(3)
    rot = axis_angle_to_matrix(torch.randn(5, len(parents), 3, generator=generator))
    rest = torch.randn(5, len(parents), 3, generator=generator)
    posed, transforms = forward_kinematics(rot, rest, parents)
    want_posed, want_rot = _chain_kinematics(rot, rest, parents)
    torch.testing.assert_close(posed, want_posed, atol=1e-5, rtol=0)
    torch.testing.assert_close(transforms[..., :3], want_rot, atol=1e-5, rtol=0)
    # the transform maps each rest joint onto its posed position
    moved = (transforms[..., :3] @ rest[..., None])[..., 0] + transforms[..., 3]
    torch.testing.assert_close(moved, want_posed, atol=1e-5, rtol=0)


def test_forward_kinematics_gradients_match_the_recursion():
    # the fit differentiates through the batched chain: its backward must equal the recursion's
    from champ_core.body.model import SMPL_PARENTS, axis_angle_to_matrix, forward_kinematics

    parents = list(SMPL_PARENTS)
    generator = torch.Generator().manual_seed(4)
    aa = torch.randn(3, len(parents), 3, generator=generator, dtype=torch.float64)
    rest = torch.randn(3, len(parents), 3, generator=generator, dtype=torch.float64)
    weights = torch.randn(3, len(parents), 3, generator=generator, dtype=torch.float64)
    grads = []
    for chain in (lambda r, j: forward_kinematics(r, j, parents)[0], lambda r, j: _chain_kinematics(r, j, parents)[0]):
        a, j = aa.clone().requires_grad_(True), rest.clone().requires_grad_(True)
        (chain(axis_angle_to_matrix(a), j) * weights).sum().backward()
        grads.append((a.grad, j.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-10, rtol=0)


def test_forward_kinematics_of_no_frames():
    from champ_core.body.model import SMPL_PARENTS, forward_kinematics

    posed, transforms = forward_kinematics(torch.zeros(0, 24, 3, 3), torch.zeros(0, 24, 3), list(SMPL_PARENTS))
    assert posed.shape == (0, 24, 3) and transforms.shape == (0, 24, 3, 4)


def test_axis_angle_to_matrix_matches_scipy():
    from scipy.spatial.transform import Rotation

    from champ_core.body.model import axis_angle_to_matrix

    aa = np.random.default_rng(5).normal(size=(200, 3)) * 1.5
    aa[0] = 0.0  # the zero rotation, where the axis is undefined
    aa[1] = [1e-9, 0.0, 0.0]
    got = axis_angle_to_matrix(torch.as_tensor(aa)).numpy()
    np.testing.assert_allclose(got, Rotation.from_rotvec(aa).as_matrix(), atol=1e-7, rtol=0)
    batched = axis_angle_to_matrix(torch.as_tensor(aa.reshape(10, 20, 3), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(batched.reshape(200, 3, 3), got, atol=1e-6, rtol=0)
