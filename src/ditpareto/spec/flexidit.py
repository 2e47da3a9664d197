"""FlexiDiT (Anagnostidis et al.): weak (larger-patch) calls for the noisiest steps from one shared fine-tune."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from ditpareto.archs import FLEXIDIT_LN_AFFINE, FLEXIDIT_POS_COORDS, FLEXIDIT_TOKENIZERS, FLEXIDIT_VARIANTS
from ditpareto.errors import InputError
from ditpareto.respacing import SINGLE_STEP_SAMPLERS, space_timesteps
from ditpareto.spec.base import MethodOptions, MethodSpec, Vocabulary
from ditpareto.spec.dit import dit_macs_per_call

if TYPE_CHECKING:
    from ditpareto.models.flexidit import FlexiConfig
    from ditpareto.study import SamplingSettings

@dataclass(frozen=True)
class FlexiDiTOptions(MethodOptions):
    method: ClassVar[str] = "flexidit"
    variant: str = "shared"  # "shared" (paper's ImageNet choice) or "lora" (frozen base, §1.8)
    # "flexible" (one PI-resized kernel, §1.3) or "separate" (one per size); None: flexible, separate for lora
    tokenizer: str | None = None
    # None: 2 x the base patch; a Latte base (video): None is the (2, p, p) patch (two frames), an integer s the
    # spatial (1, s, s) one
    weak_patch_size: int | None = None
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
    if out["mmd_sampler"] not in SINGLE_STEP_SAMPLERS:
        raise InputError(f"flexidit option mmd_sampler must be one of {SINGLE_STEP_SAMPLERS}, got "
                         f"{out['mmd_sampler']!r}")
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


def flexidit_macs_per_call(config: FlexiConfig, patch_size) -> int:
    """Closed-form MACs of one forward at ``patch_size`` (DiT's or Latte's formula at that token count, plus LoRA
    if any; a video model's patch is (frames, side))."""

    at = config.at(patch_size)
    macs = dit_macs_per_call(at)
    if config.variant == "lora" and patch_size == config.weak_patch_size:
        d, mlp = config.base.hidden_size, int(config.base.hidden_size * config.base.mlp_ratio)
        tokens = at.num_tokens * getattr(at, "num_frames", 1)  # a clip's tokens: frames (groups) x per frame
        macs += config.base.depth * tokens * config.lora_rank * (8 * d + 2 * mlp)  # qkv, proj, fc1, fc2
    return macs


def analytic_macs_per_image(config: FlexiConfig, steps: int, weak_cond: int, weak_uncond: int, guided: bool) -> int:
    """Closed-form MACs of a trajectory: weak calls for the first ``weak_*`` steps of each branch (§4.1)."""
    base, weak = (flexidit_macs_per_call(config, p) for p in config.patch_sizes)
    branches = (weak_cond, weak_uncond) if guided else (weak_cond,)
    return sum(n * weak + (steps - n) * base for n in branches)


FLEXIDIT = MethodSpec("flexidit", "FlexiDiT", "#0072B2", FlexiDiTVocabulary(), "shared",
                      macs_per_call=flexidit_macs_per_call)
