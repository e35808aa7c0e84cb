"""The SMPL body model: template, blend shapes, joint regressor and linear blend skinning on torch.

Parameters follow SMPL (and HMR2, and so the reference implementation): axis-angle global
orientation (3,) and body pose (23, 3), shape coefficients `betas` (10,), translation (3,) added
after posing. The root rotation turns the body about its pelvis joint, so the pelvis lands at
`J_pelvis(betas) + transl` whatever the orientation.

Files: real SMPL `.pkl` (through the restricted unpickler in `safe_pickle`) or `.npz` with the
same keys; the project's generated open body ships in `data/open_body.npz`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

NUM_JOINTS = 24
NUM_BODY_JOINTS = 23
NUM_BETAS = 10

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# SMPL vertex ids of surface landmarks (the ids smplx's extra keypoints read; the open body places
# its vertices so that the same ids sit at the same places).
LANDMARK_VERTICES: dict[str, int] = {
    "nose": 332, "right_eye": 6260, "left_eye": 2800, "right_ear": 4071, "left_ear": 583,
    "left_big_toe": 3216, "left_small_toe": 3226, "left_heel": 3387,
    "right_big_toe": 6617, "right_small_toe": 6624, "right_heel": 6787,
    "left_thumb": 2746, "left_index": 2319, "left_middle": 2445, "left_ring": 2556, "left_pinky": 2673,
    "right_thumb": 6191, "right_index": 5782, "right_middle": 5905, "right_ring": 6016, "right_pinky": 6133,
}

SMPL_DOWNLOAD_HINT = (
    "SMPL model files are licence-gated and not shipped: register at https://smpl.is.tue.mpg.de, download "
    "'SMPL for Python' and put SMPL_NEUTRAL.pkl (and optionally SMPL_MALE.pkl / SMPL_FEMALE.pkl, or the "
    "official basicmodel_*.pkl names) into {folder}. Without them the project's open body "
    "(open_body_model()) is used."
)


class BodyModelError(ValueError):
    """A body model file that is missing or is not an SMPL-format model."""


@dataclass
class BodyOutput:
    vertices: torch.Tensor  # (T, V, 3)
    joints: torch.Tensor  # (T, 24, 3)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, batched over leading dims: (..., 3) -> (..., 3, 3).

    Written as cos I + sin [n]x + (1 - cos) n n^T with the cross-product matrix [n]x taken as one
    matmul with a constant, in few tensor ops: the body fit calls this on small batches every step."""
    angle = torch.linalg.vector_norm(aa + 1e-8, dim=-1, keepdim=True)
    axis = aa / angle
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    cross = (axis @ _cross_matrix_basis(aa.dtype, aa.device)).unflatten(-1, (3, 3))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return cos * eye + sin * cross + (1.0 - cos) * (axis[..., :, None] * axis[..., None, :])


