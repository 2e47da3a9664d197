"""FlexDiT (a.k.a. SparseDiT): token-sparse SDTMs with a timestep-wise token-density schedule.

Budget = the pruning-rate range (r_min, r_max), label ``RMIN-RMAX`` (e.g. ``0.61-0.86``); each budget is its own
fine-tune (``per_budget``), as in the paper. See docs/methods/flexdit.md.

Schedule (spec section 2.2; the same at training and sampling). With K stages (default 4) over the original
timesteps t in [0, T), T = 1000:
  stage k = min(K-1, floor(K t / T))        (k = 0 near data, k = K-1 near pure noise)
  r_k     = r_min + (r_max - r_min) k/(K-1)  (r = 1 - M/N is the pruning rate: most tokens near data)
  s_k     = clamp(round(sqrt(N (1 - r_k))), 1, grid side)   (sparse grid s_k x s_k, M = s_k^2)
e.g. 256 px (16x16 tokens) [0.61, 0.86] -> s = 10, 9, 8, 6; the default study (8x8 tokens) [0.61, 0.86] -> 5, 4, 4, 3.

A Latte base (video; ``models/flexlatte``) takes the same budgets, schedule and options. N is the tokens per frame,
and s_k x s_k is each frame's sparse grid. Fine-tuning takes clips x0 (N, F, C, H, W).
"""

from __future__ import annotations

import torch

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.errors import InputError
from ditpareto.flops import count_train_macs
from ditpareto.methods.base import Method, eval_model
from ditpareto.archs import LATTE_ARCHS, latte_config
from ditpareto.models import dit_config
from ditpareto.models.checkpoint import load_into
from ditpareto.models.flexdit import FlexDiT, flexdit_from_dit
from ditpareto.models.flexlatte import FlexLatte, flexlatte_from_latte
from ditpareto.models.latte import Latte
from ditpareto.plans import SamplingPlan, cfg_denoiser, model_device
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.train import distributed_env, run_training
from ditpareto.spec import FullCompute
from ditpareto.spec.flexdit import (
    FlexDiTOptions, FlexDiTVocabulary, flexdit_macs_per_call, stage_bounds, stage_of, stage_rates, stage_sides,
)
from ditpareto.archs import FlexLayout


# Fixed sin-cos tables, never trained: DiT's and Latte's position embeddings and Latte's frame embedding.
FIXED_TABLES = ("pos_embed", "temp_embed")


def batch_stage(t: torch.Tensor, stages: int) -> int:
    """The one stage of a batch of model timesteps (ValueError when they span stages)."""
    found = {stage_of(v, stages) for v in t.tolist()}
    if len(found) != 1:
        raise ValueError(f"a FlexDiT batch needs one token count, but its timesteps span stages {sorted(found)}")
    return found.pop()


def stratified_loss(sides: list[int]):
    """DiT's loss with the batch split into len(sides) micro-batches, micro-batch k drawing t uniformly from stage k
    and running at side s_k: each micro-batch has one token count and t stays uniform over the batch (spec 2.3)."""
    stages = len(sides)

    def loss_fn(model, x0, y, diffusion: GaussianDiffusion) -> dict:
        chunks = torch.arange(len(x0)).tensor_split(stages)
        total, mse, vb, out = 0.0, 0.0, 0.0, {}
        for k, idx in enumerate(chunks):
            lo, hi = stage_bounds(k, stages, diffusion.num_timesteps)
            t = torch.randint(lo, hi, (len(idx),))
            terms = diffusion.training_losses(lambda x, tt, y: model(x, tt, y, side=sides[k]), x0[idx], t,
                                              {"y": y[idx]}, torch.randn_like(x0[idx]))
            total = total + terms["loss"].sum()
            mse = mse + terms["mse"].detach().sum()
            vb = vb + terms["vb"].detach().sum() if "vb" in terms else vb
            out[f"loss_stage{k}"] = terms["loss"].detach().mean()
        n = len(x0)
        result = {"loss": total / n, "mse": mse / n}
        if torch.is_tensor(vb):
            result["vb"] = vb / n
        return {**result, **out}

    return loss_fn


#################################################################################
#                                    Method                                     #
#################################################################################


