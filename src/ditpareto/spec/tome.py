"""tome: token merging for DiT (tomesd-style, Bolya & Hoffman 2023), training-free; the budget is the merge ratio.

In every block, r = floor(ratio * N) of the N tokens are merged into their most similar destination token before
attention and/or the MLP, and copied back after (``ditpareto.models.tome``). Destinations are the top-left token of
every 2x2 window (tomesd draws one at random per window; a fixed choice keeps sampling deterministic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ditpareto.errors import InputError
from ditpareto.spec.base import MethodOptions, MethodSpec, Vocabulary

if TYPE_CHECKING:
    from ditpareto.archs import DiTConfig
    from ditpareto.study import SamplingSettings

MAX_MERGE_RATIO = 0.75  # a 2x2 window keeps its destination: at most 3 of every 4 tokens can merge
TOME_ONLY_IMAGES = "tome supports image DiTs only"


@dataclass(frozen=True)
class ToMeOptions(MethodOptions):
    """Which sublayers run on the merged tokens (tomesd's ``merge_attn`` and ``merge_mlp``)."""

    method: ClassVar[str] = "tome"
    merge_attn: bool = True
    merge_mlp: bool = True

    @staticmethod
    def normalize(values: dict) -> dict:
        for key in ("merge_attn", "merge_mlp"):
            if not isinstance(values[key], bool):
                raise InputError(f"tome option {key} must be true or false, got {values[key]!r}")
        return values


class ToMeVocabulary(Vocabulary):
    name = "tome"
    options_type = ToMeOptions
    budget_help = f"fraction of tokens merged in every block, two decimals in [0, {MAX_MERGE_RATIO}] ('0.50')"

    def parse_budget(self, text) -> float:
        try:
            ratio = float(text)
        except (TypeError, ValueError):
            raise InputError(f"tome budget must be a merge ratio like '0.50', got {text!r}") from None
        if not (math.isfinite(ratio) and 0.0 <= ratio <= MAX_MERGE_RATIO):
            raise InputError(f"tome budget {text!r} out of range: merge ratios must be in [0, {MAX_MERGE_RATIO}]")
        if abs(round(ratio, 2) - ratio) > 1e-9:
            raise InputError(f"tome budget {text!r} has more than two decimals: use a merge ratio like '0.50'")
        return round(ratio, 2)

    def budget_label(self, value) -> str:
        return f"{self.parse_budget(value):.2f}"

    def full_budget(self, settings: SamplingSettings) -> float:
        return 0.0

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """The share of tokens each sublayer runs on, 1 - ratio (a label; GMACs are counted)."""
        return 1.0 - self.parse_budget(budget)


def tome_split(config: DiTConfig) -> tuple[int, int]:
    """(destination, source) token counts: one destination per whole 2x2 window of the token grid."""
    grid = config.grid_size
    num_dst = (grid // 2) ** 2
    return num_dst, config.num_tokens - num_dst


def tome_merged_tokens(config: DiTConfig, ratio: float) -> int:
    """r = floor(ratio * N) tokens merged per block (at most the source count, as tomesd caps it)."""
    _require_image(config)
    return min(math.floor(ratio * config.num_tokens + 1e-9), tome_split(config)[1])


def tome_macs_per_call(config: DiTConfig, ratio: float, merge_attn: bool = True, merge_mlp: bool = True) -> int:
    """Closed-form MACs of one merged DiT forward for one image (DiT's convention; the counter must agree).

    Per block: qkv and proj (4 d^2) and the attention matmuls (2 n^2 d) on n = N - r tokens when attention merges,
    fc1 and fc2 (2 d h) on N - r when the MLP merges, the similarity matmul (source x destination x d) once per block
    when anything merges, and adaLN (6 d^2) as DiT. Embedding and final layer at full N, as DiT.
    """
    d, n, p = config.hidden_size, config.num_tokens, config.patch_size
    r = tome_merged_tokens(config, ratio) if (merge_attn or merge_mlp) else 0
    n_attn = n - r if merge_attn else n
    n_mlp = n - r if merge_mlp else n
    num_dst, num_src = tome_split(config)
    similarity = num_src * num_dst * d if r > 0 else 0
    mlp = int(d * config.mlp_ratio)
    embed = config.in_channels * p * p * d * n + 256 * d + d * d  # patchify conv + timestep MLP
    per_block = 4 * d * d * n_attn + 2 * n_attn * n_attn * d + 2 * d * mlp * n_mlp + 6 * d * d + similarity
    final = 2 * d * d + d * p * p * config.out_channels * n
    return embed + config.depth * per_block + final


def _require_image(config: DiTConfig) -> None:
    from ditpareto.archs import LatteConfig

    if isinstance(config, LatteConfig):
        raise InputError(TOME_ONLY_IMAGES)


TOME = MethodSpec("tome", "ToMe (token merging)", "#999933", ToMeVocabulary(), "none",
                  macs_per_call=tome_macs_per_call, video=False)
