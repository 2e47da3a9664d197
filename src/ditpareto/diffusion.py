"""Gaussian diffusion as in DiT (improved-DDPM maths): linear-beta schedule, eps-MSE + learned-variance VLB
loss, timestep respacing, respaced DDPM (DiT's default sampler), DDIM and DPM-Solver++(2M).

The step maths is ours (float64 tables, as DiT); tests check it against diffusers' DDPMScheduler (custom
timesteps, ``learned_range`` variance), DDIMScheduler and DPMSolverMultistepScheduler (custom timesteps). We do not
call diffusers' DDIM at run time because it cannot take DiT's ``ddimN`` timestep set (an integer stride giving
exactly N steps, e.g. 167 for N=6, where diffusers uses 1000 // 6 = 166).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ditpareto.errors import InputError
from ditpareto.respacing import SAMPLERS, space_timesteps  # noqa: F401  (re-exported)


#################################################################################
#                                   Schedules                                   #
#################################################################################


def linear_betas(num_timesteps: int = 1000) -> np.ndarray:
    """DiT's linear schedule, scaled so that any step count spans the same noise range."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)


class GaussianDiffusion:
    """Diffusion over a (possibly respaced) schedule; ``timestep_map[i]`` is the model's timestep for index i."""

    def __init__(self, betas: np.ndarray, timestep_map: Sequence[int] | None = None):
        self._tables: dict[int, tuple[np.ndarray, torch.Tensor]] = {}
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        self.log_betas = np.log(betas)
        self.num_timesteps = len(betas)
        self.timestep_map = np.asarray(timestep_map if timestep_map is not None else range(len(betas)))
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        variance = self.posterior_variance
        self.posterior_log_variance_clipped = np.log(np.append(variance[1], variance[1:]) if len(variance) > 1 else variance)
        large = np.append(variance[1], betas[1:]) if len(betas) > 1 else betas
        self.fixed_log_variance = np.log(large)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    @classmethod
    def base(cls, num_timesteps: int = 1000) -> GaussianDiffusion:
        return cls(linear_betas(num_timesteps))

    @classmethod
    def respaced(cls, sampler: str, steps: int, num_timesteps: int = 1000) -> GaussianDiffusion:
        """DiT's SpacedDiffusion: new betas from the cumulative alphas at the kept timesteps."""
        base = cls.base(num_timesteps)
        kept = space_timesteps(num_timesteps, sampler, steps)
        last, betas = 1.0, []
        for t in kept:
            betas.append(1 - base.alphas_cumprod[t] / last)
            last = base.alphas_cumprod[t]
        return cls(np.array(betas), kept)

    # ------------------------------------------------------------------ helpers
    def _take(self, arr: np.ndarray, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """arr[t] (float64 table) as x's dtype, broadcastable against x."""
        key = id(arr)
        if key not in self._tables:
            self._tables[key] = (arr, torch.from_numpy(np.ascontiguousarray(arr)))
        out = self._tables[key][1].to(x.device)[t].to(x.dtype)
        return out.view(-1, *([1] * (x.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.timestep_map).to(t.device)[t]

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        t = t.to(x_start.device)
        return self._take(self.sqrt_alphas_cumprod, t, x_start) * x_start + self._take(
            self.sqrt_one_minus_alphas_cumprod, t, x_start
        ) * noise

    def q_posterior(self, x_start, x_t, t):
        mean = self._take(self.posterior_mean_coef1, t, x_t) * x_start + self._take(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._take(self.posterior_log_variance_clipped, t, x_t)

    def predict_xstart_from_eps(self, x_t, t, eps):
        return self._take(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self._take(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, log-variance and x0 prediction of p(x_{t-1} | x_t) from a model output (eps [+ variance])."""
        eps, variance = split_output(model_output, x_t)
        if variance is not None:  # learned_range variance
            frac = (variance + 1) / 2
            min_log = self._take(self.posterior_log_variance_clipped, t, x_t)
            max_log = self._take(self.log_betas, t, x_t)
            log_variance = frac * max_log + (1 - frac) * min_log
        else:  # fixed large variance, as improved-DDPM for models without learn_sigma
            log_variance = self._take(self.fixed_log_variance, t, x_t).expand_as(x_t)
        pred_xstart = self.predict_xstart_from_eps(x_t, t, eps)
        mean, _ = self.q_posterior(pred_xstart, x_t, t)
        return mean, log_variance, pred_xstart

    # ------------------------------------------------------------------ training
    def training_losses(self, model: Callable, x_start, t, model_kwargs: dict, noise: torch.Tensor) -> dict:
        """DiT's loss: eps-MSE, plus the VLB term (with a frozen mean) when the model learns its variance."""
        t = t.to(x_start.device)  # losses draw t on the CPU; the batch may be on a GPU
        x_t = self.q_sample(x_start, t, noise)
        output = model(x_t, self.model_timesteps(t), **model_kwargs)
        eps, variance = split_output(output, x_start)
        mse = ((noise - eps) ** 2).mean(dim=list(range(1, x_start.ndim)))
        terms = {"mse": mse, "loss": mse}
        if variance is not None:
            frozen = torch.cat([eps.detach(), variance], dim=channel_dim(x_start))
            terms["vb"] = self.vb_terms_bpd(frozen, x_start, x_t, t)
            terms["loss"] = mse + terms["vb"]
        return terms

    def vb_terms_bpd(self, model_output, x_start, x_t, t) -> torch.Tensor:
        true_mean, true_log_variance = self.q_posterior(x_start, x_t, t)
        mean, log_variance, _ = self.p_mean_variance(model_output, x_t, t)
        dims = list(range(1, x_start.ndim))
        kl = normal_kl(true_mean, true_log_variance, mean, log_variance).mean(dim=dims) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_variance).mean(dim=dims) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    # ------------------------------------------------------------------ sampling
    def ddpm_step(self, model_output, x_t, t, noise: torch.Tensor) -> torch.Tensor:
        mean, log_variance, _ = self.p_mean_variance(model_output, x_t, t)
        nonzero = (t != 0).to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        return mean + nonzero * torch.exp(0.5 * log_variance) * noise

    def ddim_step(self, model_output, x_t, t, noise: torch.Tensor | None = None, eta: float = 0.0) -> torch.Tensor:
        _, _, pred_xstart = self.p_mean_variance(model_output, x_t, t)
        eps = (self._take(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart) / self._take(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )
        alpha_bar = self._take(self.alphas_cumprod, t, x_t)
        alpha_bar_prev = self._take(self.alphas_cumprod_prev, t, x_t)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean = pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        if eta == 0:
            return mean
        nonzero = (t != 0).to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        return mean + nonzero * sigma * noise


    def dpmpp_2m_step(self, model_output, x_t, index: int, previous_x0: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DPM-Solver++(2M) step from respaced index ``index`` to ``index - 1`` (index 0: to the clean sample),
        as diffusers' DPMSolverMultistepScheduler (data prediction, midpoint, final sigma 0): first order on the
        first step (``previous_x0`` None) and the last, second order in between. Returns (x_prev, x0 prediction)."""
        t = torch.full((x_t.shape[0],), index, dtype=torch.long, device=x_t.device)
        _, _, x0 = self.p_mean_variance(model_output, x_t, t)
        if index == 0:  # sigma 0: the step lands on the data prediction
            return x0, x0
        lam = self._lambdas()
        abar_s, abar_t = self.alphas_cumprod[index], self.alphas_cumprod_prev[index]
        h = lam[index - 1] - lam[index]
        ratio = math.sqrt((1 - abar_t) / (1 - abar_s))
        coeff = -math.sqrt(abar_t) * math.expm1(-h)  # alpha_t (1 - e^-h)
        if previous_x0 is None or index + 1 >= self.num_timesteps:
            return ratio * x_t + coeff * x0, x0
        r = (lam[index] - lam[index + 1]) / h
        d1 = (x0 - previous_x0) / r
        return ratio * x_t + coeff * x0 + 0.5 * coeff * d1, x0

    def _lambdas(self) -> np.ndarray:
        """Half log-SNR, log(alpha / sigma), per respaced index."""
        return 0.5 * (np.log(self.alphas_cumprod) - np.log1p(-self.alphas_cumprod))


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of data in [-1, 1] discretised to 256 bins under a Gaussian."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


#################################################################################
#                          Per-sample seeded randomness                         #
#################################################################################


# torch's CPU generator (mt19937) keeps only the low 32 bits of its seed, so a 64-bit layout such as
# ``(seed << 32) + index`` would make every seed draw the same noise. Sample ``index`` of ``seed`` therefore uses
# the 32-bit generator seed ``seed * MAX_SAMPLES_PER_SEED + index``: distinct for every (seed, index) in range, and
# equal to ``index`` for seed 0.
MAX_SAMPLES_PER_SEED = 1 << 20
MAX_SEED = (1 << 32) // MAX_SAMPLES_PER_SEED - 1


def generator_seed(seed: int, index: int) -> int:
    """The torch generator seed of global sample ``index`` under ``seed`` (unique, below 2**32)."""
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    if not 0 <= index < MAX_SAMPLES_PER_SEED:
        raise InputError(f"sample index must be in [0, {MAX_SAMPLES_PER_SEED}), got {index}")
    return seed * MAX_SAMPLES_PER_SEED + index


def sample_generators(seed: int, indices: Sequence[int]) -> list[torch.Generator]:
    """One generator per global sample index: outputs do not depend on batch size, shard count or device count."""
    return [torch.Generator().manual_seed(generator_seed(seed, int(i))) for i in indices]


def channel_dim(x: torch.Tensor) -> int:
    """The channel axis: 1 for images (N, C, H, W), 2 for clips (N, F, C, H, W) as Latte lays them out."""
    return 2 if x.ndim == 5 else 1


def split_output(output: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A model output as (eps, learned variance or None) along the channel axis of ``x``."""
    dim = channel_dim(x)
    channels = x.shape[dim]
    eps = output.narrow(dim, 0, channels)
    if output.shape[dim] == 2 * channels:
        return eps, output.narrow(dim, channels, channels)
    return eps, None


def per_sample_randn(generators: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])


def per_sample_labels(generators: Sequence[torch.Generator], num_classes: int) -> torch.Tensor:
    return torch.cat([torch.randint(0, num_classes, (1,), generator=g) for g in generators])


def sample_loop(
    diffusion: GaussianDiffusion,
    denoise: Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    generators: Sequence[torch.Generator],
    sampler: str = "ddim",
    eta: float = 0.0,
) -> torch.Tensor:
    """Run the reverse process. ``denoise(x, step, model_t)`` returns the (guided) model output for step
    ``step`` (0 = first, noisiest) at model timesteps ``model_t``; methods switch networks per step through it."""
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    x, x0 = noise, None
    steps = list(range(diffusion.num_timesteps))[::-1]
    for step, index in enumerate(steps):
        t = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
        output = denoise(x, step, diffusion.model_timesteps(t))
        if sampler == "dpmpp-2m":
            x, x0 = diffusion.dpmpp_2m_step(output, x, index, x0)
        elif sampler == "ddpm":
            x = diffusion.ddpm_step(output, x, t, per_sample_randn(generators, x.shape[1:]).to(x.device))
        else:
            step_noise = per_sample_randn(generators, x.shape[1:]).to(x.device) if eta > 0 else None
            x = diffusion.ddim_step(output, x, t, step_noise, eta)
    return x
