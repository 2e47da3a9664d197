"""How a (method, budget) samples: the respaced diffusion and a per-step guided network call. Shared by the methods,
the sampler, the FLOPs counter and the latency job (it imports no method)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, field

import torch

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.models.dit import guided_forward
from ditpareto.study import SamplingSettings


@dataclass
class SamplingPlan:
    """How one (method, budget) denoises: the respaced diffusion and a per-step guided model call.

    ``denoise(x, step, t, y)`` returns the model output for the conditional half (CFG applied);
    ``step_key(step)`` is equal for steps with identical compute, so FLOPs can be counted once per key;
    ``calls_per_step`` is the number of single-image network calls per image and step (2 with CFG; the mean over
    the steps when only some are guided);
    ``macs_counter(sampled_macs)``, when set, replaces per-key counting for data-dependent compute (e.g. token
    routing): given the sampler's counter (``sampling.sampled_macs``: the sampling layer hands it down, so no method
    imports the sampler), it returns ``plan_macs``'s dict counted on real sampling trajectories;
    ``device`` is where the model and every tensor the plan holds live: build a plan after moving its model.
    """

    diffusion: GaussianDiffusion
    denoise: Callable[[torch.Tensor, int, torch.Tensor, torch.Tensor], torch.Tensor]
    calls_per_step: float
    step_key: Callable[[int], Hashable] = field(default=lambda step: None)
    details: dict = field(default_factory=dict)
    macs_counter: Callable[[Callable], dict] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def num_steps(self) -> int:
        return self.diffusion.num_timesteps

    @property
    def network_calls(self) -> int:
        """Single-image network calls per image over the trajectory."""
        return round(self.num_steps * self.calls_per_step)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (a plan's device)."""
    return next(model.parameters()).device


def cfg_denoiser(forward: Callable, settings: SamplingSettings, in_channels: int, num_classes: int,
                 guided_steps: Collection[int] | None = None):
    """Standard DiT classifier-free guidance around ``forward(x, t, y)``: null label = ``num_classes``. Given
    ``guided_steps``, only those steps are guided; the others make one conditional call."""

    def denoise(x: torch.Tensor, step: int, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not settings.guided or (guided_steps is not None and step not in guided_steps):
            return forward(x, t, y)
        x_in = torch.cat([x, x])
        y_in = torch.cat([y, torch.full_like(y, num_classes)])
        out = guided_forward(forward, x_in, torch.cat([t, t]), y_in, settings.cfg_scale, in_channels,
                             settings.guidance_channels)
        return out[: len(x)]

    return denoise
