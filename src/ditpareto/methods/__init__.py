"""The methods' torch side (model loading, conversion, fine-tuning, sampling plans), one per spec in
``ditpareto.spec.SPECS`` (its name, budgets, options, fine-tune mode, label, colour and MAC formula)."""

from __future__ import annotations

from ditpareto.errors import InputError
from ditpareto.methods.base import Method
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.plans import SamplingPlan
from ditpareto.spec import get_spec
from ditpareto.methods.dit import FineTunedDiT, StaticDiT
from ditpareto.methods.dydit import DyDiTMethod
from ditpareto.methods.flexdit import FlexDiTMethod
from ditpareto.methods.flexidit import FlexiDiTMethod
from ditpareto.methods.tome import ToMeMethod
from ditpareto.methods.cache import ForaMethod, L2CMethod

METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method's torch side; its spec (``ditpareto.spec.register``) must be registered first, with the same
    vocabulary class."""
    spec = get_spec(method.name)
    if not isinstance(method, type(spec.vocabulary)):
        raise ValueError(f"method {method.name}: {type(method).__name__} does not implement its spec's "
                         f"{type(spec.vocabulary).__name__}")
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered already")
    METHODS[method.name] = method
    return method


for _method in (StaticDiT(), FineTunedDiT(), DyDiTMethod(), FlexDiTMethod(), FlexiDiTMethod(), ToMeMethod(), ForaMethod(),
                L2CMethod()):
    register_method(_method)

__all__ = ["METHODS", "Method", "ModelSpec", "SamplingPlan", "SamplingSettings", "get_method", "register_method"]


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]
