"""What a method's budgets and options mean, without torch: parsing, labels and nominal compute. The workflow
checks a study with these alone; each method class (``ditpareto.methods``) inherits its vocabulary from here."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from ditpareto.archs import (
    FLEXIDIT_LN_AFFINE, FLEXIDIT_POS_COORDS, FLEXIDIT_TOKENIZERS, FLEXIDIT_VARIANTS, PF_MODES, FlexLayout,
)
from ditpareto.errors import InputError
from ditpareto.respacing import SAMPLERS, space_timesteps
from ditpareto.study import FULL_PREFIX, INTERVAL_SUFFIX, SamplingSettings

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


#################################################################################
#                          dit, dit-ft: fewer steps                             #
#################################################################################


class StepBudget(NamedTuple):
    """A step-count budget: ``steps`` DDIM steps, guided at every step or (``interval``) only inside the guidance
    interval (the option ``guidance_interval``)."""

    steps: int
    interval: bool = False


# Guidance only for noise levels sigma = sqrt((1 - abar) / abar) in (low, high]: Kynkäänniemi et al. 2024's
# interval for SD-XL (EDM2: (0.28, 2.90]). At 10 DDIM steps of the DiT schedule it guides 5 of the 10 steps.
GUIDANCE_INTERVAL = (0.28, 5.42)


@dataclass(frozen=True)
class StepsOptions(MethodOptions):
    """The step ladders' options (dit, dit-ft)."""

    method: ClassVar[str] = "dit"
    guidance_interval: tuple = GUIDANCE_INTERVAL

    @staticmethod
    def normalize(values: dict) -> dict:
        interval = values["guidance_interval"]
        try:
            low, high = (float(v) for v in interval)
        except (TypeError, ValueError):
            raise InputError(f"dit option guidance_interval={interval!r} is invalid: two noise levels [low, high]"
                             ) from None
        if not (math.isfinite(high) and 0 <= low < high):
            raise InputError(f"dit option guidance_interval={interval!r} is invalid: noise levels with "
                             "0 <= low < high (sigma = sqrt((1 - alpha_bar) / alpha_bar))")
        return {"guidance_interval": (low, high)}

    def to_dict(self) -> dict:
        return {"guidance_interval": list(self.guidance_interval)}


class StepsVocabulary(Vocabulary):
    name = "dit"
    options_type = StepsOptions
    budget_help = ("number of sampling steps (an integer; DDIM needs an integer stride giving exactly that many), "
                   f"with '{INTERVAL_SUFFIX}' to guide only inside the guidance interval ('10{INTERVAL_SUFFIX}')")

    def parse_budget(self, text) -> StepBudget:
        if isinstance(text, StepBudget):
            return text
        label = str(text)
        interval = label.endswith(INTERVAL_SUFFIX)
        try:
            steps = int(label.removesuffix(INTERVAL_SUFFIX))
        except ValueError:
            raise InputError(f"dit budget must be an integer step count (with '{INTERVAL_SUFFIX}' for the guidance "
                             f"interval), got {text!r}") from None
        if not 1 <= steps <= 1000:
            raise InputError(f"dit budget {steps} out of range: step counts must be in [1, 1000]")
        return StepBudget(steps, interval)

    def budget_label(self, value) -> str:
        budget = self.parse_budget(value)
        return f"{budget.steps}{INTERVAL_SUFFIX if budget.interval else ''}"

    def full_budget(self, settings: SamplingSettings) -> StepBudget:
        return StepBudget(settings.steps)

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """Steps over the full count (the guidance interval's saved calls are counted in GMACs)."""
        return self.parse_budget(budget).steps / settings.steps


#################################################################################
#                                     DyDiT                                     #
#################################################################################

def _option(default, kind: type, check, meaning: str):
    """A DyDiT option field: default, type, range check and meaning (the error message)."""
    return field(default=default, metadata={"kind": kind, "check": check, "meaning": meaning})


