"""FlexiDiT as a pipeline method: one shared fine-tune; a budget is the fraction of sampling steps run weak.

Budget label "B" (two decimals, e.g. "0.50"): the first round(B * steps) steps (noisiest first) use the weak
patch size in both CFG branches, the rest the base one (§3.1). "C-U" (e.g. "0.90-1.00") runs the conditional
branch weak for a fraction C of the steps and the guidance branch for U >= C; steps where they differ use
weak-model guidance with the label in both branches and s2 = 1 - (1 - s1) / 2.5 (§3.2).
"""

from __future__ import annotations

import copy
import math
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.errors import InputError
from ditpareto.methods.base import Method, ModelSpec, SamplingPlan, SamplingSettings, cfg_denoiser, eval_model
from ditpareto.models import dit_config
from ditpareto.models.checkpoint import CheckpointError, load_into
from ditpareto.models.dit import guided_channel_count
from ditpareto.models.flexidit import (
    LN_AFFINE,
    POS_COORDS,
    TOKENIZERS,
    VARIANTS,
    FlexiConfig,
    FlexiDiT,
    convert_dit,
)

# (1 - s1) / (1 - s2) = 2.5 for weak-model guidance (§3.2).
WEAK_GUIDANCE_RATIO = 2.5

DEFAULTS = {
    "variant": "shared",  # "shared" (paper's ImageNet choice) or "lora" (frozen base, §1.8)
    "tokenizer": None,  # "flexible" (one PI-resized kernel, §1.3) or "separate" (one per size); None: flexible,
    # separate for lora
    "weak_patch_size": None,  # None: 2 x the base patch
    "pos_coords": "corner",  # coarse-patch position: "corner" (PixArt-style) or "centre" (§1.5, UNVERIFIED)
    "ln_affine": "all",  # patch-size-dependent LN affine after "all" LNs, the "final" one, or "none" (§1.6)
    "lora_rank": 8,  # LoRA variant only (paper: 32 for XL-sized models)
    "weak_ratio": 0.5,  # share of fine-tuning steps at the weak patch size (shared variant; LoRA trains weak only)
    "distill_weight": 0.0,  # weight of MSE to the frozen base at the base patch size on weak steps (§2.3)
    "patch_lr_scale": 1.0,  # LR multiplier of the weak path's tokenizer and de-tokenizer (our addition; 1 = off)
}


class Budget(NamedTuple):
    """Fractions of sampling steps run at the weak patch size: conditional and guidance branch."""

    cond: float
    uncond: float


def weak_steps(fraction: float, steps: int) -> int:
    """Number of weak steps: round half up of fraction * steps."""
    return math.floor(fraction * steps + 0.5)


def weak_guidance_scale(s1: float) -> float:
    return 1 - (1 - s1) / WEAK_GUIDANCE_RATIO


def flexidit_macs_per_call(config: FlexiConfig, patch_size: int) -> int:
    """Closed-form MACs of one forward at ``patch_size`` (DiT's formula at that token count, plus LoRA if any)."""
    from ditpareto.flops import dit_macs_per_call  # flops imports the methods package

    macs = dit_macs_per_call(config.at(patch_size))
    if config.variant == "lora" and patch_size == config.weak_patch_size:
        d, mlp = config.base.hidden_size, int(config.base.hidden_size * config.base.mlp_ratio)
        tokens = config.at(patch_size).num_tokens
        macs += config.base.depth * tokens * config.lora_rank * (8 * d + 2 * mlp)  # qkv, proj, fc1, fc2
    return macs


def analytic_macs_per_image(config: FlexiConfig, steps: int, weak_cond: int, weak_uncond: int, guided: bool) -> int:
    """Closed-form MACs of a trajectory: weak calls for the first ``weak_*`` steps of each branch (§4.1)."""
    base, weak = (flexidit_macs_per_call(config, p) for p in config.patch_sizes)
    branches = (weak_cond, weak_uncond) if guided else (weak_cond,)
    return sum(n * weak + (steps - n) * base for n in branches)


