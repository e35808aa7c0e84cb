"""Champ for ComfyUI: human image animation driven by 3D body guidance.

ComfyUI imports this file under a module name derived from the pack's folder path, with the
pack folder NOT on sys.path; so everything below is imported relatively, and importing the pack
stays light (no diffusers, transformers, pyrender or smplx until a node runs).
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes._common import register_model_folders

# The front-end extension (the guidance-layers preview), served at /extensions/<pack folder>/.
WEB_DIRECTORY = "./web"

register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
