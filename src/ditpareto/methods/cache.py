"""fora and l2c: feature caching across sampling steps on a frozen DiT (``ditpareto.models.cache``).

FORA samples the base DiT (no training) under a fixed schedule; L2C trains only a router (DiT frozen, Adam, one
router shared by every budget) and samples under the schedule its logits give at the budget. Both plans count MACs
on real trajectories (a cached step needs the cache its earlier steps filled): the executed-ops counter sees nothing
for a cached unit, and ``details`` records the closed form beside it.
"""

from __future__ import annotations

import dataclasses

import torch

from ditpareto.archs import LATTE_ARCHS
from ditpareto.diffusion import GaussianDiffusion
from ditpareto.errors import InputError
from ditpareto.methods.base import Method, eval_model
from ditpareto.models import dit_config, load_model
from ditpareto.models.cache import (
    CachedDiT, CacheSchedule, FeatureCache, L2CLoss, cache_bytes_per_image, cached_forward, cached_macs_per_image,
    fora_schedule, l2c_train_step_macs, load_cached_state, router_schedule,
)
from ditpareto.models.dit import DiT
from ditpareto.plans import SamplingPlan, cfg_denoiser, model_device
from ditpareto.respacing import space_timesteps
from ditpareto.spec.cache import CACHE_ONLY_IMAGES, ForaVocabulary, L2COptions, L2CVocabulary, routed_step_list
from ditpareto.study import ModelSpec, SamplingSettings, TrainConfig
from ditpareto.train import run_training

# Images sampled to count a plan's MACs: its compute does not depend on the data, only on the cache being filled.
COUNT_SAMPLES = 8


def refuse_video(name: str, model_name: str) -> None:
    if model_name in LATTE_ARCHS:
        raise InputError(f"{name} {CACHE_ONLY_IMAGES}: {model_name} is a video arch")