@dataclass(frozen=True)
class DyDiTOptions(MethodOptions):
    """Defaults are the spec's / released scripts' values."""

    method: ClassVar[str] = "dydit"
    mlp_groups: int | None = _option(None, int, lambda v: v >= 1,
                                     "MLP channel groups per block (null: as many as heads, the paper)")
    width_bias_init: float = _option(15.0, float, math.isfinite, "initial bias of head/group routers (spec +15)")
    token_bias_init: float = _option(35.0, float, math.isfinite, "initial last bias of token routers (spec +35)")
    router_init: str = _option("xavier", str, lambda v: v in ("xavier", "zero"),
                               "router weights: xavier (spec) or zero")
    router_seed: int = _option(0, int, lambda v: v >= 0, "seed of the router initialisation")
    tau: float = _option(5.0, float, lambda v: v > 0, "Gumbel-sigmoid temperature (spec 5)")
    flops_weight: float = _option(2.0, float, lambda v: v >= 0, "weight of the FLOPs loss (scripts 2; paper 1)")
    hold_steps: int = _option(100, int, lambda v: v >= 0, "steps with target 1.0 before the ramp (scripts 100)")
    ramp_steps: int = _option(1000, int, lambda v: v >= 0,
                              "target decays linearly 1 -> λ until this step (scripts 1000)")
    complete_steps: int = _option(0, int, lambda v: v >= 0,
                                  "steps with the complete-model loss (paper S/B 0, XL 30k)")
    noise_anneal_steps: int = _option(0, int, lambda v: v >= 0, "0: constant Gumbel noise (spec); N: noise scale "
                                      "1 -> 0 over N steps (toy-scale option)")
    t_bins: int = _option(4, int, lambda v: v >= 1, "stratified timestep bins per batch (scripts 4; 1 = uniform)")
    router_lr_scale: float = _option(1.0, float, lambda v: v > 0, "router learning rate = lr x this (spec 1)")
    flops_samples: int = _option(1, int, lambda v: v >= 1, "real samples (seed 0) whose sampling is counted for MACs")

    @staticmethod
    def normalize(values: dict) -> dict:
        out = {}
        for f in dataclasses.fields(DyDiTOptions):
            kind, check, value = f.metadata["kind"], f.metadata["check"], values[f.name]
            if value is not None or f.default is not None:
                ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
                if isinstance(value, bool) or not ok or not check(kind(value)):
                    raise InputError(f"dydit option {f.name}={value!r} is invalid: {f.metadata['meaning']}")
                value = kind(value)
            out[f.name] = value
        return out


