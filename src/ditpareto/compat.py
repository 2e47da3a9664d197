"""Make the CUDA-built PyPI torchvision wheel importable on CPU-only torch.

torchvision 0.28.0 (the release matching torch 2.13.0) ships only as a CUDA build. Its ``_C.so`` cannot load
on CPU torch, and the import then fails on two unconditional fake-kernel registrations
(``torchvision::nms`` / ``qnms``). Defining those two schemas first lets ``import torchvision`` (and therefore
torch-fidelity and diffusers) succeed; torchvision's other ops stay unavailable, which this project never uses.
Import this module before torch_fidelity / diffusers / torchvision. It is a no-op where ``_C.so`` loads.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_LIBRARY = None  # keeps the torch.library.Library alive


def ensure_torchvision_importable() -> None:
    """Define the two torchvision op schemas if torchvision's native library cannot load."""
    global _LIBRARY
    if "torchvision" in sys.modules or _LIBRARY is not None:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    native = os.path.join(list(spec.submodule_search_locations)[0], "_C.so")
    try:
        torch.ops.load_library(native)
        return
    except OSError:
        pass
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


ensure_torchvision_importable()
