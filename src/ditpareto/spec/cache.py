"""fora and l2c: feature caching across sampling steps, frozen DiT (``ditpareto.models.cache``).

A unit is one sublayer (attention or MLP) of one block. A cached unit adds the gated residual it produced at the
last step where it was computed and executes nothing; a block whose two units are both cached also skips its adaLN
modulation. Step 0 always computes everything.

* ``fora`` (Selvaraju et al. 2024): budget = the recompute interval n; units recompute at steps where
  step % n == 0 and are cached otherwise (option ``blocks``: only the blocks in [start, stop) cache).
* ``l2c`` (Ma et al. 2024, Learning-to-Cache): a router of one logit per (step, block, sublayer), trained with the
  DiT frozen; budget = the fraction of the routed units (steps 1..S-1) that compute, the highest logits first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ditpareto.errors import InputError
from ditpareto.respacing import SAMPLERS, space_timesteps
from ditpareto.spec.base import MethodOptions, MethodSpec, Vocabulary
from ditpareto.spec.dit import dit_macs_per_call

if TYPE_CHECKING:
    from ditpareto.archs import DiTConfig
    from ditpareto.study import SamplingSettings

CACHE_ONLY_IMAGES = "supports image DiTs only (a Latte base is a video model)"
ROUTED_STEPS = ("all", "odd")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------------------- fora
@dataclass(frozen=True)
class ForaOptions(MethodOptions):
    """``blocks``: the blocks that cache, as a range [start, stop) (null: every block); the others always compute."""

    method: ClassVar[str] = "fora"
    blocks: tuple | None = None

    @staticmethod
    def normalize(values: dict) -> dict:
        blocks = values["blocks"]
        if blocks is None:
            return values
        if not isinstance(blocks, (list, tuple)) or len(blocks) != 2 or not all(_is_int(b) for b in blocks) \
                or not 0 <= blocks[0] < blocks[1]:
            raise InputError(f"fora option blocks must be null or a block range [start, stop) with "
                             f"0 <= start < stop, got {blocks!r}")
        return {"blocks": (blocks[0], blocks[1])}

    def to_dict(self) -> dict:
        return {"blocks": None if self.blocks is None else list(self.blocks)}


def parse_interval(text) -> int:
    """The FORA recompute interval n >= 1 (an integer label: "1", "2", ...)."""
    if isinstance(text, bool):
        raise InputError(f"fora budget must be a recompute interval (an integer >= 1), got {text!r}")
    if _is_int(text):
        value = text
    else:
        try:
            value = int(str(text))
        except ValueError:
            raise InputError(f"fora budget must be a recompute interval (an integer >= 1), got {text!r}") from None
    if not 1 <= value <= 1000:
        raise InputError(f"fora budget {text!r} out of range: the recompute interval must be in [1, 1000]")
    return value


def computed_steps(steps: int, interval: int) -> int:
    """Steps at which FORA recomputes: 0, n, 2n, ... below ``steps``."""
    return math.ceil(steps / interval)


class ForaVocabulary(Vocabulary):
    name = "fora"
    options_type = ForaOptions
    budget_help = "recompute interval n (an integer >= 1): cached units recompute every n sampling steps"

    def parse_budget(self, text) -> int:
        return parse_interval(text)

    def budget_label(self, value) -> str:
        return str(self.parse_budget(value))

    def full_budget(self, settings: SamplingSettings) -> int:
        return 1

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """Share of the steps whose blocks compute, ceil(S / n) / S (= 1/n when n divides S), for caching every
        block; GMACs are counted."""
        return computed_steps(settings.steps, self.parse_budget(budget)) / settings.steps


# ----------------------------------------------------------------------------------------------------------- l2c
@dataclass(frozen=True)
class L2COptions(MethodOptions):
    """The router and its training (the DiT stays frozen; only the router's logits train, with Adam).

    ``sampler``/``sampler_steps``: the study's sampler and step count the router is trained for (one logit per
    routed step; sampling with other respaced timesteps is refused). Steps and batch are the fine-tune recipe's (the
    step count follows from the shared training MACs); ``lr``: the router's Adam learning rate (the recipe's is the
    DiT's);
    ``sparsity_weight``: lambda of loss = MSE(mixed output, full output) + lambda * mean(beta). ``routed_steps``:
    "all" routes steps 1..S-1; "odd" routes steps 1, 3, 5, ... only, the others computing fully, as the authors'
    train_router.py (a cached step then always reuses the step just before it, the pair its objective trains)."""

    method: ClassVar[str] = "l2c"
    sampler: str = "ddim"
    sampler_steps: int = 10
    lr: float = 0.05
    sparsity_weight: float = 0.01
    routed_steps: str = "odd"  # the authors' train_router.py (measured better than "all" at equal compute)

    @staticmethod
    def normalize(values: dict) -> dict:
        if values["sampler"] not in SAMPLERS:
            raise InputError(f"l2c option sampler must be one of {SAMPLERS}, got {values['sampler']!r}")
        steps = values["sampler_steps"]
        if not _is_int(steps) or steps < 2:
            raise InputError(f"l2c option sampler_steps must be an integer >= 2 (step 0 is never routed), "
                             f"got {steps!r}")
        try:
            space_timesteps(1000, values["sampler"], steps)
        except InputError as exc:
            raise InputError(f"l2c option sampler_steps is invalid for {values['sampler']}: {exc}") from None
        if not _is_number(values["lr"]) or values["lr"] <= 0:
            raise InputError(f"l2c option lr must be a finite number > 0, got {values['lr']!r}")
        if not _is_number(values["sparsity_weight"]) or values["sparsity_weight"] < 0:
            raise InputError(f"l2c option sparsity_weight must be a finite number >= 0, "
                             f"got {values['sparsity_weight']!r}")
        if values["routed_steps"] not in ROUTED_STEPS:
            raise InputError(f"l2c option routed_steps must be one of {ROUTED_STEPS}, got {values['routed_steps']!r}")
        values["lr"], values["sparsity_weight"] = float(values["lr"]), float(values["sparsity_weight"])
        return values


def parse_fraction(text) -> float:
    """The computed fraction of the routed units, in [0, 1] with at most two decimals."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InputError(f"l2c budget must be a computed fraction like '0.50', got {text!r}") from None
    if isinstance(text, bool) or not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError(f"l2c budget {text!r} out of range: the computed fraction must be in [0, 1]")
    if abs(round(value, 2) - value) > 1e-9:
        raise InputError(f"l2c budget {text!r} has more than two decimals: use a fraction like '0.50'")
    return round(value, 2)


