"""DiT's timestep respacing without torch: which of the 1000 training timesteps a sampler with N steps visits."""

from __future__ import annotations

from ditpareto.errors import InputError

# DPM-Solver++(2M) (Lu et al. 2022, data prediction, diffusers' DPMSolverMultistepScheduler defaults) visits
# DDIM's timesteps, so a step ladder compares solvers at the same model calls.
SAMPLERS = ("ddim", "ddpm", "dpmpp-2m")
SINGLE_STEP_SAMPLERS = ("ddim", "ddpm")  # the ones a training loss can run one step of


def space_timesteps(num_timesteps: int, sampler: str, steps: int) -> list[int]:
    """The original timesteps kept by DiT's respacing (``"ddimN"`` for DDIM and DPM-Solver++, ``"N"`` for DDPM)."""
    if not 1 <= steps <= num_timesteps:
        raise InputError(f"sampling steps must be in [1, {num_timesteps}], got {steps}")
    if sampler in ("ddim", "dpmpp-2m"):
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == steps:
                return list(range(0, num_timesteps, stride))
        raise InputError(f"cannot create exactly {steps} DDIM steps with an integer stride")
    if sampler == "ddpm":
        if steps == 1:
            return [0]
        frac_stride = (num_timesteps - 1) / (steps - 1)
        return sorted({round(i * frac_stride) for i in range(steps)})
    raise InputError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
