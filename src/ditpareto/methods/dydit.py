"""DyDiT: per-λ fine-tunes of a DiT with timestep-wise dynamic width and spatial-wise dynamic tokens.

Budget = the FLOPs target λ in (0, 1] (label with two decimals, "0.50"). Training follows the released scripts
(straight-through Gumbel-sigmoid routers, (mean ratio - target)^2 FLOPs loss with weight 2, target ramp
1 -> λ, optional weight-shared complete-model loss, 4-bin stratified timesteps); sampling runs the sliced path
(``DyDiT.forward_sliced``) and its MACs are counted on real trajectories (``sampling.sampled_macs``).

On a Latte base (a video arch) the model is ``models.dylatte.DyLatte``: the same routers in the spatial and the
temporal blocks, token routing over (frame, location), clips (N, F, C, H, W) in training and sampling.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ditpareto.archs import LATTE_ARCHS, LatteConfig
from ditpareto.diffusion import GaussianDiffusion
from ditpareto.errors import InputError
from ditpareto.flops import count_train_macs
from ditpareto.methods.base import Method, eval_model
from ditpareto.models import dit_config, model_config
from ditpareto.models.checkpoint import load_into
from ditpareto.models.dydit import DyDiT, RouterConfig, RoutingStats, flops_loss
from ditpareto.models.dylatte import DyLatte
from ditpareto.models.latte import Latte
from ditpareto.models.dydit_official import check_official, official_to_ours, read_official
from ditpareto.plans import SamplingPlan, cfg_denoiser, model_device
from ditpareto.respacing import space_timesteps
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.train import resume_step, run_training
from ditpareto.spec import FullCompute
from ditpareto.spec.dydit import DyDiTOptions, DyDiTVocabulary, block_flops, sliced_macs_per_call, token_router_macs
from ditpareto.spec.dit import dit_macs_per_call


def router_config(options: DyDiTOptions) -> RouterConfig:
    return RouterConfig(mlp_groups=options.mlp_groups, width_bias_init=options.width_bias_init,
                        token_bias_init=options.token_bias_init, router_init=options.router_init,
                        tau=options.tau, seed=options.router_seed)


def stratified_timesteps(batch: int, num_timesteps: int, bins: int) -> torch.Tensor:
    """Sample i gets t ~ U{0..T/bins-1} + (T/bins)(i mod bins): every batch covers the whole trajectory."""
    width = num_timesteps // bins
    return torch.randint(0, width, (batch,)) + width * (torch.arange(batch) % bins)


def target_at(step: int, lam: float, hold: int, ramp: int) -> float:
    """The scripts' target schedule: 1.0 for ``hold`` steps, then 1 - (1 - λ) step / ramp until ``ramp``, then λ."""
    if step < hold:
        return 1.0
    if step >= ramp:
        return lam
    return 1.0 - (1.0 - lam) * step / ramp


class DyDiTLoss:
    """DiT loss of the dynamic forward + weight x FLOPs loss (+ complete-model loss for ``complete_steps``)."""

    def __init__(self, lam: float, options: DyDiTOptions, start_step: int = 0):
        self.lam, self.options, self.step = lam, options, start_step

    def __call__(self, model: DyDiT, x0, y, diffusion: GaussianDiffusion) -> dict:
        o, step = self.options, self.step
        self.step += 1
        t = stratified_timesteps(x0.shape[0], diffusion.num_timesteps, o.t_bins)
        noise = torch.randn_like(x0)
        gate_noise = max(0.0, 1.0 - step / o.noise_anneal_steps) if o.noise_anneal_steps else 1.0
        gates = []

        def dynamic(x_t, t_model, y):
            out, g = model.forward_masked(x_t, t_model, y, "gumbel", noise=gate_noise)
            gates.extend(g)
            return out

        terms = diffusion.training_losses(dynamic, x0, t, {"y": y}, noise)
        target = target_at(step, self.lam, o.hold_steps, o.ramp_steps)
        f_loss, ratio = flops_loss(gates, model.config, target)
        loss = terms["loss"].mean() + o.flops_weight * f_loss
        out = {"mse": terms["mse"].mean().detach(), "flops_loss": f_loss.detach(), "compute_ratio": ratio.detach(),
               "target": torch.tensor(target), "gate_noise": torch.tensor(gate_noise), **_gate_fractions(gates)}
        if step < o.complete_steps:
            complete = lambda x_t, t_model, y: model.forward_masked(x_t, t_model, y, "complete")[0]
            full = diffusion.training_losses(complete, x0, t, {"y": y}, noise)["loss"].mean()
            loss = loss + full
        # always logged (nan when off) so the loss CSV keeps one set of columns across phases and resumes
        out["complete_loss"] = full.detach() if step < o.complete_steps else torch.tensor(float("nan"))
        return {"loss": loss, **out}