@functools.lru_cache(maxsize=8)
def _cross_matrix_basis(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(3, 9): v @ basis is the cross-product matrix [v]x, flattened row-major. Made outside inference
    mode so a copy first made in a ComfyUI node can still enter a later fit's autograd graph."""
    with torch.inference_mode(False):
        basis = torch.zeros(3, 3, 3, dtype=dtype, device=device)
        for k, (i, j) in enumerate(((2, 1), (0, 2), (1, 0))):  # [v]x[i, j] = v_k, [v]x[j, i] = -v_k
            basis[k, i, j], basis[k, j, i] = 1.0, -1.0
        return basis.reshape(3, 9)


def matrix_to_axis_angle(mat: torch.Tensor) -> torch.Tensor:
    """Inverse of `axis_angle_to_matrix`, stable near 0 and pi (goes through a unit quaternion)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(mat))


def matrix_to_quaternion(mat: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation -> (..., 4) unit quaternion (w, x, y, z), w >= 0."""
    m = mat
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], dim=-2)  # (..., 4, 4): row k is 4 q_k q (unnormalised), best conditioned for the largest |q_k|
    diag = torch.stack([1 + trace, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    q = torch.where(q[..., :1] < 0, -q, q)
    sin_half = torch.linalg.vector_norm(q[..., 1:], dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, q[..., :1])
    small = sin_half < 1e-6
    scale = torch.where(small, 2.0 / q[..., :1].clamp_min(1e-6), angle / sin_half.clamp_min(1e-12))
    return q[..., 1:] * scale


@dataclass(frozen=True)
class _KinematicPlan:
    """How to walk a kinematic tree one depth at a time with few tensor ops (see `forward_kinematics`)."""

    order: torch.Tensor  # joint ids sorted by depth: every depth becomes one contiguous slice
    inverse: torch.Tensor  # position of each joint in `order`
    bone_parent: torch.Tensor  # parent of each joint, the root pointing at itself
    root_mask: torch.Tensor  # (J, 1): 0 for the root (its "bone" is its rest position), 1 elsewhere
    bottom_row: torch.Tensor  # (1, 1, 1, 4): (0, 0, 0, 1), the last row of a homogeneous transform
    level_sizes: tuple[int, ...]  # number of joints at each depth: `order` split into consecutive slices
    # per depth after the first: how to pick each joint's parent out of the previous depth's frames:
    # None = one to one in order, "expand" = all children of a single parent, else an index tensor
    parent_picks: tuple[torch.Tensor | str | None, ...]


@functools.lru_cache(maxsize=8)
def _kinematic_plan(parents: tuple[int, ...]) -> _KinematicPlan:
    # made outside inference mode even when first asked for inside it (ComfyUI runs nodes there): a
    # cached inference tensor used as an index would break every later fit's backward pass
    with torch.inference_mode(False):
        return _make_kinematic_plan(parents)


def _make_kinematic_plan(parents: tuple[int, ...]) -> _KinematicPlan:
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    levels = [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]
    order = [j for level in levels for j in level]
    picks = []
    for d, level in enumerate(levels[1:], start=1):
        previous = levels[d - 1]
        local = [previous.index(parents[j]) for j in level]
        if local == list(range(len(previous))):
            picks.append(None)
        elif len(previous) == 1:
            picks.append("expand")
        else:
            picks.append(torch.tensor(local))
    return _KinematicPlan(
        order=torch.tensor(order), inverse=torch.tensor([order.index(j) for j in range(len(parents))]),
        bone_parent=torch.tensor([0] + list(parents[1:])), root_mask=(torch.arange(len(parents)) > 0).float()[:, None],
        bottom_row=torch.tensor([0.0, 0.0, 0.0, 1.0]).reshape(1, 1, 1, 4),
        level_sizes=tuple(len(level) for level in levels), parent_picks=tuple(picks),
    )  # fmt: skip


def _pick_parents(frames: torch.Tensor, pick: torch.Tensor | str | None, previous: int, count: int,
                  batch: int) -> torch.Tensor:
    """The parent frame of each of a depth's `count` joints, from the `previous` depth's frames, both
    joint-major (joints*batch, 4, 4)."""
    if pick is None:
        return frames
    if isinstance(pick, str):
        return frames.repeat(count, 1, 1)
    return frames.unflatten(0, (previous, batch)).index_select(0, pick.to(frames.device)).flatten(0, 1)


def forward_kinematics(rot_mats: torch.Tensor, joints: torch.Tensor, parents: list[int]):
    """Global joint frames. rot_mats (B,J,3,3) local, joints (B,J,3) rest positions.

    Returns (posed joint positions (B,J,3), skinning transforms (B,J,3,4)) where the transform of
    joint j maps a rest-pose point to its posed position if it were fully attached to joint j.
    Joints of one tree depth are composed together (9 batched steps for SMPL instead of 23), on
    joints sorted by depth so that each depth is a slice, and each joint's rotation and bone travel
    as one homogeneous 4x4 matrix, so a step is a single matmul: the body fit runs this hundreds of
    times on small batches, where the number of tensor ops, not their size, sets the time.
    """
    plan = _kinematic_plan(tuple(parents))
    device = joints.device
    bones = joints - joints.index_select(1, plan.bone_parent.to(device)) * plan.root_mask.to(device, joints.dtype)
    bottom = plan.bottom_row.to(device, joints.dtype).expand(*bones.shape[:2], 1, 4)
    local = torch.cat([torch.cat([rot_mats, bones[..., None]], -1), bottom], -2)
    # joint-major (J*B, 4, 4): each depth is then a contiguous slice and its step one bmm, without copies
    batch = local.shape[0]
    steps = local.transpose(0, 1).index_select(0, plan.order.to(device)).flatten(0, 1).split(
        [n * batch for n in plan.level_sizes])
    frames = [steps[0]]
    for d, (step, pick) in enumerate(zip(steps[1:], plan.parent_picks), start=1):
        parents_of_step = _pick_parents(frames[-1], pick, plan.level_sizes[d - 1], plan.level_sizes[d], batch)
        frames.append(torch.bmm(parents_of_step, step))
    world = torch.cat(frames).unflatten(0, (len(parents), batch)).index_select(0, plan.inverse.to(device))
    world = world.transpose(0, 1)[..., :3, :]  # (B, J, 3, 4): the bottom rows are constant
    global_rot, posed = world[..., :3], world[..., 3]
    offset = posed - (global_rot @ joints[..., None])[..., 0]
    return posed, torch.cat([global_rot, offset[..., None]], dim=-1)


class BodyModel(nn.Module):
    """An SMPL-format body with a batched linear-blend-skinning forward."""

    def __init__(self, v_template, shapedirs, posedirs, J_regressor, lbs_weights, parents, faces,
                 num_betas: int = NUM_BETAS, name: str = "smpl") -> None:
        super().__init__()
        as_t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt)  # noqa: E731
        shapedirs = np.asarray(shapedirs)[:, :, :num_betas]
        if shapedirs.shape[2] < num_betas:  # fewer shape directions than asked: pad with zeros
            shapedirs = np.concatenate([shapedirs, np.zeros((*shapedirs.shape[:2], num_betas - shapedirs.shape[2]))], 2)
        self.name = name
        self.num_betas = num_betas
        self.register_buffer("v_template", as_t(v_template))
        self.register_buffer("shapedirs", as_t(shapedirs))
        self.register_buffer("posedirs", as_t(posedirs))
        self.register_buffer("J_regressor", as_t(J_regressor))
        self.register_buffer("lbs_weights", as_t(lbs_weights))
        self.register_buffer("parents", as_t(parents, torch.int64))
        self.register_buffer("faces", as_t(faces, torch.int64))
        self.register_buffer("part_labels", self.lbs_weights.argmax(dim=1))
        self._parents_list = [int(p) for p in np.asarray(parents)]
        self._parents_list[0] = -1

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def _expand(self, x: torch.Tensor | None, batch: int, shape: tuple[int, ...]) -> torch.Tensor:
        ref = self.v_template
        if x is None:
            return torch.zeros(batch, *shape, dtype=ref.dtype, device=ref.device)
        x = torch.as_tensor(x, dtype=ref.dtype, device=ref.device).reshape(-1, *shape)
        return x.expand(batch, *shape) if x.shape[0] == 1 else x

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """Joints of the shaped rest body, (B, 24, 3) (cheap: the regressor is pre-applied)."""
        j_template = self.J_regressor @ self.v_template
        j_dirs = torch.einsum("jv,vck->jck", self.J_regressor, self.shapedirs)
        return j_template + torch.einsum("bk,jck->bjc", betas, j_dirs)

    def forward(self, global_orient=None, body_pose=None, betas=None, transl=None,
                vertex_ids: torch.Tensor | None = None) -> BodyOutput:
        """Pose the body. Shapes: global_orient (T,3), body_pose (T,23,3) or (T,69), betas (T or 1,10),
        transl (T,3). `vertex_ids` restricts skinning to those vertices (joints stay exact)."""
        batch = 1
        for t, width in ((global_orient, 3), (body_pose, 69), (transl, 3), (betas, self.num_betas)):
            if t is not None:
                batch = max(batch, int(torch.as_tensor(t).reshape(-1, width).shape[0]))
        go = self._expand(global_orient, batch, (3,))
        bp = self._expand(body_pose, batch, (NUM_BODY_JOINTS, 3))
        be = self._expand(betas, batch, (self.num_betas,))
        tr = self._expand(transl, batch, (3,))
        return self._lbs(go, bp, be, tr, vertex_ids)

    def _lbs(self, go, bp, betas, transl, vertex_ids=None) -> BodyOutput:
        batch = go.shape[0]
        rot = axis_angle_to_matrix(torch.cat([go[:, None], bp], dim=1))  # (B,24,3,3)
        rest_j = self.rest_joints(betas)
        posed_j, transforms = forward_kinematics(rot, rest_j, self._parents_list)
        if vertex_ids is None:
            v_t, s_d, p_d, w = self.v_template, self.shapedirs, self.posedirs, self.lbs_weights
        else:
            v_t, s_d = self.v_template[vertex_ids], self.shapedirs[vertex_ids]
            p_d, w = self.posedirs[vertex_ids], self.lbs_weights[vertex_ids]
        v_shaped = v_t + torch.einsum("bk,vck->bvc", betas, s_d)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).reshape(batch, -1)
        v_posed = v_shaped + torch.einsum("bp,vcp->bvc", pose_feature, p_d)
        per_vertex = torch.einsum("vj,bjrc->bvrc", w, transforms)  # (B,V,3,4)
        verts = (per_vertex[..., :3] @ v_posed[..., None])[..., 0] + per_vertex[..., 3]
        return BodyOutput(vertices=verts + transl[:, None], joints=posed_j + transl[:, None])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The model as plain arrays with SMPL's key names (what `convert-smpl` writes)."""
        parents = np.asarray(self._parents_list, dtype=np.int64)
        kintree = np.stack([np.where(parents < 0, 4294967295, parents), np.arange(len(parents))]).astype(np.int64)
        return {
            "v_template": self.v_template.cpu().numpy(), "shapedirs": self.shapedirs.cpu().numpy(),
            "posedirs": self.posedirs.cpu().numpy(), "J_regressor": self.J_regressor.cpu().numpy(),
            "weights": self.lbs_weights.cpu().numpy(), "kintree_table": kintree,
            "f": self.faces.cpu().numpy().astype(np.uint32),
        }


