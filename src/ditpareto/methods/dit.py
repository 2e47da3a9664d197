"""Static DiT with fewer sampling steps: the baseline every dynamic method must beat."""

from __future__ import annotations

import numpy as np

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.flops import count_train_macs
from ditpareto.methods.base import Method, eval_model
from ditpareto.models import load_model
from ditpareto.plans import SamplingPlan, cfg_denoiser, model_device
from ditpareto.respacing import space_timesteps
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.train import diffusion_loss, run_training
from ditpareto.spec.dit import StepsVocabulary


class StaticDiT(StepsVocabulary, Method):
    name = "dit"

    def convert(self, base, options):
        return eval_model(base)

    def load_model(self, checkpoint, spec: ModelSpec, options):
        return eval_model(load_model(checkpoint, spec.name, spec.image_size, **spec.overrides()))

    def plan(self, model, budget, settings: SamplingSettings, spec: ModelSpec, options=None) -> SamplingPlan:
        budget = self.parse_budget(budget)
        steps = budget.steps
        space_timesteps(1000, settings.sampler, steps)  # fails early for an unrealisable DDIM step count
        diffusion = GaussianDiffusion.respaced(settings.sampler, steps)
        if not budget.interval:
            denoise = cfg_denoiser(model.forward, settings, spec.in_channels, spec.num_classes)
            return SamplingPlan(diffusion, denoise, calls_per_step=2 if settings.guided else 1,
                                details={"steps": steps}, device=model_device(model))
        interval = self.parse_options(options).guidance_interval
        guided = interval_steps(diffusion, interval) if settings.guided else set()
        denoise = cfg_denoiser(model.forward, settings, spec.in_channels, spec.num_classes, guided)
        return SamplingPlan(diffusion, denoise, calls_per_step=(steps + len(guided)) / steps,
                            step_key=lambda step: step in guided, device=model_device(model),
                            details={"steps": steps, "guidance_interval": list(interval),
                                     "guided_steps": sorted(guided)})


def interval_steps(diffusion: GaussianDiffusion, interval: tuple[float, float]) -> set[int]:
    """The steps (0 = noisiest) whose input noise level sigma = sqrt((1 - abar) / abar) lies in (low, high]."""
    low, high = interval
    abar = diffusion.alphas_cumprod[::-1]
    sigma = np.sqrt((1 - abar) / abar)
    return {step for step, s in enumerate(sigma) if low < s <= high}



class FineTunedDiT(StaticDiT):
    """Static DiT given a fine-tune like the dynamic methods' (DiT's loss, same data, EMA), then fewer steps.

    The control that separates "the method" from "more training": at toy scale the base DiT is not converged, so
    any fine-tune improves FID, and a dynamic method must beat this curve, not only the untouched base's.
    """

    name = "dit-ft"

    def train_step_macs(self, model, x0, y, options, budget):

        macs = count_train_macs(diffusion_loss, model.requires_grad_(True), x0, y, GaussianDiffusion.base())
        return lambda step: macs

    def finetune(self, model, data, options, budget, train, state_path, log_csv):
        import torch


        model.requires_grad_(True)
        ema = run_training(model, data.as_model_input(), torch.from_numpy(data.labels), train, state_path, log_csv)
        return eval_model(ema)
