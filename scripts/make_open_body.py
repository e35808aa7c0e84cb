"""Generate the project's open SMPL-format body: champ_core/body/data/open_body.npz.

A "wooden mannequin" in SMPL's format, made only from numbers written in this file (licensed with
the project): one ellipsoid per body part plus a ball at every joint, rigidly skinned to SMPL's
24-joint tree, with 10 meaningful shape directions, 6890 vertices and SMPL's surface-landmark
vertex ids (nose 332, eyes, ears, toes, heels, fingertips) placed at the matching places.
Deterministic: no randomness, so running it twice writes identical arrays.

    python scripts/make_open_body.py [--out PATH] [--pkl FOLDER]

`--pkl FOLDER` also writes FOLDER/SMPL_NEUTRAL.pkl (a plain pickle that smplx can load).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

NUM_VERTICES = 6890
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# Rest pose (T-pose), SMPL model axes: y up, the body faces +z, its left side is +x. Metres.
REST_JOINTS = np.array([
    [0.000, -0.220, 0.000],    # 0 pelvis
    [0.070, -0.310, 0.000],    # 1 left_hip
    [-0.070, -0.310, 0.000],   # 2 right_hip
    [0.000, -0.100, -0.010],   # 3 spine1
    [0.095, -0.700, 0.005],    # 4 left_knee
    [-0.095, -0.700, 0.005],   # 5 right_knee
    [0.000, 0.030, 0.000],     # 6 spine2
    [0.090, -1.100, -0.030],   # 7 left_ankle
    [-0.090, -1.100, -0.030],  # 8 right_ankle
    [0.000, 0.090, 0.010],     # 9 spine3
    [0.110, -1.150, 0.100],    # 10 left_foot
    [-0.110, -1.150, 0.100],   # 11 right_foot
    [0.000, 0.290, -0.020],    # 12 neck
    [0.075, 0.200, -0.010],    # 13 left_collar
    [-0.075, 0.200, -0.010],   # 14 right_collar
    [0.000, 0.360, 0.020],     # 15 head
    [0.170, 0.230, -0.020],    # 16 left_shoulder
    [-0.170, 0.230, -0.020],   # 17 right_shoulder
    [0.430, 0.215, -0.035],    # 18 left_elbow
    [-0.430, 0.215, -0.035],   # 19 right_elbow
    [0.680, 0.215, -0.030],    # 20 left_wrist
    [-0.680, 0.215, -0.030],   # 21 right_wrist
    [0.760, 0.210, -0.030],    # 22 left_hand
    [-0.760, 0.210, -0.030],   # 23 right_hand
])

BALL_RADIUS = np.array([0.10, 0.075, 0.075, 0.10, 0.055, 0.055, 0.11, 0.045, 0.045, 0.12, 0.03, 0.03,
                        0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.042, 0.042, 0.035, 0.035, 0.02, 0.02])

# Part ellipsoids: label, start point, end point, radii (across, depth), resolution (rings, segments).
# Start/end are joint indices or explicit points (tuples).
HEAD_CENTRE = (0.0, 0.455, 0.025)
PARTS = [
    (0, (0.0, -0.20, 0.0), (0.0, -0.34, 0.0), (0.165, 0.110), (14, 24)),
    (3, 3, 6, (0.150, 0.105), (14, 24)),
    (6, 6, 9, (0.155, 0.105), (12, 24)),
    (9, 9, (0.0, 0.25, -0.01), (0.175, 0.115), (14, 26)),
    (12, 12, 15, (0.050, 0.050), (8, 16)),
    (15, (0.0, 0.345, 0.025), (0.0, 0.565, 0.025), (0.085, 0.100), (18, 28)),
    (13, 13, 16, (0.055, 0.050), (8, 16)),
    (14, 14, 17, (0.055, 0.050), (8, 16)),
    (16, 16, 18, (0.055, 0.052), (12, 18)),
    (17, 17, 19, (0.055, 0.052), (12, 18)),
    (18, 18, 20, (0.042, 0.040), (12, 18)),
    (19, 19, 21, (0.042, 0.040), (12, 18)),
    (20, 20, 22, (0.020, 0.045), (8, 16)),
    (21, 21, 23, (0.020, 0.045), (8, 16)),
    (22, 22, (0.860, 0.205, -0.030), (0.015, 0.042), (8, 16)),
    (23, 23, (-0.860, 0.205, -0.030), (0.015, 0.042), (8, 16)),
    (1, 1, 4, (0.080, 0.082), (14, 20)),
    (2, 2, 5, (0.080, 0.082), (14, 20)),
    (4, 4, 7, (0.058, 0.060), (14, 20)),
    (5, 5, 8, (0.058, 0.060), (14, 20)),
    (7, (0.090, -1.130, -0.090), 10, (0.045, 0.035), (10, 16)),
    (8, (-0.090, -1.130, -0.090), 11, (0.045, 0.035), (10, 16)),
    (10, 10, (0.115, -1.160, 0.170), (0.045, 0.022), (8, 14)),
    (11, 11, (-0.115, -1.160, 0.170), (0.045, 0.022), (8, 14)),
]

TORSO_LABELS = {0, 3, 6, 9}
LEG_JOINTS = {1, 2, 4, 5, 7, 8, 10, 11}
ARM_JOINTS = {16, 17, 18, 19, 20, 21, 22, 23}
HEAD_LABELS = {15}


def shaped_joints(p: np.ndarray) -> np.ndarray:
    """Joint positions for shape parameters p (10,): an affine function of p."""
    j = REST_JOINTS.copy()
    pelvis_y = j[0, 1]
    # 0 stature: vertical offsets from the pelvis grow 4 % per unit, widths 1.5 %.
    j[:, 1] = pelvis_y + (j[:, 1] - pelvis_y) * (1 + 0.04 * p[0])
    j[:, 0] *= 1 + 0.015 * p[0]
    # 2 leg length: offsets below the hips.
    for k in sorted(LEG_JOINTS):
        j[k, 1] += (REST_JOINTS[k, 1] - REST_JOINTS[1, 1]) * 0.05 * p[2]
    # 3 arm length: offsets beyond the shoulders.
    for k in (18, 20, 22):
        j[k, 0] += (REST_JOINTS[k, 0] - REST_JOINTS[16, 0]) * 0.05 * p[3]
        j[k + 1, 0] += (REST_JOINTS[k + 1, 0] - REST_JOINTS[17, 0]) * 0.05 * p[3]
    # 4 shoulder width: the whole arm chain moves sideways.
    for k in (13, 16, 18, 20, 22):
        j[k, 0] += 0.012 * p[4]
        j[k + 1, 0] -= 0.012 * p[4]
    # 5 hip width.
    for k in (1, 4, 7, 10):
        j[k, 0] += 0.008 * p[5]
        j[k + 1, 0] -= 0.008 * p[5]
    # 7 torso length: everything above spine1 rises.
    above = [3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
    for k in above:
        j[k, 1] += (REST_JOINTS[k, 1] - REST_JOINTS[3, 1]) * 0.04 * p[7] if k in (3, 6, 9) else 0.04 * p[7] * 0.39
    # 9 neck length: the head rises.
    j[15, 1] += 0.012 * p[9]
    return j


def _point(spec, joints: np.ndarray, shift: np.ndarray) -> np.ndarray:
    if isinstance(spec, int):
        return joints[spec]
    # explicit points follow the joint they hang from (the nearest rest joint) plus a shared shift
    return np.asarray(spec, dtype=float) + shift


def _ellipsoid(n_rings: int, n_segments: int):
    """Unit sphere with poles on +-x' (the part axis); returns points (N,3) and outward faces."""
    pts = [(1.0, 0.0, 0.0)]
    for i in range(1, n_rings):
        theta = np.pi * i / n_rings
        for k in range(n_segments):
            phi = 2 * np.pi * k / n_segments
            pts.append((np.cos(theta), np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi)))
    pts.append((-1.0, 0.0, 0.0))
    pts = np.array(pts)
    faces = []
    ring = lambda i, k: 1 + (i - 1) * n_segments + (k % n_segments)  # noqa: E731
    last = len(pts) - 1
    for k in range(n_segments):
        faces.append((0, ring(1, k), ring(1, k + 1)))
        faces.append((last, ring(n_rings - 1, k + 1), ring(n_rings - 1, k)))
        for i in range(1, n_rings - 1):
            a, b, c, d = ring(i, k), ring(i, k + 1), ring(i + 1, k), ring(i + 1, k + 1)
            faces += [(a, c, b), (b, c, d)]
    faces = np.array(faces)
    normals = np.cross(pts[faces[:, 1]] - pts[faces[:, 0]], pts[faces[:, 2]] - pts[faces[:, 0]])
    if np.sum(normals * pts[faces].mean(1)) < 0:
        faces = faces[:, ::-1]
    return pts, faces


