"""FlexiDiT as a pipeline method: one shared fine-tune; a budget is the fraction of sampling steps run weak.

Budget label "B" (two decimals, e.g. "0.50"): the first round(B * steps) steps (noisiest first) use the weak
patch size in both CFG branches, the rest the base one (§3.1). "C-U" (e.g. "0.90-1.00") runs the conditional
branch weak for a fraction C of the steps and the guidance branch for U >= C; steps where they differ use
weak-model guidance with the label in both branches and s2 = 1 - (1 - s1) / 2.5 (§3.2).

Fine-tuning (``FlexiDiTLoss``): DiT's hybrid loss at a patch size drawn per step (§2.1), optional distillation
(§2.3) and, with ``mmd_weight`` > 0, the bootstrapped-MMD exposure-bias term every ``mmd_every`` steps
(FlexiDiT paper App. B.1, C.2; ``bootstrapped_mmd_loss``): a short sampler chain that starts weak and ends
powerful is pulled towards the noised data distribution at its end point.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F

from ditpareto.archs import LATTE_ARCHS, LatteConfig, latte_config
from ditpareto.diffusion import GaussianDiffusion, channel_dim
from ditpareto.errors import InputError
from ditpareto.flops import count_train_macs
from ditpareto.methods.base import Method, eval_model
from ditpareto.models import dit_config
from ditpareto.models.checkpoint import CheckpointError, load_into
from ditpareto.models.dit import guided_channel_count
from ditpareto.models.flexidit import FlexiConfig, FlexiDiT, convert_dit
from ditpareto.models.flexilatte import FlexiLatte, FlexiLatteConfig, convert_latte
from ditpareto.models.latte import Latte
from ditpareto.plans import SamplingPlan, cfg_denoiser, model_device
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.train import resume_step, run_training
from ditpareto.spec.flexidit import (
    FlexiDiTOptions, FlexiDiTVocabulary, analytic_macs_per_image, flexidit_macs_per_call, weak_steps,
)

# (1 - s1) / (1 - s2) = 2.5 for weak-model guidance (§3.2).
WEAK_GUIDANCE_RATIO = 2.5

def weak_guidance_scale(s1: float) -> float:
    return 1 - (1 - s1) / WEAK_GUIDANCE_RATIO


class FlexiDiTMethod(FlexiDiTVocabulary, Method):
    name = "flexidit"
    budget_help = "fraction of steps at the weak patch size, two decimals ('0.50'), or 'C-U' with U >= C"

    # ------------------------------------------------------------------ models
    @staticmethod
    def _config_options(options: FlexiDiTOptions) -> dict:
        return {k: getattr(options, k) for k in ("variant", "lora_rank", "ln_affine", "pos_coords", "tokenizer")}

    @staticmethod
    def video_weak_patch(options: FlexiDiTOptions, base: LatteConfig) -> tuple[int, int]:
        """A Latte base's weak patch: (2, p, p) by default, (1, s, s) for ``weak_patch_size`` s."""
        s = options.weak_patch_size
        return (2, base.patch_size) if s is None else (1, s)

    def convert(self, base, options: FlexiDiTOptions) -> FlexiDiT:
        options = self.parse_options(options)
        if isinstance(base, Latte):
            weak = self.video_weak_patch(options, base.config)
            return eval_model(convert_latte(base, weak, **self._config_options(options)))
        return eval_model(convert_dit(base, options.weak_patch_size, **self._config_options(options)))

    def load_model(self, checkpoint, spec: ModelSpec, options: FlexiDiTOptions) -> FlexiDiT:
        options = self.parse_options(options)
        if spec.name in LATTE_ARCHS:
            base = latte_config(spec.name, spec.image_size, **spec.overrides())
            weak = self.video_weak_patch(options, base)
            model = FlexiLatte(FlexiLatteConfig(base, weak, **self._config_options(options)))
            load_into(model, checkpoint, what=f"flexidit ({options.variant}, weak patch {weak}) of {spec.name}")
            return eval_model(model)
        base = dit_config(spec.name, spec.image_size, **spec.overrides())
        pw = options.weak_patch_size or 2 * base.patch_size
        model = FlexiDiT(FlexiConfig(base, pw, **self._config_options(options)))
        load_into(model, checkpoint, what=f"flexidit ({options.variant}, weak patch {pw}) of {spec.name}")
        expected = model.expected_pos_embed(pw)
        if not torch.allclose(model.pos_embed_weak, expected, atol=1e-6):
            raise CheckpointError(f"checkpoint's weak-grid position embedding does not match pos_coords="
                                  f"{options.pos_coords!r}: was it converted with other options?")
        return eval_model(model)

    def finetune(self, model: FlexiDiT, data, options: FlexiDiTOptions, budget, train, state_path, log_csv):

        options = self.parse_options(options)
        lora = model.config.variant == "lora"
        teacher = None
        if options.distill_weight > 0:  # the base DiT at the base patch size, frozen (§2.3)
            teacher = model if lora else eval_model(copy.deepcopy(model))
        model.requires_grad_(False)
        trainable = model.weak_parameters() if lora else list(model.parameters())
        for param in trainable:
            param.requires_grad_(True)
        # AdamW parameter groups: the weak tokenizer/de-tokenizer may get a larger learning rate
        io = {id(p) for p in model.weak_io_parameters()}
        groups = [{"params": [p for p in trainable if id(p) not in io]},
                  {"params": [p for p in trainable if id(p) in io], "lr": train.lr * options.patch_lr_scale}]
        if options.mmd_weight > 0:
            if train.batch_size < 2:
                raise InputError("flexidit option mmd_weight > 0 needs a batch size >= 2 (MMD compares sample sets)")
            # one CSV row per step (as DyDiT): rows every log_every steps would sit at steps that are
            # never MMD steps whenever log_every is a multiple of mmd_every (the mmd column would be all nan)
            train = replace(train, log_every=1)
        # the MMD schedule (every mmd_every steps) continues on resume, as the rest of the run does
        loss_fn = FlexiDiTLoss(options, teacher=teacher, weak_ratio=1.0 if lora else None,
                               start_step=resume_step(state_path, train) or 0)
        ema = run_training(model, data.as_model_input(), torch.from_numpy(data.labels), train, state_path,
                           log_csv, loss_fn=loss_fn, trainable=groups)
        return eval_model(ema)

    def train_step_macs(self, model: FlexiDiT, x0, y, options, budget):
        """Weak and base steps in proportion weak_ratio (distillation's teacher forward on weak steps included),
        plus the MMD term's chain (forward and backward, mean over s_weak) on every mmd_every-th step."""

        options = self.parse_options(options)
        lora = model.config.variant == "lora"
        ratio = 1.0 if lora else float(options.weak_ratio)
        teacher = eval_model(copy.deepcopy(model)) if options.distill_weight > 0 else None
        model.requires_grad_(False)  # what trains, as in finetune: the backward's cost depends on it
        for param in model.weak_parameters() if lora else model.parameters():
            param.requires_grad_(True)
        base = GaussianDiffusion.base()

        def kind(weak: float) -> int:
            loss = partial(flexidit_loss, weak_ratio=weak, distill_weight=float(options.distill_weight),
                           teacher=teacher)
            return count_train_macs(loss, model, x0, y, base)

        per_step = ratio * kind(1.0) + (1 - ratio) * (kind(0.0) if ratio < 1 else 0)
        mmd = 0.0
        if options.mmd_weight > 0:
            loss = FlexiDiTLoss(options)
            chain = options.mmd_chain_steps
            costs = [count_train_macs(lambda m, x, yy, d, s=s: {"loss": loss.mmd(m, x, yy, start_index=chain,
                                                                                   weak_steps=s)},
                                      model, x0, y, base) for s in range(chain + 1)]
            mmd = sum(costs) / len(costs)
        every = options.mmd_every
        return lambda step: per_step + (mmd if step % every == 0 else 0.0)

    # ------------------------------------------------------------------ sampling
    def plan(self, model: FlexiDiT, budget, settings: SamplingSettings, spec: ModelSpec,
             options=None) -> SamplingPlan:
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
            dim = channel_dim(x)
            cond, weak = out_cond.narrow(dim, 0, guided), out_weak.narrow(dim, 0, guided)
            rest = out_cond.narrow(dim, guided, out_cond.shape[dim] - guided)
            return torch.cat([weak + s2 * (cond - weak), rest], dim=dim)

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
                            details=details, device=model_device(model))


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
    # the logged patch: its side (images), or its token volume t * s * s (video: 4 base, 8 or 16 weak)
    size = p[0] * p[1] ** 2 if isinstance(p, tuple) else p
    return {**out, "distill": distill.detach(), "patch_size": torch.tensor(float(size))}