def routed_step_list(steps: int, mode: str = "all") -> list[int]:
    """The sampler steps the router decides (0 = noisiest, never routed): 1..S-1, or the odd ones."""
    if mode not in ROUTED_STEPS:
        raise ValueError(f"routed steps must be one of {ROUTED_STEPS}, got {mode!r}")
    return list(range(1, steps, 2 if mode == "odd" else 1))


def computed_routed_units(fraction: float, routed_steps: int, depth: int) -> int:
    """How many routed units compute at ``fraction``: round half up of fraction x routed steps x D x 2."""
    return math.floor(fraction * routed_steps * depth * 2 + 0.5)


class L2CVocabulary(Vocabulary):
    name = "l2c"
    options_type = L2COptions
    budget_help = "fraction of the routed (step, block, sublayer) units computed, two decimals in [0, 1] ('0.50')"

    def parse_budget(self, text) -> float:
        return parse_fraction(text)

    def budget_label(self, value) -> str:
        return f"{self.parse_budget(value):.2f}"

    def full_budget(self, settings: SamplingSettings) -> float:
        return 1.0

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """Share of the block units computed over the trajectory, (S - R + R f) / S for the R routed steps of the
        default routed_steps (the others always compute); GMACs are counted."""
        steps = settings.steps
        routed = len(routed_step_list(steps, L2COptions().routed_steps))
        return (steps - routed + routed * self.parse_budget(budget)) / steps


# -------------------------------------------------------------------------------------------------- closed forms
def cache_macs_per_call(config: DiTConfig, row: Sequence[Sequence[bool]]) -> int:
    """Closed-form MACs of one cached DiT call for one image (DiT's convention): ``row[block] = (attention
    computes, MLP computes)``. The patch and timestep embeddings and the final layer always run; a block's adaLN
    (6 d^2) runs when either of its units computes; attention = qkv and proj (4 d^2 T) + 2 T^2 d; MLP = 2 d m T."""
    d, t, p = config.hidden_size, config.num_tokens, config.patch_size
    if len(row) != config.depth:
        raise ValueError(f"a schedule row has {len(row)} blocks, the model {config.depth}")
    mlp = int(d * config.mlp_ratio)
    embed = config.in_channels * p * p * d * t + 256 * d + d * d
    final = 2 * d * d + d * p * p * config.out_channels * t
    attention = 4 * d * d * t + 2 * t * t * d
    feedforward = 2 * d * mlp * t
    blocks = sum((6 * d * d if attn or ff else 0) + (attention if attn else 0) + (feedforward if ff else 0)
                 for attn, ff in row)
    return embed + blocks + final


def cache_macs_per_image(config: DiTConfig, rows: Sequence[Sequence[Sequence[bool]]], guided: bool) -> int:
    """Closed-form MACs per image of a trajectory under a schedule (``rows[step][block] = (attention, MLP)``);
    CFG doubles every call."""
    return (2 if guided else 1) * sum(cache_macs_per_call(config, row) for row in rows)


FORA = MethodSpec("fora", "FORA (feature cache)", "#882255", ForaVocabulary(), "none",
                  macs_per_call=dit_macs_per_call, video=False)
L2C = MethodSpec("l2c", "Learning-to-Cache", "#332288", L2CVocabulary(), "shared", macs_per_call=dit_macs_per_call,
                 video=False)