def _frame(axis: np.ndarray):
    axis = axis / np.linalg.norm(axis)
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(helper, axis)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    return axis, e1, e2  # right-handed: e1 across, e2 depth-ish


def _radius_scale(label: int, p: np.ndarray) -> float:
    if label in TORSO_LABELS:
        return 1 - 0.06 * p[1]
    if label in HEAD_LABELS:
        return 1 + 0.05 * p[6]
    return 1 - 0.04 * p[1]


def build(p: np.ndarray):
    """Vertices (N,3), faces, labels, ball membership for shape parameters p (10,)."""
    joints = shaped_joints(p)
    rest_axes_joints = REST_JOINTS
    verts, faces, labels, ball_of = [], [], [], []
    offset = 0
    for label, start, end, radii, (rings, segs) in PARTS:
        a0, b0 = _point(start, rest_axes_joints, 0), _point(end, rest_axes_joints, 0)
        axis, e1, e2 = _frame(b0 - a0)  # orientation fixed from the template: keeps vertices affine in p
        shift = joints[label] - REST_JOINTS[label]
        a, b = _point(start, joints, shift), _point(end, joints, shift)
        if label == 15:  # the head also grows with its size parameter about its own centre
            mid = 0.5 * (a + b)
            a, b = mid + (a - mid) * (1 + 0.05 * p[6]), mid + (b - mid) * (1 + 0.05 * p[6])
        centre, half = 0.5 * (a + b), 0.5 * float(np.dot(b - a, axis))
        r = np.array(radii) * _radius_scale(label, p)
        if label in (3, 6):  # 8 belly: deeper front of the abdomen
            r = r * np.array([1.0, 1 + 0.06 * p[8]])
        if label == 0:  # 5 hip width also widens the pelvis
            r = r * np.array([1 + 0.05 * p[5], 1.0])
        unit, f = _ellipsoid(rings, segs)
        pts = centre + unit[:, :1] * half * axis + unit[:, 1:2] * r[0] * e1 + unit[:, 2:3] * r[1] * e2
        verts.append(pts)
        faces.append(f + offset)
        labels += [label] * len(pts)
        ball_of += [-1] * len(pts)
        offset += len(pts)
    for j in range(24):
        unit, f = _ellipsoid(6, 10)
        radius = BALL_RADIUS[j] * _radius_scale(j, p)
        verts.append(joints[j] + unit * radius)
        faces.append(f + offset)
        labels += [j] * len(unit)
        ball_of += [j] * len(unit)
        offset += len(unit)
    return np.concatenate(verts), np.concatenate(faces), np.array(labels), np.array(ball_of)


