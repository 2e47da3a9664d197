"""DyDiT (Zhao et al.): timestep-wise width routing and spatial-wise token routing, one fine-tune per FLOPs target."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ditpareto.errors import InputError
from ditpareto.spec.base import FULL_PREFIX, FullCompute, MethodOptions, MethodSpec, Vocabulary, split_full

if TYPE_CHECKING:
    from ditpareto.archs import DiTConfig, LatteConfig
    from ditpareto.study import SamplingSettings

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


def _is_latte(config) -> bool:
    from ditpareto.archs import LatteConfig

    return isinstance(config, LatteConfig)


def layer_flops(config: DiTConfig) -> tuple[int, int]:
    """Per-layer MACs of one image (F_attn = 4ND^2 + 2N^2D, F_mlp = 2ND*hidden), as in the FLOPs loss. A Latte
    model's blocks differ by type: ``block_flops``."""
    if _is_latte(config):
        raise ValueError("a Latte model's spatial and temporal blocks cost differently: use block_flops")
    n, d = config.num_tokens, config.hidden_size
    return 4 * n * d * d + 2 * n * n * d, 2 * n * d * int(d * config.mlp_ratio)


def latte_layer_flops(config: LatteConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """(F_attn, F_mlp) of one clip in a spatial block (F frames, attention over the T = H W / p^2 tokens of a frame)
    and in a temporal block (T locations, attention over the F frames): 4 F T D^2 of projections in both, scores
    and values 2 F T^2 D vs 2 T F^2 D; the MLP 2 F T D hidden in both."""
    f, n, d = config.num_frames, config.num_tokens, config.hidden_size
    mlp = 2 * f * n * d * int(d * config.mlp_ratio)
    return (4 * f * n * d * d + 2 * f * n * n * d, mlp), (4 * f * n * d * d + 2 * n * f * f * d, mlp)


def block_flops(config: DiTConfig) -> list[tuple[int, int]]:
    """(F_attn, F_mlp) of every block for one image (DiT: ``layer_flops`` each) or one clip (Latte: spatial blocks
    ``blocks.{2i}``, temporal ``blocks.{2i+1}``): the weights of the FLOPs loss's compute ratio."""
    if _is_latte(config):
        spatial, temporal = latte_layer_flops(config)
        return [temporal if i % 2 else spatial for i in range(config.depth)]
    return [layer_flops(config)] * config.depth


def token_router_macs(config: DiTConfig) -> int:
    """MACs of one block's token router for one image (one clip: every token of every frame): Linear(D, D/16) and
    Linear(D/16, 1) on every token."""
    r = max(1, config.hidden_size // 16)
    tokens = config.num_tokens * (config.num_frames if _is_latte(config) else 1)
    return tokens * (config.hidden_size * r + r)


def sliced_macs_per_call(config: DiTConfig, groups: int, active_heads, active_groups, kept_fraction) -> float:
    """Closed-form MACs of one sliced forward for one image or clip (checks the counter; per-layer lists of |A|, |G|
    and the kept share of the image's N or the clip's F x N tokens)."""
    if _is_latte(config):
        return latte_sliced_macs_per_call(config, groups, active_heads, active_groups, kept_fraction)
    n, d, p = config.num_tokens, config.hidden_size, config.patch_size
    hidden, dh = int(d * config.mlp_ratio), d // config.num_heads
    macs = config.in_channels * p * p * d * n + 256 * d + d * d + 2 * d * d + d * p * p * config.out_channels * n
    for a, g, s in zip(active_heads, active_groups, kept_fraction):
        macs += 6 * d * d + 4 * n * d * a * dh + 2 * n * n * a * dh + token_router_macs(config)
        macs += s * n * 2 * d * g * (hidden // groups)
    return macs


def latte_sliced_macs_per_call(config: LatteConfig, groups: int, active_heads, active_groups,
                               kept_fraction) -> float:
    """Closed-form MACs of one sliced Latte forward for one clip (``spec.dit.latte_macs_per_call`` with |A| of H
    heads, |G| of the MLP groups and a share s of the F x N (frame, location) tokens in the MLP): a spatial block
    runs adaLN once per frame and attends over the N tokens of each frame, a temporal block runs adaLN once per
    location and attends over the F frames; the token router sees every token of both."""
    f, n, d, p = config.num_frames, config.num_tokens, config.hidden_size, config.patch_size
    hidden, dh, tokens = int(d * config.mlp_ratio), d // config.num_heads, f * n
    macs = f * config.in_channels * p * p * d * n + 256 * d + d * d  # patchify per frame, timestep MLP per clip
    macs += f * (2 * d * d + d * p * p * config.out_channels * n)  # final adaLN and linear per frame
    for i, (a, g, s) in enumerate(zip(active_heads, active_groups, kept_fraction)):
        rows, length = (n, f) if i % 2 else (f, n)  # temporal: N sequences of F frames; spatial: F of N tokens
        macs += rows * 6 * d * d + 4 * tokens * d * a * dh + rows * 2 * length * length * a * dh
        macs += token_router_macs(config) + s * tokens * 2 * d * g * (hidden // groups)
    return macs


DYDIT = MethodSpec("dydit", "DyDiT", "#D55E00", DyDiTVocabulary(), "per_budget", official=True,
                   macs_per_call=sliced_macs_per_call)
