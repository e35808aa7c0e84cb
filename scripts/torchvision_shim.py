"""Start-up hook for this project's virtual environment (installed as a .pth file).

PyPI only has CUDA builds of torchvision. On a CPU-only machine its compiled ops (`_C`) cannot
load, and `import torchvision` then fails while registering fake kernels for `torchvision::nms`.
transformers 5 and ComfyUI import torchvision, so every process of the environment needs the two
op schemas defined before that import. This hook waits for the first `import torchvision`, tries
to load the compiled ops, and defines the schemas only if that load fails: on machines where
torchvision works it does nothing.
"""

import importlib.abc
import importlib.util
import sys

_library = None  # keeps the torch.library.Library alive for the life of the process


def _ensure_torchvision_op_schemas(package_dir: str) -> None:
    global _library
    import glob
    import os

    import torch

    for path in glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd")):
        try:
            torch.ops.load_library(path)
            return
        except Exception:  # noqa: BLE001 - any failure means the compiled ops are unusable here
            pass
    if _library is not None:
        return
    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.submodule_search_locations:
            try:
                _ensure_torchvision_op_schemas(list(spec.submodule_search_locations)[0])
            except Exception:  # noqa: BLE001 - never break start-up; the import will say what is wrong
                pass
        return spec


if "torchvision" not in sys.modules:
    sys.meta_path.insert(0, _TorchvisionFinder())
