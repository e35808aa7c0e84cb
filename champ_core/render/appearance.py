"""Shaded RGB pictures of a posed body: the "photographs" of the pack's generated training people.

A person is the posed mesh with an `Appearance`: every SMPL part belongs to a region (skin, hair,
top, bottom, shoes), each region has a `Pattern` (plain, stripes, checks or noise between two
colours) evaluated in body-surface coordinates, i.e. at the point's position on the rest-pose
mesh, so clothing patterns move with the body instead of swimming in screen space. Colour is
albedo times diffuse (Lambert) shading from one directional light plus an ambient term. The
visible surface comes from the same rasterizer and ray hits as the guidance maps, so a person's
pixels are exactly the mask's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..camera import Camera
from .geometry import orient_faces_outward, vertex_normals
from .raster_torch import rasterize_spans
from .shading import ray_hits

REGIONS = ("skin", "hair", "top", "bottom", "shoes")
PATTERN_KINDS = ("plain", "stripes", "checks", "noise")

# SMPL joint label -> region (the elbows' region depends on the sleeve length, see `region_of_parts`)
_PART_REGION = {
    0: "bottom", 1: "bottom", 2: "bottom", 4: "bottom", 5: "bottom",
    7: "shoes", 8: "shoes", 10: "shoes", 11: "shoes",
    3: "top", 6: "top", 9: "top", 13: "top", 14: "top", 16: "top", 17: "top",
    12: "skin", 15: "skin", 20: "skin", 21: "skin", 22: "skin", 23: "skin",
}  # fmt: skip
_ELBOWS = (18, 19)
_HEAD = 15


class AppearanceError(ValueError):
    """Inputs `render_appearance` cannot use (the message says what to pass)."""


@dataclass(frozen=True)
class Pattern:
    """Two colours (linear RGB in [0, 1]) laid out on the body surface.

    `frequency` is in cycles per metre of rest-pose surface; `axis` the stripes' normal direction
    (checks use `axis` and a second axis orthogonal to it).
    """

    kind: str = "plain"
    color_a: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color_b: tuple[float, float, float] = (0.5, 0.5, 0.5)
    frequency: float = 8.0
    axis: tuple[float, float, float] = (0.0, 1.0, 0.0)
    phase: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PATTERN_KINDS:
            raise AppearanceError(f"unknown pattern {self.kind!r}; choose one of {PATTERN_KINDS}")


@dataclass(frozen=True)
class Appearance:
    """Everything that decides how a generated person looks, apart from body shape and pose."""

    patterns: dict[str, Pattern] = field(default_factory=lambda: {r: Pattern() for r in REGIONS})
    long_sleeves: bool = True
    light_direction: tuple[float, float, float] = (0.3, -0.5, -1.0)  # towards the light, camera axes
    ambient: float = 0.35
    hair_height: float = 0.04  # metres above the head joint where hair starts (rest pose)


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A random person: skin tone, hair, and clothing colours and patterns."""
    skin_tones = np.array([[0.95, 0.76, 0.62], [0.85, 0.62, 0.45], [0.65, 0.45, 0.32], [0.42, 0.27, 0.18],
                           [0.28, 0.17, 0.11]])  # fmt: skip
    tone = skin_tones[rng.integers(len(skin_tones))] * rng.uniform(0.9, 1.1, 3)
    hair = np.array([[0.05, 0.04, 0.03], [0.25, 0.15, 0.07], [0.55, 0.4, 0.2], [0.7, 0.7, 0.65], [0.4, 0.1, 0.05]])
    hair_colour = hair[rng.integers(len(hair))]

    def colour() -> tuple[float, float, float]:
        return tuple(float(c) for c in rng.uniform(0.03, 1.0, 3) ** 1.5)

    def clothing() -> Pattern:
        kind = str(rng.choice(PATTERN_KINDS, p=[0.25, 0.3, 0.2, 0.25]))
        axis = rng.normal(size=3)
        axis[1] += 2.0 * rng.choice([-1.0, 1.0])  # mostly horizontal stripes, some diagonal
        axis /= np.linalg.norm(axis)
        return Pattern(kind, colour(), colour(), float(rng.uniform(5.0, 25.0)), tuple(float(a) for a in axis),
                       float(rng.uniform(0, 2 * np.pi)), int(rng.integers(1 << 30)))  # fmt: skip

    skin = tuple(float(c) for c in np.clip(tone, 0, 1) ** 2.2)
    patterns = {
        "skin": Pattern("noise", skin, tuple(float(c) * 0.92 for c in skin), 40.0, seed=int(rng.integers(1 << 30))),
        "hair": Pattern("noise", tuple(float(c) for c in hair_colour ** 2.2),
                        tuple(float(c) * 0.7 for c in hair_colour ** 2.2), 60.0, seed=int(rng.integers(1 << 30))),
        "top": clothing(),
        "bottom": clothing(),
        "shoes": Pattern("plain", colour(), colour()),
    }  # fmt: skip
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-1.0, 0.2), -1.0])
    return Appearance(patterns, bool(rng.random() < 0.6), tuple(float(v) for v in light / np.linalg.norm(light)),
                      float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.0, 0.08)))  # fmt: skip


