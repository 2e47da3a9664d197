"""Latency measured on a quiet machine: every grid point's model in one job that holds all cores (or the GPU),
interleaved in rounds, at batch 1 and at the sampling batch, on the study's device and precision. On a GPU each
call is timed with CUDA events after the warm-up round; on a CPU with the wall clock.

A trajectory's latency per image is the sum over its steps of one guided network call (CFG included) divided by the
batch. Steps with identical compute (``plan.step_key``) are timed once per round and counted once per step; the
inputs are the states a real trajectory of the grid point's own seed passes through (token routing, for DyDiT,
depends on them), tiled to the batch. The sampler's own arithmetic is left out (a few element-wise ops per step).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

from ditpareto.diffusion import sample_loop
from ditpareto.runtime import device_record
from ditpareto.study import ModelSpec, SamplingSettings
from ditpareto.plans import SamplingPlan
from ditpareto.sampling import initial_state
from ditpareto.timing import DeviceClock, summarize


@dataclass
class Timed:
    """One grid point's plan with the states each step sees."""

    name: str
    plan: SamplingPlan
    states: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (x, model t, y) per step, 1 image each
    keys: dict  # step_key -> steps with that key


def recorded_states(plan: SamplingPlan, spec: ModelSpec, settings: SamplingSettings, seed: int) -> list[tuple]:
    """(x, model t, y) at every step of sample 0's real trajectory (on the plan's device)."""
    generators, y, noise = initial_state(spec, seed, [0])
    y, noise = y.to(plan.device), noise.to(plan.device)
    states = []

    def denoise(x, step, t):
        states.append((x.clone(), t.clone(), y))
        return plan.denoise(x, step, t, y)

    with torch.no_grad():
        sample_loop(plan.diffusion, denoise, noise, generators, settings.sampler, settings.eta)
    return states


def prepare(name: str, plan: SamplingPlan, spec: ModelSpec, settings: SamplingSettings, seed: int) -> Timed:
    keys: dict = {}
    for step in range(plan.num_steps):
        keys.setdefault(plan.step_key(step), []).append(step)
    return Timed(name, plan, recorded_states(plan, spec, settings, seed), keys)


@torch.no_grad()
def time_trajectory(timed: Timed, batch: int, clock: DeviceClock) -> float:
    """Seconds per image of one trajectory at ``batch`` (one timed call per distinct step kind)."""
    total = 0.0
    for key, steps in timed.keys.items():
        step = steps[0]
        x, t, y = timed.states[step]
        xs, ts, ys = x.expand(batch, *x.shape[1:]).contiguous(), t.expand(batch), y.expand(batch)
        with clock.measure() as elapsed:
            timed.plan.denoise(xs, step, ts, ys)
        total += elapsed() * len(steps)
    return total / batch


def measure(points: list[Timed], batches: list[int], rounds: int, warmup: int = 1) -> list[dict]:
    """Rows (point, batch, median, min, max, rounds) of ms per image; every round times every point in turn.
    The points' plans share one device (CUDA events there, the wall clock on a CPU)."""
    samples = {(p.name, b): [] for p in points for b in batches}
    clock = DeviceClock(points[0].plan.device if points else "cpu")
    for round_index in range(warmup + rounds):
        for point in points:
            for batch in batches:
                seconds = time_trajectory(point, batch, clock)
                if round_index >= warmup:
                    samples[(point.name, batch)].append(1000 * seconds)
    rows = []
    for (name, batch), values in samples.items():
        timing = summarize(values)
        rows.append({"point": name, "batch_size": batch, "latency_ms_per_image": timing.median,
                     "latency_ms_min": timing.min, "latency_ms_max": timing.max, "rounds": timing.count})
    return rows


def machine(device: str | torch.device = "cpu") -> dict:
    """What the timings depend on: CPU, threads, torch and its math libraries, and the device that computed (for
    a GPU: its name, memory, compute capability, CUDA runtime, cuDNN and driver)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "blas_threads": blas_threads(), "torch": torch.__version__,
            **math_libraries(), **device_record(device)}


def blas_threads() -> int:
    """The most threads any loaded BLAS pool (numpy's, scipy's) may use: the metrics' linear algebra runs there."""
    from threadpoolctl import threadpool_info

    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=0)


def math_libraries() -> dict:
    """The BLAS and oneDNN builds torch uses, and the CPU capability it dispatches to."""
    import re

    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    lines = [line.strip(" -") for line in config.splitlines()]
    return {"blas": blas.group(1) if blas else "unknown",
            "blas_build": next((line for line in lines if "Math Kernel Library" in line or "OpenBLAS" in line), ""),
            "onednn": next((line for line in lines if "MKL-DNN" in line or "oneDNN" in line), ""),
            "cpu_capability": next((line.split(":", 1)[1].strip() for line in lines
                                    if line.startswith("CPU capability usage")), "")}
