"""What every method's spec is made of, without torch: its options (a frozen dataclass whose field defaults are the
only defaults), its budget vocabulary (parse, label, nominal compute) and the ``MethodSpec`` that names them with
the method's fine-tune mode, label and colour. One file per method in this package; ``ditpareto.spec.SPECS`` holds
them all, and every other registry (config schema, CLI choices, figures) is derived from it or checked against it
(tests/test_spec.py)."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from ditpareto.errors import InputError
from ditpareto.respacing import SAMPLERS

if TYPE_CHECKING:
    from ditpareto.study import SamplingSettings

# A step-count budget with this suffix ("10i") guides only the steps inside the guidance interval (Kynkäänniemi et
# al. 2024: the unconditional call only at middle noise levels); the other steps make one conditional call.
INTERVAL_SUFFIX = "i"
# "full@B": the model fine-tuned for budget B run at full compute (the method's parity point).
FULL_PREFIX = "full@"
# How a method fine-tunes: "none" (samples the base), "shared" (one fine-tune for all budgets), "per_budget".
FINETUNE_MODES_ALLOWED = ("none", "shared", "per_budget")

# "B+S": budget B sampled with sampler S instead of the study's (sampling.sampler): the sampler axis of the grid
# ("10+dpmpp-2m": 10 steps of DPM-Solver++(2M); "0.50+dpmpp-2m": a method's budget 0.50 with it).
SAMPLER_QUALIFIER = "+"


def split_sampler(text) -> tuple[str, str | None]:
    """(budget label, its sampler or None for the study's): "10+dpmpp-2m" -> ("10", "dpmpp-2m"). InputError names an
    unknown sampler."""
    label, _, sampler = str(text).partition(SAMPLER_QUALIFIER)
    if not sampler:
        return label, None
    if sampler not in SAMPLERS:
        raise InputError(f"budget {text!r} names sampler {sampler!r}; choose one of {SAMPLERS}")
    return label, sampler


def with_sampler(label: str, sampler: str | None) -> str:
    """The budget label of ``label`` sampled with ``sampler`` (None: the study's)."""
    return f"{label}{SAMPLER_QUALIFIER}{sampler}" if sampler else label


class FullCompute(NamedTuple):
    """Budget "full@B": the model fine-tuned for budget ``of`` run at full compute (the method's parity point)."""

    of: object


def split_full(text) -> tuple[bool, object]:
    """(is "full@B", B) for a budget label or value."""
    if isinstance(text, FullCompute):
        return True, text.of
    text_s = str(text)
    if text_s.startswith(FULL_PREFIX):
        return True, text_s[len(FULL_PREFIX):]
    return False, text


@dataclass(frozen=True)
class MethodOptions:
    """A method's options (config ``methods.<name>.options``), validated once into a frozen, typed object whose
    field defaults are the only defaults. ``to_dict`` is the JSON form (records, run ids, ``--options``)."""

    method: ClassVar[str] = ""

    @classmethod
    def parse(cls, raw: MethodOptions | dict | None) -> MethodOptions:
        """Defaults filled, types and ranges checked; InputError names an unknown or bad key."""
        if isinstance(raw, cls):
            return raw
        if raw is not None and not isinstance(raw, dict):
            raise InputError(f"{cls.method} options must be a mapping, got {raw!r}")
        raw = dict(raw or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise InputError(f"unknown {cls.method} options {unknown}; known: {sorted(names)}")
        values = {f.name: copy.deepcopy(raw[f.name]) if f.name in raw else
                  (f.default_factory() if f.default is dataclasses.MISSING else f.default)
                  for f in dataclasses.fields(cls)}
        return cls(**cls.normalize(values))

    @staticmethod
    def normalize(values: dict) -> dict:
        """The checked values (the subclass's rules), converted to their field types."""
        return values

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}


class Vocabulary:
    """Budgets and options of one method (``name``): parse, label, nominal compute."""

    name: str = ""
    budget_help: str = ""
    options_type: type[MethodOptions] = MethodOptions

    def __init__(self, name: str | None = None):
        if name:
            self.name = name

    def parse_budget(self, text: str):
        raise NotImplementedError

    def budget_label(self, value) -> str:
        raise NotImplementedError

    def parse_options(self, options: MethodOptions | dict | None) -> MethodOptions:
        """Validated options with defaults filled (``options_type``); InputError names an unknown or bad key."""
        return self.options_type.parse(options)

    def full_budget(self, settings: SamplingSettings):
        """The budget that spends the static DiT's compute at ``settings.steps``."""
        raise NotImplementedError

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """The budget's intended compute relative to the static DiT at ``settings.steps`` (for labels only)."""
        raise NotImplementedError



_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class MethodSpec:
    """A method as the study knows it: everything but its torch model and sampling plan (``ditpareto.methods``)."""

    name: str  # path-safe: the config key, the {method} wildcard, the CLI choice
    label: str  # in figures and tables
    color: str  # in figures (Okabe & Ito's colour-blind-safe set, no two methods alike)
    vocabulary: Vocabulary  # budgets and options
    finetune_mode: str  # FINETUNE_MODES_ALLOWED
    step_budget: bool = False  # the budget is the step count (the static ladders)
    official: bool = False  # its authors' released checkpoints can replace the pipeline's fine-tunes
    video: bool = True  # it runs on a Latte base too (the video study)
    # Closed-form MACs of one network call for one image (DiT's convention); the executed-ops counter must agree.
    macs_per_call: Callable | None = None

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"method name {self.name!r} is not path-safe (lower case, digits, '-')")
        if self.finetune_mode not in FINETUNE_MODES_ALLOWED:
            raise ValueError(f"method {self.name}: fine-tune mode {self.finetune_mode!r} not in "
                             f"{FINETUNE_MODES_ALLOWED}")
        if self.vocabulary.name != self.name:
            raise ValueError(f"method {self.name}: its vocabulary is named {self.vocabulary.name!r}")

    @property
    def options_type(self) -> type[MethodOptions]:
        return self.vocabulary.options_type
