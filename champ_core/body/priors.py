"""The project's own pose and shape priors (hand-written numbers, no learned or licensed weights).

- A natural rest pose (arms down, elbows and knees slightly bent) that the pose prior pulls towards.
- Per-joint stiffness: spine and neck turn little, shoulders and hips a lot.
- Hinge limits: knees and elbows bend one way only, and little about their other axes.
- Limb hypotheses: the initial poses of the fitter's multi-start (limbs forward / back).
"""

from __future__ import annotations

import torch

# body_pose index = SMPL joint index - 1
_BP = {name: i for i, name in enumerate((
    "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle", "spine3",
    "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand"))}


# Range of motion per body_pose joint and axis (radians, SMPL's local axes in the T-pose rest frame).
# Anatomical and asymmetric: hips flex forward (-x) far more than they extend, arms swing forward
# further than backward, knees and elbows are one-way hinges. Used as hinge limits by the prior.
_ROM = {
    "left_hip": ([-1.6, -0.5, -0.3], [0.4, 0.5, 0.7]), "right_hip": ([-1.6, -0.5, -0.7], [0.4, 0.5, 0.3]),
    "spine1": ([-0.3, -0.4, -0.3], [0.6, 0.4, 0.3]), "spine2": ([-0.3, -0.4, -0.3], [0.6, 0.4, 0.3]),
    "spine3": ([-0.3, -0.4, -0.3], [0.6, 0.4, 0.3]),
    "left_knee": ([0.0, -0.1, -0.1], [2.3, 0.1, 0.1]), "right_knee": ([0.0, -0.1, -0.1], [2.3, 0.1, 0.1]),
    "left_ankle": ([-0.6, -0.3, -0.3], [0.4, 0.3, 0.3]), "right_ankle": ([-0.6, -0.3, -0.3], [0.4, 0.3, 0.3]),
    "left_foot": ([-0.3, -0.3, -0.3], [0.3, 0.3, 0.3]), "right_foot": ([-0.3, -0.3, -0.3], [0.3, 0.3, 0.3]),
    "neck": ([-0.5, -0.8, -0.5], [0.7, 0.8, 0.5]), "head": ([-0.5, -0.8, -0.5], [0.7, 0.8, 0.5]),
    "left_collar": ([-0.3, -0.3, -0.3], [0.3, 0.3, 0.3]), "right_collar": ([-0.3, -0.3, -0.3], [0.3, 0.3, 0.3]),
    "left_shoulder": ([-1.2, -1.6, -1.5], [1.2, 0.6, 1.2]), "right_shoulder": ([-1.2, -0.6, -1.2], [1.2, 1.6, 1.5]),
    "left_elbow": ([-1.0, -2.4, -0.2], [1.0, 0.0, 0.2]), "right_elbow": ([-1.0, 0.0, -0.2], [1.0, 2.4, 0.2]),
    "left_wrist": ([-0.6, -0.6, -0.6], [0.6, 0.6, 0.6]), "right_wrist": ([-0.6, -0.6, -0.6], [0.6, 0.6, 0.6]),
    "left_hand": ([-0.3, -0.3, -0.3], [0.3, 0.3, 0.3]), "right_hand": ([-0.3, -0.3, -0.3], [0.3, 0.3, 0.3]),
}


