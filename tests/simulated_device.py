"""A second device on a CPU-only machine, for tests that must catch device mixing without a GPU.

Inside ``simulated_device()``, a tensor moved or created on the ``meta`` device (``model.to("meta")``,
``torch.arange(n, device=x.device)``) is an ``OnDevice``: it reports ``device='meta'`` but keeps real CPU data, so
data-dependent code (``nonzero``, ``.item()``, routing) runs as it would on a GPU. Every aten op then checks its
tensor arguments as CUDA does: a plain CPU tensor (other than a 0-dim scalar, or an index of ``aten.index``) next
to an ``OnDevice`` one raises ``DeviceMixError`` naming the op; so does a CPU generator used for a device factory.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

SIMULATED = torch.device("meta")
# Ops that accept CPU tensors next to device tensors on CUDA too (indices of advanced indexing, cross-device copies).
MIXING_ALLOWED = {"aten::index.Tensor", "aten::index_put_", "aten::_index_put_impl_", "aten::copy_",
                  "aten::_to_copy", "aten::to.device", "aten::_copy_from", "aten::lift_fresh",
                  "aten::_has_compatible_shallow_copy_type", "aten::set_"}


class DeviceMixError(RuntimeError):
    """An op got tensors on two devices (what CUDA would raise)."""


class OnDevice(torch.Tensor):
    """A CPU tensor that says it lives on the simulated device."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                  storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                  layout=elem.layout, device=SIMULATED,
                                                  requires_grad=elem.requires_grad)
        out.elem = elem
        return out

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs)

    def data_ptr(self) -> int:
        return self.elem.data_ptr()

    def tolist(self):  # a device-to-host copy, as on CUDA
        return self.elem.tolist()

    def __repr__(self) -> str:
        return f"OnDevice({self.elem!r})"


def _is_cpu_operand(value) -> bool:
    return (isinstance(value, torch.Tensor) and not isinstance(value, OnDevice) and value.device.type == "cpu"
            and value.dim() > 0)


def _unwrap(value):
    return value.elem if isinstance(value, OnDevice) else value


def _wrap(value):
    return OnDevice(value) if isinstance(value, torch.Tensor) and not isinstance(value, OnDevice) else value


class _Mode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs)


def _dispatch(func, args, kwargs):
    """Run ``func`` on the CPU data; check and re-wrap as the simulated device would."""
    if True:
        kwargs = dict(kwargs or {})
        name = func._schema.name + (f".{func._schema.overload_name}" if func._schema.overload_name else "")
        flat, _ = tree_flatten((args, kwargs))
        on_device = any(isinstance(v, OnDevice) for v in flat)
        target = kwargs.get("device")
        to_device = target is not None and torch.device(target).type == SIMULATED.type
        if to_device:
            generator = kwargs.get("generator")
            if generator is not None and generator.device.type == "cpu":
                raise DeviceMixError(f"{name}: a CPU generator for a tensor on the device")
            kwargs["device"] = torch.device("cpu")
        elif target is not None and func._schema.name in ("aten::_to_copy", "aten::to"):
            on_device = False  # moved off the device: a real CPU tensor again
        if on_device and func._schema.name not in MIXING_ALLOWED and name not in MIXING_ALLOWED:
            mixed = [tuple(v.shape) for v in flat if _is_cpu_operand(v)]
            if mixed:
                raise DeviceMixError(f"{name}: CPU tensor(s) of shape {mixed} next to tensors on the device")
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if on_device and target is None or to_device:
            return tree_map(_wrap, out)
        return out


class _FromData(TorchFunctionMode):
    """``torch.tensor(data, device=...)`` copies to the device below Python dispatch: build it on the CPU and move
    it, so the simulated copy keeps the data."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if func in (torch.tensor, torch.as_tensor) and device is not None and \
                torch.device(device).type == SIMULATED.type:
            kwargs.pop("device")
            return func(*args, **kwargs).to(SIMULATED)
        return func(*args, **kwargs)


@contextlib.contextmanager
def simulated_device():
    """Yield the simulated device (``meta``); everything inside is checked for device mixing."""
    with _FromData(), _Mode():
        yield SIMULATED


def where(value) -> str:
    """"device" for an OnDevice tensor, else the tensor's real device type."""
    return "device" if isinstance(value, OnDevice) else value.device.type
