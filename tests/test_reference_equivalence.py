"""Our DiT and diffusion maths against independent references: diffusers' DiTTransformer2DModel, DDPMScheduler,
DDIMScheduler and DPMSolverMultistepScheduler, and torch.distributions. Every comparison runs on randomised weights / inputs so that it can fail."""

import ditpareto.compat  # noqa: F401  (before diffusers: makes the CUDA torchvision wheel importable)

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.models.embeddings import get_timestep_embedding
from torch.distributions import Normal, kl_divergence

from diffusers_reference import build_diffusers_dit, set_downscale_freq_shift, time_projections
from ditpareto.diffusion import (
    MAX_SAMPLES_PER_SEED,
    GaussianDiffusion,
    generator_seed,
    normal_kl,
    per_sample_randn,
    sample_generators,
    sample_loop,
)
from ditpareto.respacing import space_timesteps
from ditpareto.diffusion import MAX_SEED as GENERATOR_MAX_SEED
from ditpareto.errors import InputError
from ditpareto.models import CheckpointError, build_dit, load_dit
from ditpareto.models.dit import TimestepEmbedder

BETA_KW = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Random values for every parameter except the fixed sin-cos ``pos_embed`` (the default init zeroes the adaLN
    and final layers, which would make any comparison vacuous)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "pos_embed":
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    return model


#################################################################################
#                              1. DiT vs diffusers                              #
#################################################################################


@pytest.fixture(scope="module")
def dit_pair(tmp_path_factory):
    """(our dit-s-2 loaded from an official-layout file, its state dict, diffusers' model with official time proj)."""
    source = randomize(build_dit("dit-s-2", image_size=64), seed=1234)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    assert state["blocks.0.adaLN_modulation.1.weight"].abs().min() > 0  # not adaLN-Zero's init
    path = tmp_path_factory.mktemp("ckpt") / "DiT-S-2-64.pt"
    torch.save(state, path)  # a bare state dict, as the official checkpoints
    ours = load_dit(path, "dit-s-2", 64).eval()
    reference = build_diffusers_dit(state, ours.config, official_time_embedding=True)
    return ours, state, reference


def _inputs(seed: int = 7):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.randint(1, 1000, (3,), generator=gen)  # t=0 would make every frequency scaling agree (cos 0, sin 0)
    y = torch.randint(0, 1000, (3,), generator=gen)
    return x, t, y


def test_loaded_state_dict_round_trips(dit_pair):
    ours, state, _ = dit_pair
    loaded = ours.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_pos_embed_matches_diffusers_sincos(dit_pair):
    """diffusers recomputes the table (a non-persistent buffer) with base_size = grid and interpolation_scale=1,
    i.e. plain integer grid coordinates: it must equal the official table stored in our state dict."""
    ours, _, reference = dit_pair
    assert reference.pos_embed.interpolation_scale == 1
    assert reference.pos_embed.base_size == ours.config.grid_size
    assert "pos_embed.pos_embed" not in reference.state_dict()
    theirs = reference.pos_embed.pos_embed
    assert theirs.shape == ours.pos_embed.shape == (1, 16, 384)
    assert torch.allclose(theirs, ours.pos_embed, atol=1e-6, rtol=0)


def test_time_projection_settings():
    """diffusers' DiT builds its time projection with flip_sin_to_cos=True ([cos, sin], as DiT) but
    downscale_freq_shift=1 (exponent / (half - 1)); the official DiT divides by half, i.e. shift 0."""
    t = torch.tensor([0.0, 1.0, 17.0, 500.0, 999.0])
    official = TimestepEmbedder.timestep_embedding(t, 256)

    def theirs(flip, shift):
        return get_timestep_embedding(t, 256, flip_sin_to_cos=flip, downscale_freq_shift=shift)

    assert torch.allclose(theirs(True, 0), official, atol=1e-6)
    assert not torch.allclose(theirs(True, 1), official, atol=1e-3)  # diffusers' DiT default
    assert not torch.allclose(theirs(False, 0), official, atol=1e-3)