def region_of_parts(long_sleeves: bool) -> np.ndarray:
    """(24,) region index (into REGIONS) of each SMPL part label."""
    regions = np.zeros(24, dtype=np.int64)
    for part, region in _PART_REGION.items():
        regions[part] = REGIONS.index(region)
    for part in _ELBOWS:
        regions[part] = REGIONS.index("top" if long_sleeves else "skin")
    return regions


def vertex_regions(part_labels: np.ndarray, rest_vertices: np.ndarray, head_joint: np.ndarray,
                   appearance: Appearance) -> np.ndarray:
    """(V,) region per vertex: the part's region, with the top and back of the head as hair."""
    regions = region_of_parts(appearance.long_sleeves)[np.asarray(part_labels, dtype=np.int64)]
    head = np.asarray(part_labels) == _HEAD
    offset = rest_vertices - head_joint[None]
    # rest pose: y up, the face looks along +z; hair above the forehead line and on the back
    hair = head & ((offset[:, 1] > appearance.hair_height) | ((offset[:, 2] < -0.02) & (offset[:, 1] > -0.06)))
    regions[hair] = REGIONS.index("hair")
    return regions


def _hash_noise(cells: torch.Tensor, seed: int) -> torch.Tensor:
    """A pseudo-random value in [0, 1) per integer lattice point (..., 3) (integer hash, no state)."""
    x, y, z = (cells[..., k].to(torch.int64) for k in range(3))
    h = (x * 73856093) ^ (y * 19349663) ^ (z * 83492791) ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).to(torch.float32) / 65536.0


def value_noise(points: torch.Tensor, frequency: float, seed: int) -> torch.Tensor:
    """Smooth 3D value noise in [0, 1] at points (N, 3) (trilinear, smoothstep-weighted; two octaves)."""
    total = torch.zeros(points.shape[0], dtype=torch.float32, device=points.device)
    amplitude_sum = 0.0
    for octave, amplitude in ((1.0, 0.65), (2.3, 0.35)):
        p = points.float() * (frequency * octave)
        base = torch.floor(p)
        frac = p - base
        w = frac * frac * (3.0 - 2.0 * frac)
        value = torch.zeros_like(total)
        for corner in range(8):
            offset = torch.tensor([(corner >> k) & 1 for k in range(3)], dtype=torch.float32, device=points.device)
            weight = torch.where(offset.bool(), w, 1.0 - w).prod(-1)
            value += weight * _hash_noise(base + offset, seed + int(octave * 10))
        total += amplitude * value
        amplitude_sum += amplitude
    return total / amplitude_sum


def pattern_mix(pattern: Pattern, points: torch.Tensor) -> torch.Tensor:
    """Weight (N,) of colour b at surface points (N, 3): 0 or 1 for stripes/checks, smooth for noise."""
    if pattern.kind == "plain":
        return torch.zeros(points.shape[0], dtype=torch.float32, device=points.device)
    axis = torch.tensor(pattern.axis, dtype=torch.float32, device=points.device)
    along = points.float() @ axis
    stripes = torch.sin(2 * np.pi * pattern.frequency * along + pattern.phase) > 0
    if pattern.kind == "stripes":
        return stripes.float()
    if pattern.kind == "checks":
        other = torch.linalg.cross(axis, torch.tensor([0.0, 0.0, 1.0], device=points.device))
        if float(other.norm()) < 1e-3:
            other = torch.tensor([1.0, 0.0, 0.0], device=points.device)
        other = other / other.norm()
        across = torch.sin(2 * np.pi * pattern.frequency * (points.float() @ other)) > 0
        return (stripes ^ across).float()
    noise = value_noise(points, pattern.frequency / 4.0, pattern.seed)
    return ((noise - 0.5) * 2.5 + 0.5).clamp(0.0, 1.0)


def _linear_to_srgb_bytes(linear: torch.Tensor) -> torch.Tensor:
    c = linear.clamp(0.0, 1.0)
    srgb = torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055)
    return (srgb * 255.0 + 0.5).to(torch.uint8)


