"""Let the PyPI torchvision wheel import beside a CPU-only torch build.

The PyPI torchvision wheels for Linux x86_64 link their C extension against
the CUDA libraries of torch (libtorch_cuda.so, libc10_cuda.so). Beside the CPU
build of torch that extension cannot load, so torchvision runs without its
compiled ops, which ComfyUI does not call. torchvision 0.28 still registers
fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` at import
time, and that fails with "operator torchvision::nms does not exist" because
the schemas came from the extension. This module defines those two schemas
just before torchvision is first imported, so the import succeeds; calling
``torchvision.ops.nms`` still raises, as it would without the extension.

Python imports ``sitecustomize`` at start-up from any folder on PYTHONPATH,
so this file takes effect only for processes started with the host site
folder on PYTHONPATH (see setup_comfyui_host.sh).
"""

import importlib.abc
import sys

# Schemas as torchvision's C extension declares them (torchvision/csrc/ops).
_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

# The torch.library.Library must stay referenced, or its definitions are dropped.
_library = None


def _define_missing_schemas() -> None:
    global _library
    import torch

    for schema in _TORCHVISION_SCHEMAS:
        name = schema.split("(", 1)[0]
        if _has_schema(name):
            continue
        if _library is None:
            _library = torch.library.Library("torchvision", "FRAGMENT")
        _library.define(schema)


def _has_schema(name: str) -> bool:
    import torch

    try:
        torch._C._get_schema(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


class _TorchvisionImportHook(importlib.abc.MetaPathFinder):
    """Define the schemas on the first ``import torchvision``, then step aside."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        _define_missing_schemas()
        return None


sys.meta_path.insert(0, _TorchvisionImportHook())