def test_dit_forward_matches_diffusers(dit_pair):
    ours, _, reference = dit_pair
    projections = time_projections(reference)
    assert len(projections) == ours.config.depth  # one CombinedTimestepLabelEmbeddings per block (ada_norm_zero)
    assert all(p.flip_sin_to_cos and p.downscale_freq_shift == 0 for p in projections)
    x, t, y = _inputs()
    with torch.no_grad():
        a = ours(x, t, y)
        b = reference(x, timestep=t, class_labels=y).sample
    assert a.shape == b.shape == (3, 8, 8, 8)  # learn_sigma: 2 * 4 output channels
    assert a.abs().max() > 0.1  # not a vacuous comparison of (near-)zero outputs
    diff = (a - b).abs().max().item()
    assert diff < 1e-5, diff


def test_dit_forward_differs_with_diffusers_default_time_projection(dit_pair):
    """Negative control: diffusers' default downscale_freq_shift=1 gives a different network."""
    ours, _, reference = dit_pair
    x, t, y = _inputs()
    try:
        assert set_downscale_freq_shift(reference, 1) == ours.config.depth
        with torch.no_grad():
            b = reference(x, timestep=t, class_labels=y).sample
    finally:
        set_downscale_freq_shift(reference, 0)
    with torch.no_grad():
        a = ours(x, t, y)
    assert (a - b).abs().max().item() > 1e-3


#################################################################################
#                              2. Checkpoint checks                             #
#################################################################################


@pytest.fixture(scope="module")
def micro_state():
    return {k: v.clone() for k, v in randomize(build_dit("dit-micro-2", image_size=32), seed=5).state_dict().items()}


def _load_error(tmp_path, obj, name="bad.pt") -> str:
    path = tmp_path / name
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as info:
        load_dit(path, "dit-micro-2", 32)
    return str(info.value)


def test_official_layout_loads(tmp_path, micro_state):
    path = tmp_path / "ok.pt"
    torch.save(micro_state, path)
    for source in (path, micro_state, {"ema": micro_state, "opt": {}}):
        model = load_dit(source, "dit-micro-2", 32)
        for key, value in model.state_dict().items():
            assert torch.equal(value, micro_state[key]), key


def test_missing_key_is_named(tmp_path, micro_state):
    state = dict(micro_state)
    del state["blocks.1.attn.qkv.bias"]
    message = _load_error(tmp_path, state)
    assert "missing" in message and "blocks.1.attn.qkv.bias" in message


def test_extra_key_is_named(tmp_path, micro_state):
    state = dict(micro_state, **{"blocks.2.attn.qkv.weight": micro_state["blocks.1.attn.qkv.weight"]})
    message = _load_error(tmp_path, state)
    assert "unexpected" in message and "blocks.2.attn.qkv.weight" in message


def test_misshaped_key_is_named(tmp_path, micro_state):
    state = dict(micro_state)
    state["final_layer.linear.weight"] = state["final_layer.linear.weight"][:16]  # learn_sigma=False shape
    message = _load_error(tmp_path, state)
    assert "final_layer.linear.weight" in message and "(16, 32)" in message


def test_wrong_image_size_is_named(tmp_path, micro_state):
    path = tmp_path / "ok.pt"
    torch.save(micro_state, path)
    with pytest.raises(CheckpointError, match="pos_embed"):
        load_dit(path, "dit-micro-2", 64)


def test_truncated_file(tmp_path, micro_state):
    path = tmp_path / "truncated.pt"
    torch.save(micro_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_dit(path, "dit-micro-2", 32)
    assert str(path) in str(info.value) and "truncated" in str(info.value)


def test_non_dict_checkpoint(tmp_path, micro_state):
    message = _load_error(tmp_path, list(micro_state.values()))
    assert "list" in message and "not a state dict" in message


def test_non_tensor_entry_is_named(tmp_path, micro_state):
    message = _load_error(tmp_path, dict(micro_state, epoch=3))
    assert "epoch" in message


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_dit(tmp_path / "nope.pt", "dit-micro-2", 32)


#################################################################################
#                        3. Schedulers vs diffusers                             #
#################################################################################


def test_base_schedule_matches_ddpm_scheduler():
    ours = GaussianDiffusion.base()
    theirs = DDPMScheduler(**BETA_KW)
    assert np.allclose(ours.betas, theirs.betas.double().numpy(), rtol=1e-6, atol=0)
    assert np.allclose(ours.alphas_cumprod, theirs.alphas_cumprod.double().numpy(), rtol=1e-5, atol=0)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 4, 8, 8, generator=gen)
    noise = torch.randn(5, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 1, 250, 777, 999])
    assert torch.allclose(ours.q_sample(x0, t, noise), theirs.add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)


