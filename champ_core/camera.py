"""The pinhole camera shared by body fitting, alignment and rendering.

OpenCV axes: x right, y down, z forward (into the scene). Pixel (i, j) has its centre at
(i + 0.5, j + 0.5) in the continuous coordinates used by `cx`, `cy`, so a centred principal point
is (width / 2, height / 2).
"""

from __future__ import annotations

from dataclasses import dataclass

# HMR2's focal length rule: 5000 px for a 256 px crop, scaled to the image's longest side.
HMR2_FOCAL_PER_PIXEL = 5000.0 / 256.0


@dataclass(frozen=True)
class Camera:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def centred(cls, focal: float, width: int, height: int) -> Camera:
        """A camera with fx = fy = focal and the principal point at the image centre."""
        return cls(float(focal), float(focal), width / 2.0, height / 2.0, int(width), int(height))

    @classmethod
    def hmr2_default(cls, width: int, height: int) -> Camera:
        """The camera HMR2 (and so the reference implementation) assumes for a W x H image."""
        return cls.centred(HMR2_FOCAL_PER_PIXEL * max(width, height), width, height)

    def resized(self, width: int, height: int) -> Camera:
        """The same view at another resolution (scales focal and principal point per axis)."""
        sx, sy = width / self.width, height / self.height
        return Camera(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, int(width), int(height))

    def as_dict(self) -> dict[str, float]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width, "height": self.height}
