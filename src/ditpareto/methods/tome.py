"""tome as a pipeline method: the base DiT sampled with token merging (``models.tome``); no training.

Budget label "R" (two decimals, e.g. "0.50"): every block merges r = floor(R * N) of its N tokens before the
sublayers named by the options (``merge_attn``, ``merge_mlp``) and unmerges after. Compute does not depend on the
data, so the default per-step MAC counting (``flops.plan_macs``) applies.
"""

from __future__ import annotations

from functools import partial

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.errors import InputError
from ditpareto.methods.base import Method
from ditpareto.methods.dit import StaticDiT
from ditpareto.models.dit import DiT
from ditpareto.models.tome import merged_tokens_per_block, tome_forward
from ditpareto.plans import SamplingPlan, cfg_denoiser, model_device
from ditpareto.spec.tome import TOME_ONLY_IMAGES, ToMeOptions, ToMeVocabulary, tome_macs_per_call
from ditpareto.study import ModelSpec, SamplingSettings


class ToMeMethod(ToMeVocabulary, Method):
    name = "tome"

    def convert(self, base, options):
        _require_dit(base)
        return StaticDiT().convert(base, options)

    def load_model(self, checkpoint, spec: ModelSpec, options):
        return _require_dit(StaticDiT().load_model(checkpoint, spec, options))

    def plan(self, model, budget, settings: SamplingSettings, spec: ModelSpec, options=None) -> SamplingPlan:
        _require_dit(model)
        ratio = self.parse_budget(budget)
        opts: ToMeOptions = self.parse_options(options)
        diffusion = GaussianDiffusion.respaced(settings.sampler, settings.steps)
        forward = partial(tome_forward, model, ratio=ratio, merge_attn=opts.merge_attn, merge_mlp=opts.merge_mlp)
        denoise = cfg_denoiser(forward, settings, spec.in_channels, spec.num_classes)
        details = {
            "steps": settings.steps,
            "merge_ratio": ratio,
            "merged_tokens_per_block": merged_tokens_per_block(model, ratio, opts.merge_attn, opts.merge_mlp),
            "analytic_gmacs_per_call": tome_macs_per_call(model.config, ratio, opts.merge_attn, opts.merge_mlp) / 1e9,
        }
        return SamplingPlan(diffusion, denoise, calls_per_step=2 if settings.guided else 1, details=details,
                            device=model_device(model))


def _require_dit(model):
    if not isinstance(model, DiT):
        raise InputError(TOME_ONLY_IMAGES)
    return model