def cache_plan(model: DiT, schedule: torch.Tensor, settings: SamplingSettings, spec: ModelSpec, details: dict
               ) -> SamplingPlan:
    """The plan of any DiT sampling under ``schedule`` (S, D, 2) with a cache of its own (reset at step 0 of every
    batch); its MACs are counted on ``COUNT_SAMPLES`` real trajectories."""
    if not isinstance(model, DiT):
        raise InputError(f"feature caching {CACHE_ONLY_IMAGES}, got a {type(model).__name__}")
    space_timesteps(1000, settings.sampler, settings.steps)  # fails early for an unrealisable step count
    diffusion = GaussianDiffusion.respaced(settings.sampler, settings.steps)
    schedule = CacheSchedule.of(schedule, len(model.blocks))
    if schedule.steps != diffusion.num_timesteps:
        raise InputError(f"the cache schedule has {schedule.steps} steps, the sampler {diffusion.num_timesteps}")
    cache = FeatureCache()
    config = model.config

    def denoise(x: torch.Tensor, step: int, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        forward = lambda xx, tt, yy: cached_forward(model, xx, tt, yy, step, schedule, cache)  # noqa: E731
        return cfg_denoiser(forward, settings, spec.in_channels, spec.num_classes)(x, step, t, y)

    details = {
        **details,
        "steps": schedule.steps,
        "units_computed_per_step": " ".join(map(str, schedule.units_per_step())),
        "computed_fraction": schedule.computed_fraction(),
        "analytic_gmacs_per_image": cached_macs_per_image(config, schedule, settings.guided) / 1e9,
        "cache_bytes_per_image": cache_bytes_per_image(config, schedule, settings.guided),  # float32; see below
    }
    plan = SamplingPlan(diffusion, denoise, calls_per_step=2 if settings.guided else 1,
                        step_key=lambda step: schedule.rows[step], details=details, device=model_device(model))

    def count(sampled_macs) -> dict:
        macs = sampled_macs(plan, spec, settings, COUNT_SAMPLES, batch_size=COUNT_SAMPLES)
        # what the run kept, in the precision it ran (half the float32 figure under bf16 autocast)
        details["cache_bytes_per_image"] = round(cache.bytes_per_row() * (2 if settings.guided else 1))
        details["flops_count_samples"] = COUNT_SAMPLES
        return macs

    plan.macs_counter = count
    return plan


class ForaMethod(ForaVocabulary, Method):
    name = "fora"

    def convert(self, base, options):
        if not isinstance(base, DiT):
            raise InputError(f"fora {CACHE_ONLY_IMAGES}, got a {type(base).__name__}")
        return eval_model(base)

    def load_model(self, checkpoint, spec: ModelSpec, options):
        refuse_video(self.name, spec.name)
        return eval_model(load_model(checkpoint, spec.name, spec.image_size, **spec.overrides()))

    def plan(self, model, budget, settings: SamplingSettings, spec: ModelSpec, options=None) -> SamplingPlan:
        refuse_video(self.name, spec.name)
        interval = self.parse_budget(budget)
        blocks = self.parse_options(options).blocks
        if not isinstance(model, DiT):
            raise InputError(f"fora {CACHE_ONLY_IMAGES}, got a {type(model).__name__}")
        schedule = fora_schedule(settings.steps, len(model.blocks), interval, blocks)
        return cache_plan(model, schedule, settings, spec,
                          {"interval": interval, "blocks": list(blocks) if blocks else [0, len(model.blocks)]})


def l2c_train_config(train: TrainConfig, options: L2COptions) -> TrainConfig:
    """The router's run: the recipe's steps and batch, the router's lr, no EMA (decay 0: the returned model is the
    trained router) and no weight decay (Adam)."""
    return dataclasses.replace(train, lr=options.lr, ema_decay=0.0, weight_decay=0.0)


def routed_steps(options: L2COptions) -> list[int]:
    return routed_step_list(options.sampler_steps, options.routed_steps)


class L2CMethod(L2CVocabulary, Method):
    name = "l2c"

    # ------------------------------------------------------------------ models
    def convert(self, base, options):
        """The base DiT with a fresh router (every logit 0) for ``options.sampler_steps`` steps."""
        if not isinstance(base, DiT):
            raise InputError(f"l2c {CACHE_ONLY_IMAGES}, got a {type(base).__name__}")
        return eval_model(CachedDiT.from_dit(base, self.parse_options(options).sampler_steps))

    def load_model(self, checkpoint, spec: ModelSpec, options):
        refuse_video(self.name, spec.name)
        options = self.parse_options(options)
        model = CachedDiT(dit_config(spec.name, spec.image_size, **spec.overrides()), options.sampler_steps)
        what = f"l2c {spec.name} at image size {spec.image_size} with a {options.sampler_steps}-step router"
        return eval_model(load_cached_state(model, checkpoint, what))

    def finetune(self, model: CachedDiT, data, options, budget, train, state_path, log_csv):
        """Train the router only (the DiT frozen) with L2C's objective on the respaced diffusion of the options'
        sampler and steps; ``train`` is ``training_run``'s (resumable, logged as every fine-tune)."""
        if budget is not None:
            raise InputError("l2c trains one router for every budget (shared): run it without --budget")
        options = self.parse_options(options)
        self._check_router(model, options)
        model.requires_grad_(False)
        model.router.logits.requires_grad_(True)
        diffusion = GaussianDiffusion.respaced(options.sampler, options.sampler_steps)
        trained = run_training(model, data.as_model_input(), torch.from_numpy(data.labels),
                               train, state_path, log_csv,
                               loss_fn=L2CLoss(options.sparsity_weight, routed_steps(options)), diffusion=diffusion,
                               trainable=[model.router.logits])
        return eval_model(trained)

    def training_run(self, train, options):
        return l2c_train_config(train, self.parse_options(options))

    def train_step_macs(self, model: CachedDiT, x0, y, options, budget):
        """One router-training step, counted by executing it at the run's batch size (the options' where set: x0
        tiled or cut to it)."""
        options = self.parse_options(options)
        self._check_router(model, options)
        diffusion = GaussianDiffusion.respaced(options.sampler, options.sampler_steps)
        macs = l2c_train_step_macs(model, x0, y, diffusion, options.sparsity_weight, routed_steps(options))
        return lambda step: macs

    @staticmethod
    def _check_router(model, options: L2COptions) -> None:
        if not isinstance(model, CachedDiT) or model.router is None:
            raise InputError(f"l2c needs its converted model (a DiT with a router), got a {type(model).__name__}")
        if model.router.steps != options.sampler_steps:
            raise InputError(f"the model's router routes {model.router.steps} steps, options.sampler_steps is "
                             f"{options.sampler_steps}")

    # ------------------------------------------------------------------ sampling
    def plan(self, model: CachedDiT, budget, settings: SamplingSettings, spec: ModelSpec, options=None
             ) -> SamplingPlan:
        refuse_video(self.name, spec.name)
        fraction = self.parse_budget(budget)
        options = self.parse_options(options)
        self._check_router(model, options)
        trained = space_timesteps(1000, options.sampler, options.sampler_steps)
        sampled = space_timesteps(1000, settings.sampler, settings.steps)
        if trained != sampled:
            raise InputError(f"the l2c router was trained for {options.sampler} with {options.sampler_steps} steps; "
                             f"sampling with {settings.sampler} at {settings.steps} steps visits other timesteps "
                             "(set options.sampler and options.sampler_steps to the study's)")
        schedule = router_schedule(model.router.logits, fraction, routed_steps(options))
        return cache_plan(model, schedule, settings, spec,
                          {"fraction": fraction, "routed_steps": options.routed_steps})