class FlexDiTMethod(FlexDiTVocabulary, Method):
    name = "flexdit"
    budget_help = "pruning-rate range RMIN-RMAX, two decimals, 0 < RMIN <= RMAX <= 1 (e.g. 0.61-0.86)"

    # ------------------------------------------------------------------ models
    @staticmethod
    def _build_kwargs(options: FlexDiTOptions) -> dict:
        layout = FlexLayout(**options.layout) if options.layout else None
        return {"layout": layout, "stages": options.stages, "pf_mode": options.pf_mode,
                "w1_after_upsample": options.w1_after_upsample, "pos_reinject": options.pos_reinject}

    def convert(self, base, options) -> FlexDiT | FlexLatte:
        """A FlexDiT from a DiT, or (video) a FlexLatte from a Latte model."""
        kwargs = self._build_kwargs(self.parse_options(options))
        if isinstance(base, Latte):
            return eval_model(flexlatte_from_latte(base, **kwargs))
        return eval_model(flexdit_from_dit(base, **kwargs))

    def load_model(self, checkpoint, spec: ModelSpec, options) -> FlexDiT | FlexLatte:
        kwargs = self._build_kwargs(self.parse_options(options))
        if spec.name in LATTE_ARCHS:
            model = FlexLatte(latte_config(spec.name, spec.image_size, **spec.overrides()), **kwargs)
            what = (f"flexdit on video {spec.name} at image size {spec.image_size} with layout "
                    f"{model.layout.to_dict()} over block pairs")
        else:
            model = FlexDiT(dit_config(spec.name, spec.image_size, **spec.overrides()), **kwargs)
            what = f"flexdit {spec.name} at image size {spec.image_size} with layout {model.layout.to_dict()}"
        return eval_model(load_into(model, checkpoint, what=what))

    def sides(self, model: FlexDiT, budget) -> list[int]:
        budget = self.parse_budget(budget)
        if isinstance(budget, FullCompute):
            return [model.grid_size] * model.stages
        return stage_sides(budget, model.grid_size, model.stages)

    def finetune(self, model: FlexDiT, data, options, budget, train, state_path, log_csv):

        if budget is None or isinstance(self.parse_budget(budget), FullCompute):
            raise InputError("flexdit fine-tunes once per budget: pass --budget RMIN-RMAX")
        world = distributed_env()[1]
        if train.batch_size // world < model.stages:
            raise InputError(f"flexdit needs a batch of at least stages ({model.stages}) per process (batch_size "
                             f"{train.batch_size} over {world}): one micro-batch per stage")
        for name, param in model.named_parameters():
            param.requires_grad_(name not in FIXED_TABLES)  # the sin-cos tables stay fixed, as in DiT and Latte
        loss_fn = stratified_loss(self.sides(model, budget))
        return run_training(model, data.as_model_input(), torch.from_numpy(data.labels), train, state_path, log_csv,
                            loss_fn=loss_fn)

    def train_step_macs(self, model: FlexDiT, x0, y, options, budget):
        """The stratified loss: one micro-batch per density stage at its sparse side, forward and backward."""

        model.requires_grad_(True)
        macs = count_train_macs(stratified_loss(self.sides(model, budget)), model, x0, y, GaussianDiffusion.base())
        return lambda step: macs

    # ------------------------------------------------------------------ sampling
    def plan(self, model: FlexDiT, budget, settings: SamplingSettings, spec: ModelSpec, options=None) -> SamplingPlan:
        full = isinstance(self.parse_budget(budget), FullCompute)
        budget = self.parse_budget(budget).of if full else self.parse_budget(budget)
        sides, stages = self.sides(model, FullCompute(budget) if full else budget), model.stages
        diffusion = GaussianDiffusion.respaced(settings.sampler, settings.steps)
        step_stage = [stage_of(diffusion.timestep_map[diffusion.num_timesteps - 1 - step], stages)
                      for step in range(diffusion.num_timesteps)]

        def forward(x, t, y):
            return model(x, t, y, side=sides[batch_stage(t, stages)])

        n = model.config.num_tokens  # per frame for a Latte base
        video = {"frames": model.config.num_frames} if isinstance(model, FlexLatte) else {}
        details = {
            "r_min": budget.r_min, "r_max": budget.r_max, "stages": stages, "full_compute": full,
            "stage_rates": [round(r, 4) for r in stage_rates(budget, stages)],
            "sparse_sides": sides, "sparse_tokens": [s * s for s in sides], "dense_tokens": n,
            "realised_rates": [round(1 - s * s / n, 4) for s in sides],
            "steps_per_stage": [step_stage.count(k) for k in range(stages)],
            "layout": model.layout.to_dict(), **video,
            # Closed form per network call and stage (tests check it equals the executed count).
            "gmacs_per_call_by_stage": [
                flexdit_macs_per_call(model.config, model.layout, s, model.pf_mode, model.w1_after_upsample) / 1e9
                for s in sides
            ],
        }
        return SamplingPlan(diffusion, cfg_denoiser(forward, settings, spec.in_channels, spec.num_classes),
                            calls_per_step=2 if settings.guided else 1, step_key=lambda step: step_stage[step],
                            details=details, device=model_device(model))
