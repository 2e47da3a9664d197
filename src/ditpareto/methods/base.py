"""What a method is to the pipeline: a budget vocabulary, a model loader and a sampling plan."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.errors import InputError
from ditpareto.models import DiT
from ditpareto.models.dit import guided_forward
from ditpareto.study import FINETUNE_MODES, FULL_PREFIX


class FullCompute(NamedTuple):
    """Budget "full@B": the model fine-tuned for budget ``of`` run at full compute (the method's parity point)."""

    of: object


def split_full(text) -> tuple[bool, object]:
    """(is "full@B", B) for a budget label or value."""
    if isinstance(text, FullCompute):
        return True, text.of
    text_s = str(text)
    if text_s.startswith(FULL_PREFIX):
        return True, text_s[len(FULL_PREFIX):]
    return False, text


@dataclass(frozen=True)
class ModelSpec:
    """The base DiT's shape, as given in config (``base`` section)."""

    name: str
    image_size: int
    in_channels: int = 4
    num_classes: int = 1000

    def overrides(self) -> dict:
        return {"in_channels": self.in_channels, "num_classes": self.num_classes}


@dataclass(frozen=True)
class SamplingSettings:
    """Sampler settings shared by every method (the budget may change ``steps`` for step-reduction methods)."""

    sampler: str = "ddim"
    steps: int = 10
    cfg_scale: float = 1.5
    guidance_channels: str = "dit3"
    eta: float = 0.0

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


@dataclass
class SamplingPlan:
    """How one (method, budget) denoises: the respaced diffusion and a per-step guided model call.

    ``denoise(x, step, t, y)`` returns the model output for the conditional half (CFG applied);
    ``step_key(step)`` is equal for steps with identical compute, so FLOPs can be counted once per key;
    ``calls_per_step`` is the number of single-image network calls per image and step (2 with CFG);
    ``macs_counter``, when set, replaces per-key counting for data-dependent compute (e.g. token routing): it
    returns ``plan_macs``'s dict counted on real sampling trajectories (see ``flops.sampled_macs``).
    """

    diffusion: GaussianDiffusion
    denoise: Callable[[torch.Tensor, int, torch.Tensor, torch.Tensor], torch.Tensor]
    calls_per_step: int
    step_key: Callable[[int], Hashable] = field(default=lambda step: None)
    details: dict = field(default_factory=dict)
    macs_counter: Callable[[], dict] | None = None

    @property
    def num_steps(self) -> int:
        return self.diffusion.num_timesteps


def cfg_denoiser(forward: Callable, settings: SamplingSettings, in_channels: int, num_classes: int):
    """Standard DiT classifier-free guidance around ``forward(x, t, y)``: null label = ``num_classes``."""

    def denoise(x: torch.Tensor, step: int, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not settings.guided:
            return forward(x, t, y)
        x_in = torch.cat([x, x])
        y_in = torch.cat([y, torch.full_like(y, num_classes)])
        out = guided_forward(forward, x_in, torch.cat([t, t]), y_in, settings.cfg_scale, in_channels,
                             settings.guidance_channels)
        return out[: len(x)]

    return denoise


class Method:
    """Base class; one subclass per method module, registered in ``ditpareto.methods.METHODS``.

    A method's ``options`` (config ``methods.<name>.options``, passed to every command as JSON) are parsed by
    ``parse_options``; the pipeline runs: ``convert`` (base DiT -> method model, saved with ``state_to_save``)
    -> ``finetune`` (once, or once per budget) -> ``load_model`` + ``plan`` for sampling.
    """

    name: str = ""
    budget_help: str = ""

    @property
    def finetune_mode(self) -> str:
        """"none" (samples the base), "shared" (one fine-tune for all budgets) or "per_budget" (study.FINETUNE_MODES)."""
        return FINETUNE_MODES[self.name]

    # ------------------------------------------------------------------ vocabulary
    def parse_budget(self, text: str):
        raise NotImplementedError

    def budget_label(self, value) -> str:
        raise NotImplementedError

    def parse_options(self, options: dict | None) -> dict:
        """Validated options with defaults filled; InputError names an unknown or bad key."""
        if options:
            raise InputError(f"method {self.name} takes no options, got {sorted(options)}")
        return {}

    def full_budget(self, settings: SamplingSettings):
        """The budget that spends the static DiT's compute at ``settings.steps``."""
        raise NotImplementedError

    def nominal_compute_ratio(self, budget, settings: SamplingSettings) -> float:
        """The budget's intended compute relative to the static DiT at ``settings.steps`` (for labels only)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ models
    def convert(self, base: DiT, options: dict) -> torch.nn.Module:
        """The method's model initialised from a pretrained base DiT (before any fine-tuning)."""
        raise NotImplementedError

    def state_to_save(self, model: torch.nn.Module) -> dict:
        """What a converted or fine-tuned checkpoint holds (a state dict)."""
        return model.state_dict()

    def load_model(self, checkpoint, spec: ModelSpec, options: dict) -> torch.nn.Module:
        """The method's model from its checkpoint (keys and shapes validated), in eval mode."""
        raise NotImplementedError

    def finetune(self, model: torch.nn.Module, data, options: dict, budget, train, state_path, log_csv):
        """Fine-tune ``model`` (from ``convert``) on ``data`` (an ImageSet); returns the EMA model to save.

        ``budget`` is None for a shared fine-tune; ``train`` is a ``ditpareto.train.TrainConfig``.
        """
        raise InputError(f"method {self.name} has no fine-tuning stage")

    def train_step_macs(self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, options: dict,
                        budget) -> Callable[[int], float]:
        """MACs of fine-tuning step i (forward and backward of everything the loss runs: teachers, complete-model
        and MMD terms included), counted by executing the method's loss on the batch (x0, y) with the sampling
        counter; an expectation over the loss's random choices where it has any."""
        raise InputError(f"method {self.name} has no fine-tuning stage")

    # ------------------------------------------------------------------ sampling
    def plan(self, model: torch.nn.Module, budget, settings: SamplingSettings, spec: ModelSpec) -> SamplingPlan:
        raise NotImplementedError


def eval_model(model: DiT) -> DiT:
    model.eval()
    model.requires_grad_(False)
    return model
