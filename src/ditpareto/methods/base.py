"""What a method is to the pipeline: a budget vocabulary, a model loader and a sampling plan."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ditpareto.errors import InputError
from ditpareto.models import DiT
from ditpareto.plans import SamplingPlan
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.spec import MethodOptions, Vocabulary


class Method(Vocabulary):
    """Base class; one subclass per method module, registered in ``ditpareto.methods.METHODS``.

    A method's ``options`` (config ``methods.<name>.options``, passed to every command as JSON) are parsed by
    ``parse_options``; the pipeline runs: ``convert`` (base DiT -> method model, saved with ``state_to_save``)
    -> ``finetune`` (once, or once per budget) -> ``load_model`` + ``plan`` for sampling.
    """

    name: str = ""
    budget_help: str = ""

    # ------------------------------------------------------------------ models
    def convert(self, base: DiT, options: MethodOptions) -> torch.nn.Module:
        """The method's model initialised from a pretrained base DiT (before any fine-tuning)."""
        raise NotImplementedError

    def state_to_save(self, model: torch.nn.Module) -> dict:
        """What a converted or fine-tuned checkpoint holds (a state dict)."""
        return model.state_dict()

    def load_model(self, checkpoint, spec: ModelSpec, options: MethodOptions) -> torch.nn.Module:
        """The method's model from its checkpoint (keys and shapes validated), in eval mode."""
        raise NotImplementedError

    def load_official(self, checkpoint, spec: ModelSpec, options: MethodOptions) -> tuple[torch.nn.Module, dict]:
        """The method's model from its authors' released checkpoint (their key layout, validated), in eval mode,
        and what was read (``entry``, training ``args``); config ``source: official``."""
        raise InputError(f"method {self.name} has no importer of its authors' checkpoints (source: official)")

    def finetune(self, model: torch.nn.Module, data, options: MethodOptions, budget, train, state_path, log_csv):
        """Fine-tune ``model`` (from ``convert``) on ``data`` (an ImageSet); returns the EMA model to save.

        ``budget`` is None for a shared fine-tune; ``train`` is a ``ditpareto.train.TrainConfig``.
        """
        raise InputError(f"method {self.name} has no fine-tuning stage")

    def training_run(self, train, options: MethodOptions):
        """The run this method trains with, from the shared recipe's (``train``: a ``ditpareto.train.TrainConfig``):
        unchanged, except for a method that trains only parameters of its own (L2C's router: its lr, no EMA); the
        training record states this run."""
        return train

    def train_step_macs(self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, options: MethodOptions,
                        budget) -> Callable[[int], float]:
        """MACs of fine-tuning step i (forward and backward of everything the loss runs: teachers, complete-model
        and MMD terms included), counted by executing the method's loss on the batch (x0, y) with the sampling
        counter; an expectation over the loss's random choices where it has any."""
        raise InputError(f"method {self.name} has no fine-tuning stage")

    # ------------------------------------------------------------------ sampling
    def plan(self, model: torch.nn.Module, budget, settings: SamplingSettings, spec: ModelSpec,
             options: MethodOptions | None = None) -> SamplingPlan:
        """How the model samples at ``budget``: its respaced diffusion and per-step network call (``options``: the
        method's, for plans that read one)."""
        raise NotImplementedError


def eval_model(model: DiT) -> DiT:
    model.eval()
    model.requires_grad_(False)
    return model