def _ddpm_pair(steps: int = 25):
    diffusion = GaussianDiffusion.respaced("ddpm", steps)
    scheduler = DDPMScheduler(**BETA_KW, variance_type="learned_range", clip_sample=False)
    scheduler.set_timesteps(timesteps=list(reversed(diffusion.timestep_map.tolist())))
    return diffusion, scheduler


def _model_output(gen, shape):
    eps = torch.randn(shape, generator=gen)
    var = torch.rand(shape, generator=gen) * 2 - 1  # learned_range values in [-1, 1]
    return torch.cat([eps, var], dim=1)


@pytest.mark.parametrize("index", [24, 17, 9, 1, 0])
def test_ddpm_step_matches_diffusers(index):
    diffusion, scheduler = _ddpm_pair()
    timestep = int(diffusion.timestep_map[index])
    assert int(scheduler.timesteps[len(scheduler.timesteps) - 1 - index]) == timestep
    gen = torch.Generator().manual_seed(100 + index)
    x_t = torch.randn(3, 4, 8, 8, generator=gen)
    out = _model_output(gen, (3, 4, 8, 8))
    # diffusers draws randn_tensor(model_output[:, :C].shape, generator) = torch.randn(x_t.shape, generator=...)
    seed = 1000 + index
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(seed))
    ours = diffusion.ddpm_step(out, x_t, torch.full((3,), index), noise)
    theirs = scheduler.step(out, timestep, x_t, generator=torch.Generator().manual_seed(seed)).prev_sample
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-5 * max(1.0, theirs.abs().max().item()), diff
    # the noise term really enters (except at index 0, where neither adds any)
    ours_other = diffusion.ddpm_step(out, x_t, torch.full((3,), index), -noise)
    if index == 0:
        assert torch.equal(ours_other, ours)
    else:
        assert (ours_other - ours).abs().max() > 1e-3


def test_ddpm_posterior_log_variance_clipped():
    """DiT reuses the index-1 posterior variance at index 0 (where diffusers' variance is clamped to 1e-20); this only
    enters the VLB at t=0, never sampling (no noise at index 0)."""
    diffusion, _ = _ddpm_pair()
    assert diffusion.posterior_variance[0] == 0
    assert diffusion.posterior_log_variance_clipped[0] == diffusion.posterior_log_variance_clipped[1]
    assert np.allclose(diffusion.posterior_log_variance_clipped[1:], np.log(diffusion.posterior_variance[1:]))


_ABAR = torch.from_numpy(GaussianDiffusion.base().alphas_cumprod).float()


def _fake_model(seed: int):
    """A fixed, timestep-dependent eps / variance predictor that keeps samples bounded: eps = sqrt(1 - abar_t) x
    (the exact eps for N(0, I) data) plus a small nonlinear term; variance values tanh(.) in [-1, 1]."""
    weight = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed)) * 0.3

    def model(x, t):
        t = torch.as_tensor(t).reshape(-1).expand(x.shape[0])
        mix = torch.einsum("oc,nchw->nohw", weight, x)
        eps = (1 - _ABAR[t]).sqrt().view(-1, 1, 1, 1) * x + 0.1 * torch.tanh(mix[:, :4])
        return torch.cat([eps, torch.tanh(mix[:, 4:])], dim=1)

    return model


