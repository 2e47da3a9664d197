"""Where and in what numerics a job computes: the device it asked for (no silent fallback), the precision scope
(fp32 / tf32 / bf16 autocast) and the record of both. Every step that runs a model goes through these three."""

from __future__ import annotations

import contextlib
import functools
import logging
import subprocess

import torch

from ditpareto.errors import InputError
from ditpareto.study import PRECISIONS

log = logging.getLogger("ditpareto.runtime")


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto``: cuda when torch sees a GPU, else cpu (the choice is logged). An explicit device must exist: ``cuda``
    without a GPU is an InputError, never a silent CPU run."""
    if str(name) == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        log.info("--device auto picked %s", describe(device))
        return device
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"--device {name!r} is not a torch device ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name} asks for a GPU, but torch {torch.__version__} sees none "
                             f"(CUDA build: {torch.version.cuda}); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise InputError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return device


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def _tf32_flags() -> list[tuple[object, str]]:
    """The (object, attribute) pairs that switch TF32 for matmuls and convolutions (the new API where torch has it:
    mixing it with the legacy allow_tf32 flags raises)."""
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        return [(backends.cuda.matmul, "fp32_precision"), (backends.cudnn.conv, "fp32_precision")]
    return [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")]


def _tf32_value(flag: tuple[object, str], on: bool):
    return ("tf32" if on else "ieee") if flag[1] == "fp32_precision" else on


@contextlib.contextmanager
def precision_scope(precision: str, device: str | torch.device):
    """Run the block in ``precision`` on ``device``:

    * ``fp32``: float32 everywhere, TF32 off;
    * ``tf32``: float32 tensors, TF32 matmuls and convolutions on CUDA (on a CPU the same as fp32);
    * ``bf16``: ``torch.autocast`` to bfloat16 on the device (weights, optimizer state and accumulations stay
      float32; what autocast leaves in float32 may use TF32 on CUDA).

    The global TF32 flags are restored on exit."""
    check_precision(precision)
    device = torch.device(device)
    flags = _tf32_flags()
    saved = [getattr(obj, name) for obj, name in flags]
    try:
        for flag in flags:
            setattr(*flag, _tf32_value(flag, precision != "fp32"))
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        for (obj, name), value in zip(flags, saved):
            setattr(obj, name, value)


def device_record(device: str | torch.device) -> dict:
    """What a timing or a sample depends on beyond the CPU: the device, and for a GPU its name, memory, compute
    capability, the CUDA runtime, cuDNN and the driver."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"device": str(device)}
    props = torch.cuda.get_device_properties(device)
    return {"device": str(device), "gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}", "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "driver": driver_version()}


@functools.lru_cache(maxsize=1)
def driver_version() -> str:
    """The NVIDIA driver (nvidia-smi), else the CUDA driver API version torch reports, else unknown."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
        return out.stdout.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    try:
        version = torch._C._cuda_getDriverVersion()  # e.g. 13000 for CUDA 13.0
        return f"CUDA driver API {version // 1000}.{version % 1000 // 10}"
    except (AttributeError, RuntimeError):
        return "unknown"