def _gate_fractions(gates) -> dict:
    with torch.no_grad():
        return {name: torch.stack([g[i].mean() for g in gates]).mean() for i, name in
                enumerate(("head_frac", "group_frac", "token_frac"))}


class DyDiTMethod(DyDiTVocabulary, Method):
    name = "dydit"
    budget_help = "FLOPs target λ in (0, 1] with two decimals, e.g. 0.50 (one fine-tune per λ)"

    # ------------------------------------------------------------------ models
    def convert(self, base, options):
        """A DyDiT from a base DiT, or a DyLatte from a Latte base (every gate open: the base's function)."""
        options = self.parse_options(options)
        if isinstance(base, Latte):
            return eval_model(DyLatte.from_latte(base, router_config(options)))
        model = DyDiT.from_dit(base, router_config(options))
        return eval_model(model)

    def load_model(self, checkpoint, spec: ModelSpec, options):
        config = model_config(spec.name, spec.image_size, **spec.overrides())
        options = self.parse_options(options)
        model = (DyLatte if isinstance(config, LatteConfig) else DyDiT)(config, router_config(options))
        return eval_model(load_into(model, checkpoint, what=f"dydit {spec.name} at image size {spec.image_size}"))

    def load_official(self, checkpoint, spec: ModelSpec, options):
        """The authors' released DyDiT (``ditpareto.models.dydit_official``: their key names, one MLP group per head)
        checked key by key against our DyDiT of ``spec``, then loaded under our names."""
        if spec.name in LATTE_ARCHS:
            raise InputError(f"the authors released image DyDiT checkpoints only; {spec.name} is a video model "
                             "(source: official needs a DiT arch)")
        config = dit_config(spec.name, spec.image_size, **spec.overrides())
        options = self.parse_options(options)
        if options.mlp_groups not in (None, config.num_heads):
            raise InputError(f"options.mlp_groups {options.mlp_groups}: the authors' checkpoints have one MLP group "
                             f"per head ({config.num_heads} for {spec.name}); leave it null")
        model = DyDiT(config, router_config(options))
        state, info = read_official(checkpoint)
        check_official(state, model.state_dict(), f"DyDiT checkpoint {checkpoint}",
                       f"dydit {spec.name} at image size {spec.image_size}")
        model.load_state_dict(official_to_ours(state))
        return eval_model(model), info

    def finetune(self, model: DyDiT, data, options, budget, train, state_path, log_csv):

        if budget is None:
            raise InputError("dydit fine-tunes once per λ: pass --budget")
        options = self.parse_options(options)
        lam = self.parse_budget(budget)
        if isinstance(lam, FullCompute):
            raise InputError(f"dydit fine-tunes a FLOPs target λ, not {self.budget_label(lam)!r}")
        for name, p in model.named_parameters():
            p.requires_grad_(name not in ("pos_embed", "temp_embed"))  # the fixed sin-cos embeddings stay
        routers = set(map(id, model.router_parameters()))
        groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in routers]},
                  {"params": model.router_parameters(), "lr": train.lr * options.router_lr_scale}]
        train = replace(train, log_every=1)
        loss_fn = DyDiTLoss(lam, options, resume_step(state_path, train) or 0)  # the λ ramp continues on resume
        ema = run_training(model, data.as_model_input(), torch.from_numpy(data.labels), train, state_path, log_csv,
                           loss_fn=loss_fn, trainable=groups)
        return eval_model(ema)

    def train_step_macs(self, model: DyDiT, x0, y, options, budget):
        """The masked dynamic forward (full width: masks do not save training compute) with its routers, and
        its backward; plus the complete-model loss during the first complete_steps steps."""

        options = self.parse_options(options)
        lam = self.parse_budget(budget)
        model.requires_grad_(True)
        base = GaussianDiffusion.base()
        later = count_train_macs(DyDiTLoss(lam, options, options.complete_steps), model, x0, y, base)
        first = count_train_macs(DyDiTLoss(lam, options, 0), model, x0, y, base) if options.complete_steps else later
        return lambda step: first if step < options.complete_steps else later

    # ------------------------------------------------------------------ sampling
    def plan(self, model: DyDiT, budget, settings: SamplingSettings, spec: ModelSpec, options=None) -> SamplingPlan:

        lam = self.parse_budget(budget)
        space_timesteps(1000, settings.sampler, settings.steps)
        diffusion = GaussianDiffusion.respaced(settings.sampler, settings.steps)
        if isinstance(lam, FullCompute):  # parity: every head, channel group and token (routers bypassed)
            complete = lambda x, t, y: model.forward_masked(x, t, y, "complete")[0]  # noqa: E731
            return SamplingPlan(diffusion, cfg_denoiser(complete, settings, spec.in_channels, spec.num_classes),
                                calls_per_step=2 if settings.guided else 1,
                                details={"lambda": lam.of, "routers": "bypassed"}, device=model_device(model))
        steps = diffusion.num_timesteps
        model_t = [int(diffusion.timestep_map[steps - 1 - step]) for step in range(steps)]
        masks = [model.width_masks(t) for t in model_t]  # batch-independent: precomputed per sampling step
        model.clear_width_cache()
        step_stats = [RoutingStats() for _ in range(steps)]  # kept tokens per step and layer, while counting

        def denoise(x, step, t, y):
            if int(t[0]) != model_t[step] or bool((t != t[0]).any()):
                raise ValueError(f"step {step} expects model timestep {model_t[step]} for the whole batch")
            widths = model.gather_widths(masks[step])
            forward = lambda xx, tt, yy: model.forward_sliced(xx, tt, yy, widths, step_stats[step])
            return cfg_denoiser(forward, settings, spec.in_channels, spec.num_classes)(x, step, t, y)

        config = model.config
        heads = [sum(int(h.sum()) for h, _ in m) for m in masks]
        groups = [sum(int(g.sum()) for _, g in m) for m in masks]
        details = {
            "lambda": lam,
            "heads_active_per_step": " ".join(map(str, heads)),
            "groups_active_per_step": " ".join(map(str, groups)),
            "head_frac": sum(heads) / (steps * config.depth * config.num_heads),
            "group_frac": sum(groups) / (steps * config.depth * model.num_groups),
            "mlp_groups": model.num_groups,
        }
        plan = SamplingPlan(diffusion, denoise, calls_per_step=2 if settings.guided else 1,
                            step_key=lambda step: step, details=details, device=model_device(model))
        n = self.parse_options(options).flops_samples

        def count(sampled_macs) -> dict:
            for stats in step_stats:
                stats.kept.clear(), stats.total.clear()
                stats.enabled = True
            try:
                macs = sampled_macs(plan, spec, settings, n, batch_size=min(n, 256))
            finally:
                for stats in step_stats:
                    stats.enabled = False
            static = dit_macs_per_call(config)
            blocks = sum(f_attn + f_mlp for f_attn, f_mlp in block_flops(config))
            router = token_router_macs(config)
            nonblock = static - blocks
            kept = [sum(s.kept[layer] for s in step_stats if s.kept) for layer in range(config.depth)]
            total = [sum(s.total[layer] for s in step_stats if s.total) for layer in range(config.depth)]
            rates = [k / t for k, t in zip(kept, total)]
            details.update({
                "flops_count_samples": n,
                "executed_compute_ratio": macs["macs_per_call"] / static,
                "block_compute_ratio": (macs["macs_per_call"] - nonblock - config.depth * router) / blocks,
                "token_keep_rate": sum(rates) / len(rates),
                "token_keep_per_layer": " ".join(f"{r:.3f}" for r in rates),
                "analytic_gmacs_per_image": self.recorded_macs(model, masks, step_stats) / n / 1e9,
            })
            return macs

        plan.macs_counter = count
        return plan

    @staticmethod
    def recorded_macs(model, masks, step_stats) -> float:
        """The closed form (``spec.dydit.sliced_macs_per_call``) of the sliced calls a count ran, from its recorded
        routing decisions: per step, the step's active heads and groups per layer and the tokens each layer kept
        out of those it saw (every image or clip of the step's calls, both CFG halves)."""
        config = model.config
        tokens = config.num_tokens * (config.num_frames if isinstance(config, LatteConfig) else 1)
        macs = 0.0
        for layer_masks, stats in zip(masks, step_stats):
            if not stats.total:
                continue
            calls = stats.total[0] / tokens  # single-image (clip) network calls of the step
            kept = [k / t for k, t in zip(stats.kept, stats.total)]
            macs += calls * sliced_macs_per_call(config, model.num_groups, [int(h.sum()) for h, _ in layer_masks],
                                                 [int(g.sum()) for _, g in layer_masks], kept)
        return macs