def test_ddpm_full_loop_matches_diffusers():
    """sample_loop (per-sample generators) vs diffusers with a list of generators: both draw the same per-sample
    noise (ours also draws one unused tensor after the last step)."""
    diffusion, scheduler = _ddpm_pair()
    model = _fake_model(11)
    x_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(12))
    ours = sample_loop(diffusion, lambda x, step, t: model(x, t), x_T.clone(), sample_generators(3, [0, 1]), "ddpm")
    generators = sample_generators(3, [0, 1])
    x = x_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), int(t), x, generator=generators).prev_sample
    diff = (ours - x).abs().max().item()
    assert diff < 1e-5 * max(1.0, x.abs().max().item()), diff
    # the per-step noise matters: another seed ends elsewhere
    other = sample_loop(diffusion, lambda x, step, t: model(x, t), x_T.clone(), sample_generators(4, [0, 1]), "ddpm")
    assert (other - x).abs().max() > 0.1


def test_seeds_give_distinct_reproducible_noise():
    """torch's CPU generator only uses the low 32 bits of its seed: the per-sample generator seeds must differ
    in those bits for every (seed, index), or every seed would draw the same noise."""
    shape = (4, 8, 8)
    a = per_sample_randn(sample_generators(0, [0, 1, 2]), shape)
    assert torch.equal(a, per_sample_randn(sample_generators(0, [0, 1, 2]), shape))  # reproducible
    assert torch.equal(a[1:], per_sample_randn(sample_generators(0, [1, 2]), shape))  # independent of batching
    assert not torch.equal(a[0], a[1])
    for other_seed in (1, 2, GENERATOR_MAX_SEED):
        b = per_sample_randn(sample_generators(other_seed, [0, 1, 2]), shape)
        assert not any(torch.equal(a[i], b[j]) for i in range(3) for j in range(3))
    assert torch.equal(a[0], torch.randn(shape, generator=torch.Generator().manual_seed(0)))  # seed 0: index
    indices = (0, 1, 49_999, MAX_SAMPLES_PER_SEED - 1)
    seeds = {generator_seed(s, i) for s in (0, 1, 7, GENERATOR_MAX_SEED) for i in indices}
    assert len(seeds) == 16 and max(seeds) < 2**32
    for bad in ((-1, 0), (GENERATOR_MAX_SEED + 1, 0), (0, MAX_SAMPLES_PER_SEED), (0, -1)):
        with pytest.raises(InputError):
            generator_seed(*bad)


def test_ddim_timesteps_and_loop_match_diffusers():
    diffusion = GaussianDiffusion.respaced("ddim", 50)
    scheduler = DDIMScheduler(
        **BETA_KW, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading", steps_offset=0
    )
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == list(reversed(diffusion.timestep_map.tolist()))

    model = _fake_model(21)
    x_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(22))
    # ours gets 2C channels (DDIM must ignore the variance half), diffusers the eps half only
    ours = sample_loop(diffusion, lambda x, step, t: model(x, t), x_T.clone(), sample_generators(0, [0, 1]), "ddim")
    x = x_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t)[:, :4], int(t), x, eta=0.0).prev_sample
    assert (x - x_T).abs().max() > 0.1
    diff = (ours - x).abs().max().item()
    assert diff < 1e-4 * max(1.0, x.abs().max().item()), diff


def _dpm_scheduler(diffusion: GaussianDiffusion) -> DPMSolverMultistepScheduler:
    """diffusers' DPM-Solver++(2M) with its defaults (midpoint, lower-order final, final sigma 0) on our timesteps."""
    scheduler = DPMSolverMultistepScheduler(**BETA_KW, algorithm_type="dpmsolver++", solver_order=2)
    scheduler.set_timesteps(timesteps=list(reversed(diffusion.timestep_map.tolist())))
    return scheduler