LANDMARK_TARGETS = {  # SMPL vertex id: (label, target point in rest pose)
    332: (15, (0.0, 0.44, 0.13)),        # nose
    6260: (15, (-0.032, 0.475, 0.12)),   # right eye
    2800: (15, (0.032, 0.475, 0.12)),    # left eye
    4071: (15, (-0.09, 0.46, 0.02)),     # right ear
    583: (15, (0.09, 0.46, 0.02)),       # left ear
    3216: (10, (0.095, -1.16, 0.18)),    # left big toe
    3226: (10, (0.14, -1.16, 0.16)),     # left small toe
    3387: (7, (0.09, -1.15, -0.14)),     # left heel
    6617: (11, (-0.095, -1.16, 0.18)),   # right big toe
    6624: (11, (-0.14, -1.16, 0.16)),    # right small toe
    6787: (8, (-0.09, -1.15, -0.14)),    # right heel
    2746: (22, (0.80, 0.21, 0.04)),      # left thumb
    2319: (22, (0.86, 0.21, 0.03)),      # left index
    2445: (22, (0.87, 0.21, 0.0)),       # left middle
    2556: (22, (0.86, 0.21, -0.03)),     # left ring
    2673: (22, (0.84, 0.21, -0.06)),     # left pinky
    6191: (23, (-0.80, 0.21, 0.04)),
    5782: (23, (-0.86, 0.21, 0.03)),
    5905: (23, (-0.87, 0.21, 0.0)),
    6016: (23, (-0.86, 0.21, -0.03)),
    6133: (23, (-0.84, 0.21, -0.06)),
}


