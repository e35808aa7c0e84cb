"""Champ human image animation as a library: bodies, guidance maps, networks and sampling.

This package never imports ComfyUI. Importing it is cheap: every heavy dependency (diffusers,
transformers, pyrender, smplx) is imported inside the function or submodule that needs it.
Inside the package every import is relative, so it works both as the top-level `champ_core` and
as a sub-package of the ComfyUI pack (which ComfyUI loads under a path-derived module name).
"""

__version__ = "0.1.0"