@pytest.mark.parametrize("steps", [10, 4, 20])
def test_dpmpp_2m_matches_diffusers_step_by_step(steps):
    """Each step of our DPM-Solver++(2M) from diffusers' own state equals diffusers' step (<= 1e-5), over a whole
    trajectory; and our sample_loop lands on diffusers' final sample."""
    diffusion = GaussianDiffusion.respaced("dpmpp-2m", steps)
    assert diffusion.timestep_map.tolist() == GaussianDiffusion.respaced("ddim", steps).timestep_map.tolist()
    scheduler = _dpm_scheduler(diffusion)
    model = _fake_model(31)
    x_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(32))
    x, previous, worst = x_T.clone(), None, 0.0
    for step, t in enumerate(scheduler.timesteps):
        out = model(x, int(t))
        theirs = scheduler.step(out[:, :4], int(t), x).prev_sample
        ours, previous = diffusion.dpmpp_2m_step(out, x, steps - 1 - step, previous)
        worst = max(worst, (ours - theirs).abs().max().item() / max(1.0, theirs.abs().max().item()))
        x = theirs
    assert worst <= 1e-5, worst
    assert (x - x_T).abs().max() > 0.1
    looped = sample_loop(diffusion, lambda z, step, t: model(z, t), x_T.clone(),
                         sample_generators(0, [0, 1]), "dpmpp-2m")
    assert (looped - x).abs().max().item() <= 1e-5 * max(1.0, x.abs().max().item())
    ddim = sample_loop(GaussianDiffusion.respaced("ddim", steps), lambda z, step, t: model(z, t),
                       x_T.clone(), sample_generators(0, [0, 1]), "ddim")
    assert (ddim - looped).abs().max() > 1e-3  # a second-order solver, not DDIM under another name