# ---------------------------------------------------------------------------------------------- MMD stage


def mmd2(a: torch.Tensor, b: torch.Tensor, bandwidths) -> torch.Tensor:
    """Biased (V-statistic) MMD² between sample sets a (N, ...) and b (M, ...), flattened to D dims, under
    k(u, v) = Σ_σ exp(-||u - v||² / (2 σ² D)): distances per dimension, so the bandwidths mean the same at any
    latent size (independent unit-variance samples sit at ||u - v||² / D ≈ 2). The biased estimator is >= 0 and
    exactly 0 for equal sets; its diagonal terms k(u, u) = len(bandwidths) are constant (no gradient)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    n, dims = a.shape[0], a.shape[1]
    z = torch.cat([a, b])
    sq = (z * z).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0) / dims
    k = sum(torch.exp(-d2 / (2 * float(s) ** 2)) for s in bandwidths)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def same_class_partners(y: torch.Tensor, count: int) -> list[int]:
    """For each of the first ``count`` samples, the next sample of the batch (cyclically) with the same label, or
    the sample itself when its class occurs once. Deterministic: the batch is already a random draw."""
    labels = y.tolist()
    n, partners = len(labels), []
    for i in range(count):
        partners.append(next((j % n for j in range(i + 1, i + n) if labels[j % n] == labels[i]), i))
    return partners


def bootstrapped_mmd_loss(model: FlexiDiT, x0: torch.Tensor, y: torch.Tensor, grid: GaussianDiffusion, *,
                          start_index: int | None = None, weak_steps: int | None = None, chain_steps: int = 2,
                          grad_steps: int = 1, batch: int = 32, bandwidths=(0.5, 1.0, 2.0, 4.0),
                          sampler: str = "ddim") -> torch.Tensor:
    """MMD² between where a short weak->powerful sampler chain ends and the noised data there (FlexiDiT paper
    App. B.1, C.2): the powerful path sees the errors the weak path makes, as at inference.

    ``grid`` is the respaced sampler diffusion (index i = its i-th timestep, 0 the least noisy). The chain starts
    at ``start_index`` i1 and runs exactly ``chain_steps`` sampler steps to i2 = i1 - chain_steps; its first
    ``weak_steps`` calls use ``model.weak_patch_size`` and the rest ``model.patch_size`` (coarse first, as the
    inference schedule). Calls are conditional only (no CFG: the chain's cost stays one call per step; the label
    is never dropped). Only the last ``grad_steps`` calls keep gradients. Not given, the random choices come from
    torch's global RNG: i2 = floor(u² (S - chain_steps)), u ~ U[0, 1) over the S grid indices that fit, i.e.
    biased to the data end (P(i2 = j) ∝ sqrt(j + 1) - sqrt(j), median at a quarter of the range); then
    s_weak ~ U{0..chain_steps}.

    Sets: the chain starts from q(x_t1 | x̃0) with x̃0 the first ``batch`` samples of x0 (labels y); the target set
    is q(x_t2 | x0') where x0' is another image of the same class in the batch (``same_class_partners``; the image
    itself when its class occurs once), so both sets carry the same labels.

    Compute: one MMD step costs ``batch`` x (s_weak weak + chain_steps - s_weak powerful) forward calls, plus the
    backward of the last ``grad_steps``. With s_weak uniform, the expected forward cost is batch x chain_steps x
    (MACs_weak + MACs_base) / 2 (``FlexiDiTLoss.mmd_forward_macs``), paid once every ``mmd_every`` steps; exact
    per-s costs come from calling this with ``weak_steps=s`` for s in 0..chain_steps."""
    steps = grid.num_timesteps
    if not 1 <= chain_steps < steps or not 1 <= grad_steps <= chain_steps:
        raise ValueError(f"need 1 <= grad_steps ({grad_steps}) <= chain_steps ({chain_steps}) < grid steps ({steps})")
    count = min(batch, x0.shape[0])
    if count < 2:
        raise InputError(f"the MMD term needs at least 2 samples, got a batch of {x0.shape[0]}")
    if start_index is None:
        start_index = math.floor(float(torch.rand(())) ** 2 * (steps - chain_steps)) + chain_steps
    if weak_steps is None:
        weak_steps = int(torch.randint(0, chain_steps + 1, ()))
    if not chain_steps <= start_index < steps or not 0 <= weak_steps <= chain_steps:
        raise ValueError(f"start_index {start_index} must be in [{chain_steps}, {steps}) and weak_steps {weak_steps} "
                         f"in [0, {chain_steps}]")
    device = x0.device
    partners = torch.tensor(same_class_partners(y, count), device=device)
    start, target, labels = x0[:count], x0[partners], y[:count]

    def index(i: int) -> torch.Tensor:
        return torch.full((count,), i, dtype=torch.long, device=device)

    end = start_index - chain_steps
    z = grid.q_sample(start, index(start_index), torch.randn_like(start))
    target = grid.q_sample(target, index(end), torch.randn_like(target))
    for k in range(chain_steps):
        t = index(start_index - k)
        p = model.weak_patch_size if k < weak_steps else model.patch_size
        with torch.set_grad_enabled(torch.is_grad_enabled() and k >= chain_steps - grad_steps):
            out = model(z, grid.model_timesteps(t), labels, patch_size=p, drop_labels=False)
            if sampler == "ddpm":
                z = grid.ddpm_step(out, z, t, torch.randn_like(z))
            else:
                z = grid.ddim_step(out, z, t)
    return mmd2(z, target, bandwidths)


class FlexiDiTLoss:
    """``flexidit_loss`` (unchanged: same RNG draws in the same order) plus ``mmd_weight`` x the bootstrapped MMD²
    on every ``mmd_every``-th step of a step counter that starts at ``start_step`` (a resumed run continues it).
    With mmd_weight > 0 the logged ``mmd`` is nan on steps without the term (one set of CSV columns)."""

    def __init__(self, options: FlexiDiTOptions, teacher: FlexiDiT | None = None, weak_ratio: float | None = None,
                 start_step: int = 0):
        self.options, self.teacher, self.step = options, teacher, start_step
        self.weak_ratio = float(options.weak_ratio if weak_ratio is None else weak_ratio)
        self.grid = GaussianDiffusion.respaced(options.mmd_sampler, options.mmd_sampler_steps)

    def mmd(self, model: FlexiDiT, x0, y, **choices) -> torch.Tensor:
        o = self.options
        return bootstrapped_mmd_loss(model, x0, y, self.grid, chain_steps=o.mmd_chain_steps,
                                     grad_steps=o.mmd_grad_steps, batch=o.mmd_batch,
                                     bandwidths=o.mmd_bandwidths, sampler=o.mmd_sampler, **choices)

    def chain_kinds(self, config: FlexiConfig) -> list[tuple[int, ...]]:
        """The chain's patch size per step, one tuple per s_weak in 0..mmd_chain_steps (equally likely)."""
        base, weak = config.patch_sizes
        k = self.options.mmd_chain_steps
        return [tuple(weak if i < s else base for i in range(k)) for s in range(k + 1)]

    def mmd_forward_macs(self, config: FlexiConfig, batch_size: int) -> float:
        """Expected forward MACs of the MMD term per optimizer step, for a training batch of ``batch_size``:
        min(mmd_batch, batch_size) chains, averaged over uniform s_weak and over the mmd_every steps (0 when
        off). The backward of the last mmd_grad_steps calls is not included."""
        o = self.options
        if o.mmd_weight <= 0:
            return 0.0
        per = {p: flexidit_macs_per_call(config, p) for p in config.patch_sizes}
        chains = [sum(per[p] for p in kinds) for kinds in self.chain_kinds(config)]
        return min(o.mmd_batch, batch_size) * sum(chains) / len(chains) / o.mmd_every

    def __call__(self, model: FlexiDiT, x0, y, diffusion: GaussianDiffusion) -> dict:
        step = self.step
        self.step += 1
        o = self.options
        out = flexidit_loss(model, x0, y, diffusion, weak_ratio=self.weak_ratio,
                            distill_weight=float(o.distill_weight), teacher=self.teacher)
        if o.mmd_weight > 0:
            if step % o.mmd_every == 0:
                term = self.mmd(model, x0, y)  # the labels before dropout: the chain is conditional
                out["loss"] = out["loss"] + float(o.mmd_weight) * term
                out["mmd"] = term.detach()
            else:
                out["mmd"] = torch.tensor(float("nan"))
        return out
