"""Champ for ComfyUI: human image animation driven by 3D body guidance.

ComfyUI imports this file under a module name derived from the pack's folder path, with the
pack folder NOT on sys.path; so everything below is imported relatively, and importing the pack
stays light (no diffusers, transformers, pyrender or smplx until a node runs).
"""

# The front-end extension (the guidance-layers preview), served at /extensions/<pack folder>/.
WEB_DIRECTORY = "./web"

# ComfyUI always imports this file as a package. pytest also imports it (as the rootdir package's
# __init__) and, when the checkout's folder name is not a Python identifier, as a plain module
# with no package: then there is nothing to register and relative imports cannot work.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes._common import register_model_folders

    register_model_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