@pytest.mark.parametrize("index", [49, 20, 1, 0])
def test_ddim_stochastic_step_matches_diffusers(index):
    diffusion = GaussianDiffusion.respaced("ddim", 50)
    scheduler = DDIMScheduler(**BETA_KW, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    scheduler.set_timesteps(50)
    gen = torch.Generator().manual_seed(300 + index)
    x_t = torch.randn(3, 4, 8, 8, generator=gen)
    eps = torch.randn(3, 4, 8, 8, generator=gen)
    noise = torch.randn(3, 4, 8, 8, generator=gen)
    timestep = int(diffusion.timestep_map[index])
    ours = diffusion.ddim_step(eps, x_t, torch.full((3,), index), noise, eta=1.0)
    theirs = scheduler.step(eps, timestep, x_t, eta=1.0, variance_noise=noise).prev_sample
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-5 * max(1.0, theirs.abs().max().item()), diff


def test_space_timesteps_follow_dit():
    assert space_timesteps(1000, "ddim", 6) == [0, 167, 334, 501, 668, 835]  # integer stride giving exactly 6 steps
    scheduler = DDIMScheduler(**BETA_KW, timestep_spacing="leading", steps_offset=0)
    scheduler.set_timesteps(6)
    assert 1000 // 6 == 166
    assert sorted(scheduler.timesteps.tolist()) == [0, 166, 332, 498, 664, 830]  # why DDIM is not diffusers' here
    ddpm = space_timesteps(1000, "ddpm", 250)
    assert len(ddpm) == 250 and ddpm[:4] == [0, 4, 8, 12] and ddpm[-1] == 999
    assert space_timesteps(1000, "ddim", 50) == list(range(0, 1000, 20))


#################################################################################
#                             4. Training losses                                #
#################################################################################


def test_normal_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(8)
    m1, m2 = torch.randn(2, 1000, generator=gen, dtype=torch.float64)
    lv1, lv2 = torch.randn(2, 1000, generator=gen, dtype=torch.float64) * 2
    reference = kl_divergence(Normal(m1, torch.exp(0.5 * lv1)), Normal(m2, torch.exp(0.5 * lv2)))
    assert torch.allclose(normal_kl(m1, lv1, m2, lv2), reference, rtol=1e-9, atol=1e-12)


def _exact_discretized_nll_bits(x, mean, log_var):
    """-log2 P(bin of x) under N(mean, var) with the exact CDF; edge bins extend to +-infinity."""
    dist = Normal(mean, torch.exp(0.5 * log_var))
    upper = torch.where(x > 0.999, torch.ones_like(x), dist.cdf(x + 1 / 255))
    lower = torch.where(x < -0.999, torch.zeros_like(x), dist.cdf(x - 1 / 255))
    return -torch.log(upper - lower) / math.log(2.0)


def test_training_losses_learned_sigma():
    diffusion = GaussianDiffusion.base()
    gen = torch.Generator().manual_seed(9)
    n, c = 4, 4
    x0 = torch.randint(0, 256, (n, c, 8, 8), generator=gen).double() / 127.5 - 1  # 8-bit data, including +-1
    noise = torch.randn(n, c, 8, 8, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 0, 3, 600])
    y = torch.tensor([1, 2, 3, 4])
    eps_out = torch.randn(n, c, 8, 8, generator=gen, dtype=torch.float64) * 0.5
    var_out = torch.rand(n, c, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    output = torch.cat([eps_out, var_out], dim=1).requires_grad_(True)
    seen = {}

    def model(x, timesteps, y):
        seen.update(x=x, t=timesteps, y=y)
        return output

    terms = diffusion.training_losses(model, x0, t, {"y": y}, noise)
    assert set(terms) == {"mse", "vb", "loss"}
    assert torch.equal(seen["t"], t) and torch.equal(seen["y"], y)
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    eps, var = output[:, :c].detach(), output[:, c:].detach()
    assert torch.allclose(terms["mse"], ((noise - eps) ** 2).mean(dim=(1, 2, 3)))

    # independent reference of the VLB term (float64 tables straight from the schedule)
    betas = torch.from_numpy(diffusion.betas)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    post_var = betas * (1 - abar_prev) / (1 - abar)
    post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    for i, ti in enumerate(t.tolist()):
        x_t = math.sqrt(abar[ti]) * x0[i] + math.sqrt(1 - abar[ti]) * noise[i]
        assert torch.allclose(seen["x"][i], x_t)

        def posterior_mean(start):
            coef1 = betas[ti] * abar_prev[ti].sqrt() / (1 - abar[ti])
            coef2 = (1 - abar_prev[ti]) * (1 - betas[ti]).sqrt() / (1 - abar[ti])
            return coef1 * start + coef2 * x_t

        pred_x0 = (x_t - (1 - abar[ti]).sqrt() * eps[i]) / abar[ti].sqrt()
        frac = (var[i] + 1) / 2
        log_var = frac * torch.log(betas[ti]) + (1 - frac) * post_log_var[ti]
        if ti == 0:
            reference = _exact_discretized_nll_bits(x0[i], posterior_mean(pred_x0), log_var).mean()
            assert torch.isfinite(terms["vb"][i]) and terms["vb"][i] > 0
            # DiT's tanh-approximated CDF vs the exact one
            assert torch.allclose(terms["vb"][i], reference, rtol=1e-2), (terms["vb"][i], reference)
        else:
            true = Normal(posterior_mean(x0[i]), post_log_var[ti].mul(0.5).exp())
            model_dist = Normal(posterior_mean(pred_x0), torch.exp(0.5 * log_var))
            reference = kl_divergence(true, model_dist).mean() / math.log(2.0)
            assert torch.allclose(terms["vb"][i], reference, rtol=1e-8), (terms["vb"][i], reference)

    # the VLB term trains only the variance: the eps half gets the MSE gradient alone
    terms["loss"].sum().backward()
    mse_grad = -2 * (noise - eps) / eps[0].numel()
    assert torch.allclose(output.grad[:, :c], mse_grad)
    assert output.grad[:, c:].abs().sum() > 0


def test_training_losses_fixed_sigma_has_no_vb():
    diffusion = GaussianDiffusion.base()
    x0 = torch.rand(2, 4, 4, 4) * 2 - 1
    noise = torch.randn(2, 4, 4, 4)
    t, y = torch.tensor([0, 500]), torch.tensor([0, 1])
    terms = diffusion.training_losses(lambda x, t, y: 0.5 * x, x0, t, {"y": y}, noise)
    assert set(terms) == {"mse", "loss"}
    assert torch.equal(terms["loss"], terms["mse"])