class FlexiDiTMethod(Method):
    name = "flexidit"
    budget_help = "fraction of steps at the weak patch size, two decimals ('0.50'), or 'C-U' with U >= C"
    finetune_mode = "shared"

    # ------------------------------------------------------------------ vocabulary
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

    def parse_options(self, options: dict | None) -> dict:
        options = dict(options or {})
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise InputError(f"unknown flexidit options {unknown}; known: {sorted(DEFAULTS)}")
        out = {**DEFAULTS, **options}
        if out["tokenizer"] is None:
            out["tokenizer"] = "separate" if out["variant"] == "lora" else "flexible"
        for key, allowed in (("variant", VARIANTS), ("pos_coords", POS_COORDS), ("ln_affine", LN_AFFINE),
                             ("tokenizer", TOKENIZERS)):
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
        return out

    def full_budget(self, settings: SamplingSettings) -> Budget:
        return Budget(0.0, 0.0)

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """Token-count estimate (weak call = 1/4 of a base call, the default 2x patch); GMACs are counted."""
        b, steps, r = self.parse_budget(budget), settings.steps, 0.25
        per_branch = [steps - (1 - r) * weak_steps(f, steps) for f in (b.cond, b.uncond)]
        return (sum(per_branch) / 2 if settings.guided else per_branch[0]) / steps

    # ------------------------------------------------------------------ models
    @staticmethod
    def _config_options(options: dict) -> dict:
        return {k: options[k] for k in ("variant", "lora_rank", "ln_affine", "pos_coords", "tokenizer")}

    def convert(self, base, options: dict) -> FlexiDiT:
        options = self.parse_options(options)
        return eval_model(convert_dit(base, options["weak_patch_size"], **self._config_options(options)))

    def load_model(self, checkpoint, spec: ModelSpec, options: dict) -> FlexiDiT:
        options = self.parse_options(options)
        base = dit_config(spec.name, spec.image_size, **spec.overrides())
        pw = options["weak_patch_size"] or 2 * base.patch_size
        model = FlexiDiT(FlexiConfig(base, pw, **self._config_options(options)))
        load_into(model, checkpoint, what=f"flexidit ({options['variant']}, weak patch {pw}) of {spec.name}")
        expected = model.expected_pos_embed(pw)
        if not torch.allclose(model.pos_embed_weak, expected, atol=1e-6):
            raise CheckpointError(f"checkpoint's weak-grid position embedding does not match pos_coords="
                                  f"{options['pos_coords']!r}: was it converted with other options?")
        return eval_model(model)

    def finetune(self, model: FlexiDiT, data, options: dict, budget, train, state_path, log_csv):
        from ditpareto.train import run_training

        options = self.parse_options(options)
        lora = model.config.variant == "lora"
        teacher = None
        if options["distill_weight"] > 0:  # the base DiT at the base patch size, frozen (§2.3)
            teacher = model if lora else eval_model(copy.deepcopy(model))
        model.requires_grad_(False)
        trainable = model.weak_parameters() if lora else list(model.parameters())
        for param in trainable:
            param.requires_grad_(True)
        # AdamW parameter groups: the weak tokenizer/de-tokenizer may get a larger learning rate
        io = {id(p) for p in model.weak_io_parameters()}
        groups = [{"params": [p for p in trainable if id(p) not in io]},
                  {"params": [p for p in trainable if id(p) in io], "lr": train.lr * options["patch_lr_scale"]}]
        loss_fn = partial(flexidit_loss, weak_ratio=1.0 if lora else float(options["weak_ratio"]),
                          distill_weight=float(options["distill_weight"]), teacher=teacher)
        ema = run_training(model, data.as_model_input(), torch.from_numpy(data.labels), train, state_path,
                           log_csv, loss_fn=loss_fn, trainable=groups)
        return eval_model(ema)

    # ------------------------------------------------------------------ sampling
    def plan(self, model: FlexiDiT, budget, settings: SamplingSettings, spec: ModelSpec) -> SamplingPlan:
        b = self.parse_budget(budget)
        steps = settings.steps
        diffusion = GaussianDiffusion.respaced(settings.sampler, steps)
        n_cond, n_uncond = weak_steps(b.cond, steps), weak_steps(b.uncond, steps)
        if not settings.guided:
            n_uncond = n_cond
        base_p, weak_p = model.patch_size, model.weak_patch_size
        model.prepare()  # projected weights outside the FLOPs counter

        def patches(step: int) -> tuple[int, int]:
            return (weak_p if step < n_cond else base_p), (weak_p if step < n_uncond else base_p)

        standard = {p: cfg_denoiser(partial(model.forward, patch_size=p), settings, spec.in_channels,
                                    spec.num_classes) for p in (base_p, weak_p)}
        s2 = weak_guidance_scale(settings.cfg_scale)
        guided = guided_channel_count(spec.in_channels, settings.guidance_channels)

        def denoise(x, step, t, y):
            p_cond, p_uncond = patches(step)
            if p_cond == p_uncond:
                return standard[p_cond](x, step, t, y)
            # weak-model guidance: the label in both branches, separate calls (different token counts)
            out_cond = model(x, t, y, patch_size=p_cond)
            out_weak = model(x, t, y, patch_size=p_uncond)
            eps = out_weak[:, :guided] + s2 * (out_cond[:, :guided] - out_weak[:, :guided])
            return torch.cat([eps, out_cond[:, guided:]], dim=1)

        config = model.config
        details = {
            "steps": steps, "weak_steps": n_cond, "weak_steps_guidance": n_uncond,
            "powerful_steps": steps - n_cond, "weak_fraction": b.cond, "guidance_weak_fraction": b.uncond,
            "base_patch_size": base_p, "weak_patch_size": weak_p, "variant": config.variant,
            "cfg_scale_weak_guidance": s2 if n_uncond > n_cond else None,
            "analytic_gmacs_per_call_base": flexidit_macs_per_call(config, base_p) / 1e9,
            "analytic_gmacs_per_call_weak": flexidit_macs_per_call(config, weak_p) / 1e9,
            "analytic_gmacs_per_image": analytic_macs_per_image(config, steps, n_cond, n_uncond,
                                                                settings.guided) / 1e9,
        }
        return SamplingPlan(diffusion, denoise, calls_per_step=2 if settings.guided else 1,
                            step_key=lambda step: patches(step) if settings.guided else patches(step)[0],
                            details=details)


