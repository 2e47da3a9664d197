"""The method registry: one spec per method (``ditpareto.spec.<method>``), and every per-method table derived from it.

Adding a method is one spec file here, one model file (``ditpareto.models``) and one method file
(``ditpareto.methods``), registered in ``SPECS`` and ``ditpareto.methods.METHODS``; tests/test_spec.py fails if the
config schema, the CLI, the figures or the methods disagree with this registry."""

from __future__ import annotations

from ditpareto.errors import InputError
from ditpareto.spec.base import (
    FINETUNE_MODES_ALLOWED, FULL_PREFIX, INTERVAL_SUFFIX, SAMPLER_QUALIFIER, FullCompute, MethodOptions, MethodSpec,
    Vocabulary, split_full, split_sampler, with_sampler,
)
from ditpareto.spec.dydit import DYDIT
from ditpareto.spec.flexdit import FLEXDIT
from ditpareto.spec.flexidit import FLEXIDIT
from ditpareto.spec.dit import DIT, DIT_FT
from ditpareto.spec.tome import TOME
from ditpareto.spec.cache import FORA, L2C

# In figure and table order: the static baselines first. Filled by ``register``, with every table derived from it.
SPECS: dict[str, MethodSpec] = {}
FINETUNE_MODES: dict[str, str] = {}
METHOD_LABELS: dict[str, str] = {}
METHOD_COLORS: dict[str, str] = {}
STEP_BUDGET_METHODS: list[str] = []  # the budget is the step count
OFFICIAL_METHODS: list[str] = []  # its authors' released checkpoints are importable


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry and to every table derived from it (updated in place: the modules that
    imported a table see the new method)."""
    if spec.name in SPECS:
        raise ValueError(f"method {spec.name!r} is registered already")
    if spec.color in METHOD_COLORS.values():
        raise ValueError(f"method {spec.name}: colour {spec.color} is taken")
    SPECS[spec.name] = spec
    FINETUNE_MODES[spec.name] = spec.finetune_mode
    METHOD_LABELS[spec.name] = spec.label
    METHOD_COLORS[spec.name] = spec.color
    STEP_BUDGET_METHODS.extend([spec.name] if spec.step_budget else [])
    OFFICIAL_METHODS.extend([spec.name] if spec.official else [])
    return spec


for _spec in (DIT, DIT_FT, FLEXIDIT, DYDIT, FLEXDIT, TOME, FORA, L2C):
    register(_spec)


def get_spec(name: str) -> MethodSpec:
    if name not in SPECS:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(sorted(SPECS))}")
    return SPECS[name]


def get_vocabulary(name: str) -> Vocabulary:
    return get_spec(name).vocabulary


__all__ = [
    "FINETUNE_MODES", "FINETUNE_MODES_ALLOWED", "FULL_PREFIX", "INTERVAL_SUFFIX", "METHOD_COLORS", "METHOD_LABELS",
    "OFFICIAL_METHODS", "SAMPLER_QUALIFIER", "SPECS", "STEP_BUDGET_METHODS", "FullCompute", "MethodOptions",
    "MethodSpec", "Vocabulary", "get_spec", "get_vocabulary", "register", "split_full", "split_sampler",
    "with_sampler",
]
