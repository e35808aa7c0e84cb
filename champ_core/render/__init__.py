"""Guidance maps for Champ from posed SMPL-style meshes and 2D keypoints.

Works on arrays only (no body model inside): `render_guidance` turns vertices (T, V, 3) in the
camera frame, faces and per-vertex part labels into the reference's depth / normal / semantic /
mask maps; `draw_skeleton` draws OpenPose-18 (+ hands, face) keypoints in the DWPose convention;
`writer` saves a motion folder in the reference's layout with previews. See docs/render.md.
"""

from .api import RenderInputError, iter_guidance, maps_to_tensors, render_guidance
from .backends import BACKENDS, RenderBackendError
from .colors import SEMANTIC_LUT_RGB, part_colors
from .shading import MAP_LAYERS
from .skeleton import SkeletonInputError, draw_skeleton

__all__ = [
    "BACKENDS",
    "MAP_LAYERS",
    "SEMANTIC_LUT_RGB",
    "RenderBackendError",
    "RenderInputError",
    "SkeletonInputError",
    "draw_skeleton",
    "iter_guidance",
    "maps_to_tensors",
    "part_colors",
    "render_guidance",
]
