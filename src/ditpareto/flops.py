"""Compute counted from executed ops (torch.utils.flop_counter), reported as multiply-accumulates (MACs).

DiT's "GFLOPs" are GMACs (one multiply-add = 1): FlopCounterMode counts 2 per MAC, so we halve it.
On CPU, SDPA runs ``_scaled_dot_product_flash_attention_for_cpu``, which FlopCounterMode does not know;
we map it to the generic SDPA formula so attention matmuls are counted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ditpareto.plans import SamplingPlan
from ditpareto.archs import DiTConfig

_aten = torch.ops.aten
_CPU_SDPA = {
    _aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(
        q, k, v
    ),
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda g, q, k, v, *a, out_shape=None, **kw: (
        sdpa_backward_flop_count(g, q, k, v)
    ),
}


def count_macs(fn: Callable[[], object]) -> int:
    """MACs executed by ``fn()`` (matmuls, convolutions, attention; not norms or elementwise ops)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_SDPA) as counter:
        fn()
    return counter.get_total_flops() // 2


def count_train_macs(loss_fn, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, diffusion) -> int:
    """MACs of one training step: ``loss_fn(model, x0, y, diffusion)["loss"]`` forward and backward (the optimizer
    and EMA updates run no matmuls). On a copy of the model, with the global RNG restored afterwards."""
    import copy

    model = copy.deepcopy(model).train()

    def step():
        loss_fn(model, x0, y, diffusion)["loss"].backward()

    with torch.random.fork_rng(devices=[]):
        return count_macs(step)


def steps_for_train_macs(macs_at: Callable[[int], float], budget_macs: float, limit: int = 10**7) -> tuple[int, float]:
    """(steps, MACs) of the run whose cumulative training MACs come closest to ``budget_macs`` (at least 1 step)."""
    total, steps = 0.0, 0
    while steps < limit:
        step = macs_at(steps)
        if total + step / 2 > budget_macs and steps >= 1:
            break
        total += step
        steps += 1
    return steps, total


@torch.no_grad()
def plan_macs(plan: SamplingPlan, latent_shape: tuple[int, ...], sampled_macs=None) -> dict:
    """MACs per image over the plan's whole trajectory, CFG included, counted by executing each distinct
    step once (steps sharing ``plan.step_key`` have identical compute) on one image; plans whose compute depends
    on the data count on real trajectories instead (``plan.macs_counter(sampled_macs)``, given the sampler's counter
    ``sampling.sampled_macs``: ``sampling.counted_macs`` passes it)."""
    if plan.macs_counter is not None:
        if sampled_macs is None:
            raise ValueError("this plan's compute depends on the data: count it on sampled trajectories "
                             "(sampling.counted_macs)")
        return plan.macs_counter(sampled_macs)
    x = torch.randn(1, *latent_shape).to(plan.device)
    y = torch.zeros(1, dtype=torch.long, device=plan.device)
    per_key: dict = {}
    total = 0
    for step in range(plan.num_steps):
        key = plan.step_key(step)
        if key not in per_key:
            index = plan.num_steps - 1 - step
            t = plan.diffusion.model_timesteps(torch.tensor([index], device=plan.device))
            per_key[key] = count_macs(lambda: plan.denoise(x, step, t, y))
        total += per_key[key]
    calls = plan.network_calls
    return {
        "macs_per_image": total,
        "macs_per_call": total / calls,
        "network_calls_per_image": calls,
        "steps": plan.num_steps,
    }


def summarize(macs: dict) -> dict:
    """The reported views: GMACs per call (DiT/DyDiT column), per image over the trajectory, and 2x FLOPs."""
    return {
        "gmacs_per_call": macs["macs_per_call"] / 1e9,
        "gmacs_per_image": macs["macs_per_image"] / 1e9,
        "gflops_per_image": 2 * macs["macs_per_image"] / 1e9,
        "network_calls_per_image": macs["network_calls_per_image"],
        "steps": macs["steps"],
        "flops_convention": "MACs (1 multiply-add = 1), counted by torch.utils.flop_counter; gflops = 2 x gmacs",
    }