# ---------------------------------------------------------------------------------------- loading

_GENDER_FILES = {
    "neutral": ("SMPL_NEUTRAL", "basicmodel_neutral_lbs_10_207_0_v1.1.0", "basicModel_neutral_lbs_10_207_0_v1.0.0"),
    "male": ("SMPL_MALE", "basicmodel_m_lbs_10_207_0_v1.1.0", "basicmodel_m_lbs_10_207_0_v1.0.0",
             "basicModel_m_lbs_10_207_0_v1.0.0"),
    "female": ("SMPL_FEMALE", "basicmodel_f_lbs_10_207_0_v1.1.0", "basicModel_f_lbs_10_207_0_v1.0.0"),
}


def find_model_file(folder: Path, gender: str = "neutral") -> Path:
    gender = gender.lower()
    if gender not in _GENDER_FILES:
        raise BodyModelError(f"unknown gender '{gender}': use neutral, male or female")
    folder = Path(folder)
    for base in (folder, folder / "smpl", folder / "SMPL"):
        for stem in _GENDER_FILES[gender]:
            for suffix in (".npz", ".pkl"):
                if (base / (stem + suffix)).is_file():
                    return base / (stem + suffix)
    names = ", ".join(s + ".pkl" for s in _GENDER_FILES[gender][:2])
    raise BodyModelError(f"no {gender} SMPL model ({names}) in {folder}. " + SMPL_DOWNLOAD_HINT.format(folder=folder))