def parse_lambda(text) -> float:
    """λ in (0, 1]; anything else is an InputError."""
    try:
        value = float(str(text))
    except ValueError:
        raise InputError(f"dydit budget must be a FLOPs target λ in (0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise InputError(f"dydit budget λ={text!r} out of range: the FLOPs target must be in (0, 1]")
    return value


class DyDiTVocabulary(Vocabulary):
    name = "dydit"
    options_type = DyDiTOptions
    budget_help = "FLOPs target λ in (0, 1] with two decimals, e.g. 0.50 (one fine-tune per λ)"

    def parse_budget(self, text):
        """λ, or ``FullCompute(λ)`` for "full@λ" (the λ model with its routers bypassed)."""
        full, inner = split_full(text)
        return FullCompute(parse_lambda(inner)) if full else parse_lambda(text)

    def budget_label(self, value) -> str:
        value = self.parse_budget(value)
        if isinstance(value, FullCompute):
            return f"{FULL_PREFIX}{value.of:.2f}"
        return f"{value:.2f}"

    def full_budget(self, settings: SamplingSettings) -> float:
        return 1.0

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        budget = self.parse_budget(budget)
        return 1.0 if isinstance(budget, FullCompute) else budget


#################################################################################
#                                    FlexDiT                                    #
#################################################################################

NUM_TIMESTEPS = 1000
LAYOUT_KEYS = ("pf", "sdtms", "sparse", "dense", "top")


@dataclass(frozen=True)
class FlexDiTOptions(MethodOptions):
    method: ClassVar[str] = "flexdit"
    # null: default_layout(depth) (28 -> 2 PF + 4 x [1,3,1,1] + 2 top; dit-tiny-2 -> 1 PF + [1,0,1,0] + 1 top).
    layout: dict | None = None
    stages: int = 4
    # "mean_first": the cheap exact Poolingformer; "per_token": the paper's cost (same function).
    pf_mode: str = "mean_first"
    # false: W1 on the s x s sparse tokens before upsampling (identical output, cheaper); true: as the code.
    w1_after_upsample: bool = False
    # Ablation (spec section 1.6): re-add sin-cos tables after pooling and after Dense-Rec.
    pos_reinject: bool = False

    @staticmethod
    def normalize(out: dict) -> dict:
        if out["layout"] is not None:
            if not isinstance(out["layout"], dict) or set(out["layout"]) != set(LAYOUT_KEYS):
                raise InputError(f"flexdit option layout must be null or a mapping with keys {list(LAYOUT_KEYS)}, "
                                 f"got {out['layout']!r}")
            out["layout"] = FlexLayout(**out["layout"]).to_dict()
        stages = out["stages"]
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= NUM_TIMESTEPS:
            raise InputError(f"flexdit option stages must be an integer in [1, {NUM_TIMESTEPS}], got {stages!r}")
        if out["pf_mode"] not in PF_MODES:
            raise InputError(f"flexdit option pf_mode must be one of {list(PF_MODES)}, got {out['pf_mode']!r}")
        for key in ("w1_after_upsample", "pos_reinject"):
            if not isinstance(out[key], bool):
                raise InputError(f"flexdit option {key} must be true or false, got {out[key]!r}")
        return out


_BUDGET = re.compile(r"^([0-9]+(?:\.[0-9]+)?)-([0-9]+(?:\.[0-9]+)?)$")


class FlexBudget(NamedTuple):
    r_min: float
    r_max: float


#################################################################################
#                               Density schedule                                #
#################################################################################


def stage_of(t: int, stages: int, num_timesteps: int = NUM_TIMESTEPS) -> int:
    """Density stage of an original timestep: 0 near data ... stages-1 near noise."""
    return min(stages - 1, stages * int(t) // num_timesteps)


def stage_bounds(stage: int, stages: int, num_timesteps: int = NUM_TIMESTEPS) -> tuple[int, int]:
    """[lo, hi) of the original timesteps whose stage is ``stage``."""
    lo = -(-stage * num_timesteps // stages)
    hi = num_timesteps if stage == stages - 1 else -(-(stage + 1) * num_timesteps // stages)
    return lo, hi


def stage_rates(budget: FlexBudget, stages: int) -> list[float]:
    """Pruning rate r_k of each stage, linear from r_min (stage 0) to r_max (last stage)."""
    if stages == 1:
        return [budget.r_min]
    return [budget.r_min + (budget.r_max - budget.r_min) * k / (stages - 1) for k in range(stages)]


def stage_sides(budget: FlexBudget, grid: int, stages: int) -> list[int]:
    """Sparse-grid side s_k of each stage on a ``grid`` x ``grid`` token grid."""
    n = grid * grid
    return [min(grid, max(1, math.floor(math.sqrt(n * (1 - r)) + 0.5))) for r in stage_rates(budget, stages)]


class FlexDiTVocabulary(Vocabulary):
    name = "flexdit"
    options_type = FlexDiTOptions
    budget_help = "pruning-rate range RMIN-RMAX, two decimals, 0 < RMIN <= RMAX <= 1 (e.g. 0.61-0.86)"

    def parse_budget(self, text):
        """The range, or ``FullCompute(range)`` for "full@RMIN-RMAX" (that model with every stage at the full grid)."""
        full, inner = split_full(text)
        if full:
            return FullCompute(self._parse_range(inner))
        return self._parse_range(text)

    def _parse_range(self, text) -> FlexBudget:
        if isinstance(text, (tuple, list)) and len(text) == 2:
            values = [float(v) for v in text]
        else:
            match = _BUDGET.match(str(text).strip())
            if not match:
                raise InputError(f"flexdit budget must be RMIN-RMAX, e.g. 0.61-0.86, got {text!r}")
            values = [float(v) for v in match.groups()]
        if any(abs(round(v, 2) - v) > 1e-9 for v in values):
            raise InputError(f"flexdit budget {text!r}: write the pruning rates with at most two decimals")
        r_min, r_max = (round(v, 2) for v in values)
        if not 0 < r_min <= r_max <= 1:
            raise InputError(f"flexdit budget {text!r}: pruning rates need 0 < r_min <= r_max <= 1")
        return FlexBudget(r_min, r_max)

    def budget_label(self, value) -> str:
        budget = self.parse_budget(value)
        if isinstance(budget, FullCompute):
            return f"{FULL_PREFIX}{budget.of.r_min:.2f}-{budget.of.r_max:.2f}"
        return f"{budget.r_min:.2f}-{budget.r_max:.2f}"

    def full_budget(self, settings: SamplingSettings) -> FlexBudget:
        """The densest budget: r = 0.01 rounds to the full grid for grids up to 99 x 99 (PF still saves compute)."""
        return FlexBudget(0.01, 0.01)

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """The mean sparse-token density 1 - r_k over the 4 default stages (a label; FLOPs are counted separately)."""
        budget = self.parse_budget(budget)
        if isinstance(budget, FullCompute):
            return 1.0
        rates = stage_rates(budget, FlexDiTOptions().stages)
        return 1 - sum(rates) / len(rates)


#################################################################################
#                                    FlexiDiT                                   #
#################################################################################

@dataclass(frozen=True)
class FlexiDiTOptions(MethodOptions):
    method: ClassVar[str] = "flexidit"
    variant: str = "shared"  # "shared" (paper's ImageNet choice) or "lora" (frozen base, §1.8)
    # "flexible" (one PI-resized kernel, §1.3) or "separate" (one per size); None: flexible, separate for lora
    tokenizer: str | None = None
    weak_patch_size: int | None = None  # None: 2 x the base patch
    pos_coords: str = "corner"  # coarse-patch position: "corner" (PixArt-style) or "centre" (§1.5, UNVERIFIED)
    ln_affine: str = "all"  # patch-size-dependent LN affine after "all" LNs, the "final" one, or "none" (§1.6)
    lora_rank: int = 8  # LoRA variant only (paper: 32 for XL-sized models)
    weak_ratio: float = 0.5  # share of fine-tuning steps at the weak patch size (shared variant; LoRA: weak only)
    distill_weight: float = 0.0  # weight of MSE to the frozen base at the base patch size on weak steps (§2.3)
    patch_lr_scale: float = 1.0  # LR multiplier of the weak path's tokenizer and de-tokenizer (our addition; 1 = off)
    # Bootstrapped-MMD exposure-bias term (FlexiDiT paper App. B.1, C.2); the paper gives none of these values.
    mmd_weight: float = 0.0  # λ of the MMD² term added to the loss (0 = off)
    mmd_every: int = 4  # added on every k-th optimizer step (step counter, continues on resume)
    mmd_sampler: str = "ddim"  # sampler of the chain (eta 0 for ddim), as the study's sampler
    mmd_sampler_steps: int = 10  # respaced grid the chain runs on (the study samples with DDIM 10)
    mmd_chain_steps: int = 2  # chain length t1 -> t2 in grid steps (fixed, so its compute is fixed)
    mmd_grad_steps: int = 1  # gradients flow through the last N chain steps only (the rest under no_grad)
    mmd_batch: int = 32  # samples per MMD set (the first ones of the training batch)
    # RBF bandwidths σ, on squared distances divided by the dimension
    mmd_bandwidths: list = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])

    @staticmethod
    def normalize(out: dict) -> dict:
        if out["tokenizer"] is None:
            out["tokenizer"] = "separate" if out["variant"] == "lora" else "flexible"
        for key, allowed in (("variant", FLEXIDIT_VARIANTS), ("pos_coords", FLEXIDIT_POS_COORDS),
                             ("ln_affine", FLEXIDIT_LN_AFFINE), ("tokenizer", FLEXIDIT_TOKENIZERS)):
            if out[key] not in allowed:
                raise InputError(f"flexidit option {key} must be one of {allowed}, got {out[key]!r}")
        pw = out["weak_patch_size"]
        if pw is not None and (not isinstance(pw, int) or isinstance(pw, bool) or pw < 2):
            raise InputError(f"flexidit option weak_patch_size must be null or an integer >= 2, got {pw!r}")
        if not isinstance(out["lora_rank"], int) or out["lora_rank"] < 1:
            raise InputError(f"flexidit option lora_rank must be a positive integer, got {out['lora_rank']!r}")
        for key in ("weak_ratio", "distill_weight", "patch_lr_scale"):
            if not isinstance(out[key], (int, float)) or isinstance(out[key], bool) or out[key] < 0:
                raise InputError(f"flexidit option {key} must be a number >= 0, got {out[key]!r}")
        if out["weak_ratio"] > 1:
            raise InputError(f"flexidit option weak_ratio must be in [0, 1], got {out['weak_ratio']}")
        _check_mmd_options(out)
        return out


class Budget(NamedTuple):
    """Fractions of sampling steps run at the weak patch size: conditional and guidance branch."""

    cond: float
    uncond: float


def weak_steps(fraction: float, steps: int) -> int:
    """Number of weak steps: round half up of fraction * steps."""
    return math.floor(fraction * steps + 0.5)


def _check_mmd_options(out: dict) -> None:
    """Validate the mmd_* options in place (bandwidths become a fresh list of floats)."""
    def integer(key: str, low: int) -> int:
        value = out[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"flexidit option {key} must be an integer >= {low}, got {value!r}")
        return value

    w = out["mmd_weight"]
    if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
        raise InputError(f"flexidit option mmd_weight must be a finite number >= 0, got {w!r}")
    integer("mmd_every", 1)
    integer("mmd_batch", 2)
    if out["mmd_sampler"] not in SAMPLERS:
        raise InputError(f"flexidit option mmd_sampler must be one of {SAMPLERS}, got {out['mmd_sampler']!r}")
    steps = integer("mmd_sampler_steps", 1)
    try:
        space_timesteps(1000, out["mmd_sampler"], steps)
    except InputError as exc:
        raise InputError(f"flexidit option mmd_sampler_steps is invalid for {out['mmd_sampler']}: {exc}") from None
    chain = integer("mmd_chain_steps", 1)
    if chain >= steps:
        raise InputError(f"flexidit option mmd_chain_steps must be < mmd_sampler_steps ({steps}), got {chain}")
    grad = integer("mmd_grad_steps", 1)
    if grad > chain:
        raise InputError(f"flexidit option mmd_grad_steps must be <= mmd_chain_steps ({chain}), got {grad}")
    bw = out["mmd_bandwidths"]
    if (not isinstance(bw, (list, tuple)) or not bw
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b > 0
                       for b in bw)):
        raise InputError(f"flexidit option mmd_bandwidths must be a non-empty list of positive numbers, got {bw!r}")
    out["mmd_bandwidths"] = [float(b) for b in bw]


class FlexiDiTVocabulary(Vocabulary):
    name = "flexidit"
    options_type = FlexiDiTOptions
    budget_help = "fraction of steps at the weak patch size, two decimals ('0.50'), or 'C-U' with U >= C"

    def parse_budget(self, text) -> Budget:
        if isinstance(text, Budget):
            parts = list(text)
        else:
            try:
                parts = [float(part) for part in str(text).split("-")] if "-" in str(text)[1:] else [float(text)]
            except ValueError:
                raise InputError(f"flexidit budget must be a weak-step fraction like '0.50' or '0.90-1.00', "
                                 f"got {text!r}") from None
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or not all(0.0 <= v <= 1.0 for v in parts):
            raise InputError(f"flexidit budget {text!r} out of range: weak-step fractions must be in [0, 1]")
        if parts[1] < parts[0]:
            raise InputError(f"flexidit budget {text!r}: the guidance branch must stay weak at least as long as "
                             "the conditional one (U >= C)")
        return Budget(float(parts[0]), float(parts[1]))

    def budget_label(self, value) -> str:
        b = self.parse_budget(value)
        return f"{b.cond:.2f}" if b.cond == b.uncond else f"{b.cond:.2f}-{b.uncond:.2f}"

    def full_budget(self, settings: SamplingSettings) -> Budget:
        return Budget(0.0, 0.0)

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """Token-count estimate (weak call = 1/4 of a base call, the default 2x patch); GMACs are counted."""
        b, steps, r = self.parse_budget(budget), settings.steps, 0.25
        per_branch = [steps - (1 - r) * weak_steps(f, steps) for f in (b.cond, b.uncond)]
        return (sum(per_branch) / 2 if settings.guided else per_branch[0]) / steps


VOCABULARIES: dict[str, Vocabulary] = {
    "dit": StepsVocabulary(), "dit-ft": StepsVocabulary("dit-ft"), "dydit": DyDiTVocabulary(),
    "flexdit": FlexDiTVocabulary(), "flexidit": FlexiDiTVocabulary(),
}


def get_vocabulary(name: str) -> Vocabulary:
    if name not in VOCABULARIES:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(sorted(VOCABULARIES))}")
    return VOCABULARIES[name]
