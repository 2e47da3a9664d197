"""Generating a grid point's samples: per-sample seeds, batched sampling, in-process latency."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ditpareto.diffusion import per_sample_labels, per_sample_randn, sample_generators, sample_loop
from ditpareto.errors import InputError
from ditpareto.flops import count_macs, plan_macs
from ditpareto.models import model_config
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.plans import SamplingPlan
from ditpareto.timing import DeviceClock


@dataclass
class SampleBatch:
    images: np.ndarray  # uint8 (N, H, W, C); clips (N, F, H, W, C)
    labels: np.ndarray  # int64 (N,)
    indices: np.ndarray  # global sample indices (N,)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] float (N, C, H, W) -> uint8 (N, H, W, C), rounding as DiT does (clamp(127.5 x + 128)); clips
    (N, F, C, H, W) -> (N, F, H, W, C)."""
    order = (0, 1, 3, 4, 2) if x.ndim == 5 else (0, 2, 3, 1)
    return torch.clamp(127.5 * x + 128.0, 0, 255).to(torch.uint8).permute(*order).numpy()


def initial_state(spec: ModelSpec, seed: int, indices: Sequence[int]):
    """Labels and starting noise of the given global sample indices (shared by all methods: paired samples)."""
    generators = sample_generators(seed, indices)
    labels = per_sample_labels(generators, spec.num_classes)
    noise = per_sample_randn(generators, model_config(spec.name, spec.image_size, **spec.overrides()).sample_shape)
    return generators, labels, noise


@torch.no_grad()
def generate(
    plan: SamplingPlan,
    spec: ModelSpec,
    settings: SamplingSettings,
    seed: int,
    indices: Sequence[int],
    batch_size: int,
    progress: bool = True,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[SampleBatch, list[float]]:
    """Sample the given global indices on the plan's device; returns the samples and the seconds per image of each
    batch's reverse process (timed in-process, decoding excluded; callers drop the first batch as warm-up).

    Noise and labels are drawn on the CPU (per-sample generators: the same on any device) and moved.
    ``decode`` maps the model's output space to images in [-1, 1] (the SD-VAE decoder for latent models)."""
    device = plan.device
    indices = np.asarray(indices, dtype=np.int64)
    images, labels, seconds_per_image = [], [], []
    batches = range(0, len(indices), batch_size)
    clock = DeviceClock(device)
    for start in tqdm(batches, desc="sample", disable=not progress, mininterval=5):
        chunk = indices[start : start + batch_size]
        generators, y, noise = initial_state(spec, seed, chunk)
        y_dev = y.to(device)
        with clock.measure() as elapsed:
            x = sample_loop(plan.diffusion, lambda x, step, t: plan.denoise(x, step, t, y_dev), noise.to(device),
                            generators, settings.sampler, settings.eta)
        seconds_per_image.append(elapsed() / len(chunk))
        out = (decode(x) if decode else x).cpu()
        if not bool(torch.isfinite(out).all()):  # would become all-black images and a meaningless FID
            raise InputError(f"sampling produced non-finite values (NaN/Inf) for sample indices {chunk[0]}.."
                             f"{chunk[-1]}: check the checkpoint and the guidance scale")
        images.append(out)
        labels.append(y)
    if not images:
        raise ValueError("no sample indices given")
    return SampleBatch(to_uint8(torch.cat(images)), torch.cat(labels).numpy(), indices), seconds_per_image


@torch.no_grad()
def sampled_macs(plan: SamplingPlan, spec: ModelSpec, settings: SamplingSettings, num_samples: int, seed: int = 0,
                 batch_size: int = 64) -> dict:
    """MACs per image counted while the sampler generates samples 0..num_samples-1 of ``seed`` (the grid's own
    labels and noise), CFG included: for methods whose compute depends on the data (a plan's ``macs_counter`` is
    handed this function)."""
    total = count_macs(lambda: generate(plan, spec, settings, seed, range(num_samples), batch_size, progress=False))
    calls = plan.network_calls
    return {
        "macs_per_image": total / num_samples,
        "macs_per_call": total / num_samples / calls,
        "network_calls_per_image": calls,
        "steps": plan.num_steps,
    }


def counted_macs(plan: SamplingPlan, latent_shape: tuple[int, ...]) -> dict:
    """A plan's MACs per image: per distinct step (``flops.plan_macs``), or on sampled trajectories where its compute
    depends on the data (``sampled_macs``)."""
    return plan_macs(plan, latent_shape, sampled_macs=sampled_macs)
