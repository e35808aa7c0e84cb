"""The pack's ComfyUI nodes, one module per group; each module lists its classes in `NODES`.

Every node class carries `NODE_ID` (the global, namespaced id ComfyUI registers) and
`DISPLAY_NAME`. The two mappings ComfyUI reads are built from those lists here.
"""

from . import body, evaluation, generation, models, pose, render

NODE_GROUPS = {"models": models, "body": body, "pose": pose, "render": render, "generation": generation,
               "evaluation": evaluation}

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

for _group in NODE_GROUPS.values():
    for _cls in _group.NODES:
        if _cls.NODE_ID in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"duplicate node id {_cls.NODE_ID}")
        NODE_CLASS_MAPPINGS[_cls.NODE_ID] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_cls.NODE_ID] = _cls.DISPLAY_NAME
