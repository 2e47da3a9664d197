"""FlexDiT (Chang et al.): Poolingformer, sparse-dense token modules and a timestep density schedule, one fine-tune
per pruning-rate range."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from ditpareto.archs import PF_MODES, FlexLayout, LatteConfig
from ditpareto.errors import InputError
from ditpareto.spec.base import FULL_PREFIX, FullCompute, MethodOptions, MethodSpec, Vocabulary, split_full

if TYPE_CHECKING:
    from ditpareto.archs import DiTConfig
    from ditpareto.study import SamplingSettings

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


def flexdit_macs_per_call(config: DiTConfig, layout: FlexLayout, side: int, pf_mode: str = "mean_first",
                          w1_after_upsample: bool = False) -> int:
    """MACs of one FlexDiT forward for one image at sparse side ``side`` (the counter must agree exactly).

    Linear layers, attention matmuls and adaLN; not norms, pooling, upsampling or elementwise ops (as DiT's count).
    ``pf_mode="per_token", w1_after_upsample=True`` is the paper/code cost model (spec section 4.1).
    A Latte config (video) gives one clip's MACs (``flexlatte_macs_per_call``).
    """
    if isinstance(config, LatteConfig):
        return flexlatte_macs_per_call(config, layout, side, pf_mode, w1_after_upsample)
    d, n, p = config.hidden_size, config.num_tokens, config.patch_size
    m, h = side * side, int(d * config.mlp_ratio)
    ada, mlp = 6 * d * d, 2 * d * h
    dense_block = ada + 4 * n * d * d + 2 * n * n * d + mlp * n
    sparse_block = ada + 4 * m * d * d + 2 * m * m * d + mlp * m
    pf_block = ada + mlp * n + (2 * n * d * d if pf_mode == "per_token" else 2 * d * d)
    gen = ada + 2 * m * d * d + 2 * n * d * d + 2 * m * n * d + mlp * m
    rec = ada + 2 * n * d * d + 2 * m * d * d + 2 * n * m * d + mlp * n
    merge = n * d * d + (n if w1_after_upsample else m) * d * d
    sdtm = gen + layout.sparse * sparse_block + merge + rec + layout.dense * dense_block
    embed = config.in_channels * p * p * d * n + 256 * d + d * d
    final = 2 * d * d + d * p * p * config.out_channels * n
    return embed + layout.pf * pf_block + layout.sdtms * sdtm + layout.top * dense_block + final


def flexlatte_macs_per_call(config: LatteConfig, layout: FlexLayout, side: int, pf_mode: str = "mean_first",
                            w1_after_upsample: bool = False) -> int:
    """MACs of one FlexDiT-on-Latte forward for one clip at per-frame sparse side ``side`` (``models/flexlatte``).

    F frames of N tokens, M = side^2. The layout counts block pairs. Each pair's spatial block runs per frame, at
    the image block's cost with its adaLN once per frame. Its temporal block runs across the F frames at each
    location it sees, with its adaLN once per location: M locations for the Sparse-Gen and sparse pairs, N for
    all others. The merge runs per frame. The embedding and the final layer are Latte's (``latte_macs_per_call``).
    """
    d, n, f, p = config.hidden_size, config.num_tokens, config.num_frames, config.patch_size
    m, h = side * side, int(d * config.mlp_ratio)
    ada, mlp, linear = 6 * d * d, 2 * d * h, 4 * d * d + 2 * d * h

    def temporal(locations: int) -> int:
        return locations * (ada + linear * f + 2 * f * f * d)

    dense_spatial = ada + linear * n + 2 * n * n * d
    sparse_spatial = ada + linear * m + 2 * m * m * d
    pf = ada + mlp * n + (2 * n * d * d if pf_mode == "per_token" else 2 * d * d)
    gen = ada + 2 * m * d * d + 2 * n * d * d + 2 * m * n * d + mlp * m
    rec = ada + 2 * n * d * d + 2 * m * d * d + 2 * n * m * d + mlp * n
    merge = n * d * d + (n if w1_after_upsample else m) * d * d
    dense_pair = f * dense_spatial + temporal(n)
    sdtm = (f * (gen + merge + rec) + temporal(m) + temporal(n)
            + layout.sparse * (f * sparse_spatial + temporal(m)) + layout.dense * dense_pair)
    embed = f * config.in_channels * p * p * d * n + 256 * d + d * d
    final = f * (2 * d * d + d * p * p * config.out_channels * n)
    return (embed + layout.pf * (f * pf + temporal(n)) + layout.sdtms * sdtm + layout.top * dense_pair + final)


FLEXDIT = MethodSpec("flexdit", "FlexDiT", "#009E73", FlexDiTVocabulary(), "per_budget",
                     macs_per_call=flexdit_macs_per_call)