def flexidit_loss(model: FlexiDiT, x0, y, diffusion: GaussianDiffusion, weak_ratio: float, distill_weight: float,
                  teacher: FlexiDiT | None) -> dict:
    """DiT's hybrid loss at a patch size drawn per step, plus optional distillation on weak steps."""
    weak = bool(torch.rand(()) < weak_ratio)
    p = model.weak_patch_size if weak else model.patch_size
    if model.y_embedder.dropout_prob > 0:  # drop once, so a teacher sees the same labels
        y = model.y_embedder.token_drop(y)
    seen = {}

    def forward(x_t, t, y):
        seen["x_t"], seen["t"] = x_t, t
        seen["out"] = model(x_t, t, y, patch_size=p, drop_labels=False)
        return seen["out"]

    t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],))
    terms = diffusion.training_losses(forward, x0, t, {"y": y}, torch.randn_like(x0))
    loss = terms["loss"].mean()
    distill = torch.zeros(())
    if weak and distill_weight > 0:
        with torch.no_grad():
            teacher.to(x0.device)  # a frozen copy stays where it was made; the training loop moves the model
            target = teacher(seen["x_t"], seen["t"], y, patch_size=teacher.patch_size, drop_labels=False)
        distill = F.mse_loss(seen["out"], target)
        loss = loss + distill_weight * distill
    out = {"loss": loss, "mse": terms["mse"].mean().detach()}
    if "vb" in terms:
        out["vb"] = terms["vb"].mean().detach()
    return {**out, "distill": distill.detach(), "patch_size": torch.tensor(float(p))}