def read_smpl_arrays(path: Path) -> dict[str, np.ndarray]:
    """Raw SMPL arrays from a `.pkl` (safe unpickling) or `.npz` file, validated."""
    from .safe_pickle import safe_load_file

    path = Path(path)
    if not path.is_file():
        raise BodyModelError(f"body model file {path} does not exist. " + SMPL_DOWNLOAD_HINT.format(folder=path.parent))
    if path.suffix == ".npz":
        from .motion import read_npz

        raw = read_npz(path, BodyModelError, "a plain body-model")
    else:
        raw = safe_load_file(str(path))
    if not isinstance(raw, dict):
        raise BodyModelError(f"{path}: expected a dict of SMPL arrays, got {type(raw).__name__}")
    required = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    missing = [k for k in required if k not in raw]
    if missing:
        raise BodyModelError(f"{path} is not an SMPL model file: missing {', '.join(missing)}")
    arrays = {k: np.asarray(raw[k]) for k in required}
    v = arrays["v_template"]
    checks = [
        (v.ndim == 2 and v.shape[1] == 3, f"v_template shape {v.shape}"),
        (arrays["shapedirs"].shape[:2] == v.shape, f"shapedirs shape {arrays['shapedirs'].shape}"),
        (arrays["posedirs"].shape == (v.shape[0], 3, 207), f"posedirs shape {arrays['posedirs'].shape}"),
        (arrays["J_regressor"].shape == (NUM_JOINTS, v.shape[0]), f"J_regressor shape {arrays['J_regressor'].shape}"),
        (arrays["weights"].shape == (v.shape[0], NUM_JOINTS), f"weights shape {arrays['weights'].shape}"),
        (arrays["kintree_table"].shape == (2, NUM_JOINTS), f"kintree_table shape {arrays['kintree_table'].shape}"),
        (arrays["f"].ndim == 2 and arrays["f"].shape[1] == 3, f"faces shape {arrays['f'].shape}"),
    ]
    bad = [msg for ok, msg in checks if not ok]
    if bad:
        raise BodyModelError(f"{path} is not a 24-joint SMPL model: {'; '.join(bad)} (SMPL-H/SMPL-X files are not supported)")
    not_numbers = [k for k, a in arrays.items() if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool)]
    if not_numbers:
        raise BodyModelError(f"{path}: arrays {', '.join(not_numbers)} do not hold numbers; the file is damaged or "
                             "not an SMPL model")
    not_finite = [k for k, a in arrays.items() if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()]
    if not_finite:
        raise BodyModelError(f"{path}: {', '.join(not_finite)} hold NaN or infinite values; the file is damaged, "
                             "get a fresh copy of the SMPL model")
    faces = arrays["f"]
    if not np.issubdtype(faces.dtype, np.integer) and not (faces == np.round(faces)).all():
        raise BodyModelError(f"{path}: face indices (f) are not whole numbers; the file is damaged")
    if faces.size and (faces.min() < 0 or faces.max() >= v.shape[0]):
        raise BodyModelError(f"{path}: face indices (f) range over {int(faces.min())}..{int(faces.max())} but the "
                             f"model has {v.shape[0]} vertices (0..{v.shape[0] - 1}); the file is damaged or mixes "
                             "two models")
    parents = arrays["kintree_table"][0]
    if ((parents[1:] < 0) | (parents[1:] >= NUM_JOINTS)).any():
        raise BodyModelError(f"{path}: kintree_table names parent joints outside 0..{NUM_JOINTS - 1}; the file is damaged")
    return arrays