def range_of_motion(dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi), each (23, 3): the anatomical joint-angle limits used by the prior."""
    lo = torch.zeros(23, 3, dtype=dtype)
    hi = torch.zeros(23, 3, dtype=dtype)
    for name, (a, b) in _ROM.items():
        lo[_BP[name]] = torch.tensor(a, dtype=dtype)
        hi[_BP[name]] = torch.tensor(b, dtype=dtype)
    return lo, hi


def natural_pose(dtype=torch.float32) -> torch.Tensor:
    """(23, 3) axis-angle: arms hanging at ~60 degrees from horizontal and a little forward, soft
    elbows and knees, hips slightly flexed."""
    pose = torch.zeros(23, 3, dtype=dtype)
    pose[_BP["left_shoulder"]] = torch.tensor([0.0, -0.25, -1.0])
    pose[_BP["right_shoulder"]] = torch.tensor([0.0, 0.25, 1.0])
    pose[_BP["left_elbow"]] = torch.tensor([0.0, -0.3, 0.0])
    pose[_BP["right_elbow"]] = torch.tensor([0.0, 0.3, 0.0])
    pose[_BP["left_knee"]] = torch.tensor([0.2, 0.0, 0.0])
    pose[_BP["right_knee"]] = torch.tensor([0.2, 0.0, 0.0])
    pose[_BP["left_hip"]] = torch.tensor([-0.15, 0.0, 0.0])
    pose[_BP["right_hip"]] = torch.tensor([-0.15, 0.0, 0.0])
    return pose


def pose_stiffness(dtype=torch.float32) -> torch.Tensor:
    """(23, 3) weights of the L2 pull towards `natural_pose` (larger = stiffer)."""
    w = torch.ones(23, 3, dtype=dtype)
    for name in ("spine1", "spine2", "spine3"):
        w[_BP[name]] = 2.0
    for name in ("neck", "head"):
        w[_BP[name]] = 1.5
    for name in ("left_collar", "right_collar"):
        w[_BP[name]] = 3.0
    for name in ("left_foot", "right_foot", "left_hand", "right_hand"):
        w[_BP[name]] = 4.0
    for name in ("left_wrist", "right_wrist", "left_ankle", "right_ankle"):
        w[_BP[name]] = 1.5
    for name in ("left_knee", "right_knee"):  # hinge about x: other axes stiff
        w[_BP[name]] = torch.tensor([0.3, 4.0, 4.0])
    w[_BP["left_elbow"]] = torch.tensor([1.0, 0.3, 4.0])
    w[_BP["right_elbow"]] = torch.tensor([1.0, 0.3, 4.0])
    w[_BP["left_shoulder"]] = 0.5
    w[_BP["right_shoulder"]] = 0.5
    w[_BP["left_hip"]] = 0.6
    w[_BP["right_hip"]] = 0.6
    return w


def pose_prior_per_joint(body_pose: torch.Tensor, mean: torch.Tensor, stiffness: torch.Tensor,
                         rom: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Prior energy per frame and body_pose joint (T, 23): weighted L2 to the natural pose plus
    range-of-motion hinges."""
    diff = (body_pose - mean) * stiffness
    energy = (diff**2).sum(dim=2)
    if rom is not None:
        lo, hi = rom
        outside = torch.relu(lo - body_pose) + torch.relu(body_pose - hi)
        energy = energy + 50.0 * outside.pow(2).sum(dim=2)
    return energy


def pose_prior(body_pose: torch.Tensor, mean: torch.Tensor, stiffness: torch.Tensor,
               rom: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Per-frame prior energy (T,): `pose_prior_per_joint` summed over the joints."""
    return pose_prior_per_joint(body_pose, mean, stiffness, rom).sum(dim=1)


def limb_hypotheses(mean: torch.Tensor) -> list[torch.Tensor]:
    """Initial poses for the fit's multi-start, each (23, 3): the natural pose `mean`, then arms
    forward with elbows bent and hips and knees flexed, then arms back with straight elbows and hips
    extended. 2D keypoints cannot tell a limb pointing towards the camera from one pointing away;
    starting on both sides of that ambiguity lets the fitter keep, per limb, whichever reprojects better."""
    sides = {
        "forward": {"left_shoulder": [0.0, -0.9, -0.8], "right_shoulder": [0.0, 0.9, 0.8],
                    "left_elbow": [0.0, -1.2, 0.0], "right_elbow": [0.0, 1.2, 0.0],
                    "left_hip": [-0.7, 0.0, 0.0], "right_hip": [-0.7, 0.0, 0.0],
                    "left_knee": [0.9, 0.0, 0.0], "right_knee": [0.9, 0.0, 0.0]},
        "back": {"left_shoulder": [0.0, 0.3, -1.1], "right_shoulder": [0.0, -0.3, 1.1],
                 "left_elbow": [0.0, -0.1, 0.0], "right_elbow": [0.0, 0.1, 0.0],
                 "left_hip": [0.2, 0.0, 0.0], "right_hip": [0.2, 0.0, 0.0],
                 "left_knee": [0.3, 0.0, 0.0], "right_knee": [0.3, 0.0, 0.0]},
    }
    out = [mean]
    for joints in sides.values():
        pose = mean.clone()
        for name, value in joints.items():
            pose[_BP[name]] = torch.tensor(value, dtype=mean.dtype)
        out.append(pose)
    return out