def render_appearance(
    vertices,
    faces,
    vertex_region: Sequence[int] | np.ndarray,
    surface_points,
    camera: Camera,
    appearance: Appearance,
    background: np.ndarray | None = None,
    frames_per_batch: int = 8,
) -> np.ndarray:
    """Shaded RGB frames (T, H, W, 3) uint8 of a posed mesh over `background` (H, W, 3) uint8 or black.

    vertices (T, V, 3) camera frame (OpenCV axes, metres); faces (F, 3); vertex_region (V,) indices
    into REGIONS; surface_points (V, 3): each vertex's body-surface coordinate (its rest-pose
    position). Pixels covered by the body are exactly those of `render_guidance`'s mask.
    """
    verts = torch.as_tensor(np.asarray(vertices, dtype=np.float32))
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise AppearanceError(f"vertices must be (T, V, 3); got {tuple(verts.shape)}")
    faces_t = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    regions = torch.as_tensor(np.asarray(vertex_region, dtype=np.int64))
    surface = torch.as_tensor(np.asarray(surface_points, dtype=np.float32))
    num_vertices = verts.shape[1]
    if regions.shape != (num_vertices,) or surface.shape != (num_vertices, 3):
        raise AppearanceError(f"vertex_region must be ({num_vertices},) and surface_points ({num_vertices}, 3); got "
                              f"{tuple(regions.shape)} and {tuple(surface.shape)}")  # fmt: skip
    height, width = camera.height, camera.width
    if background is None:
        background = np.zeros((height, width, 3), dtype=np.uint8)
    if background.shape != (height, width, 3) or background.dtype != np.uint8:
        raise AppearanceError(f"background must be uint8 ({height}, {width}, 3); got {background.dtype} {background.shape}")
    num_frames = verts.shape[0]
    out = np.repeat(background[None], num_frames, axis=0)
    if num_frames == 0:
        return out
    faces_t = orient_faces_outward(verts[0], faces_t)
    light = torch.tensor(appearance.light_direction, dtype=torch.float32)
    light = light / light.norm().clamp_min(1e-12)
    colours_a = torch.tensor([appearance.patterns[r].color_a for r in REGIONS], dtype=torch.float32)
    colours_b = torch.tensor([appearance.patterns[r].color_b for r in REGIONS], dtype=torch.float32)
    flat_out = torch.from_numpy(out).view(-1, 3)
    for start in range(0, num_frames, frames_per_batch):
        batch = verts[start:start + frames_per_batch]
        pixel, face, (t, row, col) = rasterize_spans(batch, faces_t, camera.fx, camera.fy, camera.cx, camera.cy,
                                                     width, height)  # fmt: skip
        if pixel.numel() == 0:
            continue
        hit = ray_hits(batch, faces_t, face, t, row, col, camera.fx, camera.fy, camera.cx, camera.cy)
        b = torch.stack(hit.barycentrics)  # (3, N)
        # the region of the corner nearest the hit (regions are not blended: clothing has edges)
        nearest = b.argmax(0)
        corner = hit.corners.gather(1, nearest[:, None])[:, 0]
        region = regions.index_select(0, corner)
        points = sum(surface.index_select(0, hit.corners[:, k]) * b[k][:, None] for k in range(3))
        mix = torch.zeros(pixel.shape[0], dtype=torch.float32)
        for r, name in enumerate(REGIONS):
            sel = (region == r).nonzero(as_tuple=True)[0]
            if len(sel):
                mix[sel] = pattern_mix(appearance.patterns[name], points.index_select(0, sel))
        albedo = colours_a.index_select(0, region) * (1 - mix[:, None]) + colours_b.index_select(0, region) * mix[:, None]
        normals = vertex_normals(batch, faces_t).reshape(-1, 3)
        n = sum(normals.index_select(0, hit.corner_index[k]) * b[k][:, None] for k in range(3))
        n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
        diffuse = (n @ light).clamp_min(0.0)
        shade = appearance.ambient + (1.0 - appearance.ambient) * diffuse
        flat_out[pixel + start * height * width] = _linear_to_srgb_bytes(albedo * shade[:, None])
    return out


def random_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A third each: a flat colour, a two-colour gradient, a texture (smooth noise and stripes)."""
    kind = int(rng.integers(3))
    a = rng.uniform(0.0, 1.0, 3)
    b = rng.uniform(0.0, 1.0, 3)
    if kind == 0:
        image = np.broadcast_to(a, (height, width, 3))
    elif kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width]
        s = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
        s = (s - s.min()) / max(np.ptp(s), 1e-9)
        image = a[None, None] * (1 - s[..., None]) + b[None, None] * s[..., None]
    else:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        points = torch.from_numpy(np.stack([xx / height, yy / height, np.zeros_like(xx)], -1).reshape(-1, 3))
        noise = value_noise(points, float(rng.uniform(3.0, 12.0)), int(rng.integers(1 << 30))).numpy()
        noise = noise.reshape(height, width)
        if rng.random() < 0.5:  # wallpaper-like stripes under the noise
            angle = rng.uniform(0, np.pi)
            stripes = np.sin(2 * np.pi * rng.uniform(4, 16) * (np.cos(angle) * xx + np.sin(angle) * yy) / height)
            noise = 0.6 * noise + 0.4 * (stripes > 0)
        image = a[None, None] * (1 - noise[..., None]) + b[None, None] * noise[..., None]
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