def make_open_body() -> dict[str, np.ndarray]:
    zero = np.zeros(10)
    verts, faces, labels, ball_of = build(zero)
    n = len(verts)
    if n > NUM_VERTICES:
        raise RuntimeError(f"{n} vertices > {NUM_VERTICES}: lower the resolutions")
    shapedirs = np.stack([build(np.eye(10)[k])[0] - verts for k in range(10)], axis=-1)
    # pad to SMPL's vertex count with unreferenced vertices at the pelvis (never drawn)
    pad = NUM_VERTICES - n
    verts = np.concatenate([verts, np.repeat(REST_JOINTS[:1], pad, 0)])
    shapedirs = np.concatenate([shapedirs, np.zeros((pad, 3, 10))])
    labels = np.concatenate([labels, np.zeros(pad, dtype=int)])
    ball_of = np.concatenate([ball_of, -np.ones(pad, dtype=int)])
    # put the landmark vertices at SMPL's ids (a permutation of the vertex order)
    perm = np.arange(NUM_VERTICES)  # new index -> old index
    used: set[int] = set()
    for vid, (label, target) in LANDMARK_TARGETS.items():
        cand = np.where((labels == label) & (ball_of < 0))[0]
        cand = np.array([c for c in cand if c not in used])
        best = int(cand[np.argmin(np.linalg.norm(verts[cand] - np.asarray(target), axis=1))])
        used.add(best)
        pos = int(np.where(perm == best)[0][0])
        perm[vid], perm[pos] = perm[pos], perm[vid]
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(NUM_VERTICES)
    verts, shapedirs, labels, ball_of = verts[perm], shapedirs[perm], labels[perm], ball_of[perm]
    faces = inverse[faces]
    weights = np.zeros((NUM_VERTICES, 24))
    weights[np.arange(NUM_VERTICES), labels] = 1.0
    regressor = np.zeros((24, NUM_VERTICES))
    for j in range(24):
        members = np.where(ball_of == j)[0]
        regressor[j, members] = 1.0 / len(members)
    kintree = np.stack([np.array([4294967295, *PARENTS[1:]]), np.arange(24)]).astype(np.int64)
    return {
        "v_template": verts.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "J_regressor": regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "f": faces.astype(np.uint32),
    }


def write_smplx_pickle(arrays: dict[str, np.ndarray], folder: Path, posedirs: np.ndarray | None = None) -> Path:
    """Write the body as SMPL_NEUTRAL.pkl in the dict layout smplx reads (float64, dense)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
    out["posedirs"] = (np.zeros((NUM_VERTICES, 3, 207)) if posedirs is None else np.asarray(posedirs, dtype=np.float64))
    path = folder / "SMPL_NEUTRAL.pkl"
    with open(path, "wb") as fh:
        pickle.dump(out, fh)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "champ_core" / "body" / "data" / "open_body.npz"
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--pkl", type=Path, default=None, help="also write FOLDER/SMPL_NEUTRAL.pkl")
    args = parser.parse_args()
    arrays = make_open_body()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(arrays['f'])} faces)")
    if args.pkl:
        print(f"wrote {write_smplx_pickle(arrays, args.pkl)}")


if __name__ == "__main__":
    main()
