"""dit and dit-ft: the static DiT with fewer sampling steps (untouched, and fine-tuned with the shared recipe)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from ditpareto.errors import InputError
from ditpareto.spec.base import INTERVAL_SUFFIX, MethodOptions, MethodSpec, Vocabulary

if TYPE_CHECKING:
    from ditpareto.archs import DiTConfig, LatteConfig
    from ditpareto.study import SamplingSettings

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


def dit_macs_per_call(config: DiTConfig) -> int:
    """Closed-form MACs of one DiT forward for one image, or of one Latte forward for one clip (DiT's convention;
    the counter must agree)."""
    from ditpareto.archs import LatteConfig

    if isinstance(config, LatteConfig):
        return latte_macs_per_call(config)
    d, t, p = config.hidden_size, config.num_tokens, config.patch_size
    mlp = int(d * config.mlp_ratio)
    embed = config.in_channels * p * p * d * t + 256 * d + d * d  # patchify conv + timestep MLP
    per_block = (3 * d * d + d * d + 2 * d * mlp) * t + 2 * t * t * d + 6 * d * d
    final = 2 * d * d + d * p * p * config.out_channels * t
    return embed + config.depth * per_block + final


def latte_macs_per_call(config: LatteConfig) -> int:
    """Closed-form MACs of one Latte forward for one clip: F frames of T tokens; the spatial blocks' and the final
    layer's adaLN run once per frame, the temporal blocks' once per location."""
    d, t, f, p = config.hidden_size, config.num_tokens, config.num_frames, config.patch_size
    linear = 4 * d * d + 2 * d * int(d * config.mlp_ratio)  # qkv, proj, fc1, fc2 per token
    embed = f * config.in_channels * p * p * d * t + 256 * d + d * d
    spatial = f * (linear * t + 2 * t * t * d + 6 * d * d)
    temporal = t * (linear * f + 2 * f * f * d + 6 * d * d)
    final = f * (2 * d * d + d * p * p * config.out_channels * t)
    return embed + config.spatial_depth * (spatial + temporal) + final


DIT = MethodSpec("dit", "DiT (fewer steps)", "#000000", StepsVocabulary(), "none", step_budget=True,
                 macs_per_call=dit_macs_per_call)
DIT_FT = MethodSpec("dit-ft", "DiT fine-tuned (fewer steps)", "#8c8c8c", StepsVocabulary("dit-ft"), "shared",
                    step_budget=True, macs_per_call=dit_macs_per_call)