def body_model_from_arrays(arrays: dict[str, np.ndarray], num_betas: int = NUM_BETAS, name: str = "smpl") -> BodyModel:
    parents = np.asarray(arrays["kintree_table"][0]).astype(np.int64)
    parents[0] = -1
    return BodyModel(arrays["v_template"], arrays["shapedirs"], arrays["posedirs"], arrays["J_regressor"],
                     arrays["weights"], parents, np.asarray(arrays["f"]).astype(np.int64), num_betas=num_betas, name=name)


def load_body_model(path_or_folder: str | Path, gender: str = "neutral", num_betas: int = NUM_BETAS) -> BodyModel:
    """Load a real SMPL model (`.pkl` or `.npz`) from a file or from the folder that holds it."""
    path = Path(path_or_folder)
    if path.is_dir():
        path = find_model_file(path, gender)
    return body_model_from_arrays(read_smpl_arrays(path), num_betas=num_betas, name=path.stem)


OPEN_BODY_PATH = Path(__file__).parent / "data" / "open_body.npz"
_OPEN_BODY_CACHE: dict[str, dict[str, np.ndarray]] = {}


def open_body_model() -> BodyModel:
    """The project's generated, openly licensed SMPL-format body (see scripts/make_open_body.py)."""
    if "open" not in _OPEN_BODY_CACHE:
        if not OPEN_BODY_PATH.is_file():
            raise BodyModelError(f"{OPEN_BODY_PATH} is missing: run `python scripts/make_open_body.py` to regenerate it")
        with np.load(OPEN_BODY_PATH, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if "posedirs" not in arrays:  # stored without its all-zero pose blend shapes to stay small
            arrays["posedirs"] = np.zeros((arrays["v_template"].shape[0], 3, 207), dtype=np.float32)
        _OPEN_BODY_CACHE["open"] = arrays
    return body_model_from_arrays(_OPEN_BODY_CACHE["open"], name="open_body")
