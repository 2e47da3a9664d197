"""Method registry: keys are path-safe and serve as wildcard values, CLI choices and schema enums."""

from __future__ import annotations

from ditpareto.errors import InputError
from ditpareto.methods.base import Method
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.plans import SamplingPlan
from ditpareto.methods.dit import FineTunedDiT, StaticDiT
from ditpareto.methods.dydit import DyDiTMethod
from ditpareto.methods.flexdit import FlexDiTMethod
from ditpareto.methods.flexidit import FlexiDiTMethod

METHODS: dict[str, Method] = {m.name: m for m in (StaticDiT(), FineTunedDiT(), DyDiTMethod(), FlexDiTMethod(), FlexiDiTMethod())}

__all__ = ["METHODS", "Method", "ModelSpec", "SamplingPlan", "SamplingSettings", "get_method"]


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]
