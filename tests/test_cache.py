"""fora and l2c (feature caching across sampling steps): exactness at full compute, executed MACs against the closed
form, cache reset and memory, router training, schedules, checkpoint validation, bf16."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import randomize_
from ditpareto.data import ImageSet
from ditpareto.diffusion import GaussianDiffusion, sample_loop
from ditpareto.errors import InputError
from ditpareto.flops import count_macs
from ditpareto.methods.cache import ForaMethod, L2CMethod, l2c_train_config
from ditpareto.methods.dit import StaticDiT
from ditpareto.models import build_dit
from ditpareto.models.cache import (
    ROUTER_KEY, CachedDiT, CacheSchedule, FeatureCache, L2CLoss, cache_bytes_per_image, cached_macs_per_image,
    fora_schedule, load_cached_state, router_schedule,
)
from ditpareto.runtime import precision_scope
from ditpareto.sampling import counted_macs, generate, initial_state
from ditpareto.spec import SPECS
from ditpareto.spec.cache import FORA, L2C, ForaOptions, L2COptions, cache_macs_per_call, routed_step_list
from ditpareto.spec.dit import dit_macs_per_call
from ditpareto.study import ModelSpec, SamplingSettings, TrainConfig

SPEC = ModelSpec("dit-tiny-2", 16, in_channels=1, num_classes=10)
STEPS = 6
UNGUIDED = SamplingSettings(steps=STEPS, cfg_scale=1.0)
GUIDED = SamplingSettings(steps=STEPS, cfg_scale=1.5)
SHAPE = (1, 16, 16)
FORA_METHOD, L2C_METHOD = ForaMethod(), L2CMethod()
L2C_OPTIONS = L2C_METHOD.parse_options({"sampler_steps": STEPS})


# one thread: router training beside the suite's background SLURM study would thrash two
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base():
    """Random weights everywhere but the sin-cos positions (the default init zeroes the adaLN gates)."""
    torch.manual_seed(0)
    model = randomize_(build_dit(SPEC.name, SPEC.image_size, **SPEC.overrides()), seed=3).eval()
    assert model.blocks[0].adaLN_modulation[1].weight.abs().min() > 0
    return model.requires_grad_(False)


@pytest.fixture(scope="module")
def l2c_model(base):
    """A converted L2C model with random router logits (every unit ranked differently)."""
    model = L2C_METHOD.convert(copy.deepcopy(base), L2C_OPTIONS)
    with torch.no_grad():
        model.router.logits.copy_(torch.randn(model.router.logits.shape, generator=torch.Generator().manual_seed(5)))
    return model


def trajectory(plan, settings: SamplingSettings, indices=range(3)) -> torch.Tensor:
    """Final x of the plan's sampler from the grid's own noise and labels (seed 0)."""
    generators, y, noise = initial_state(SPEC, 0, list(indices))
    with torch.no_grad():
        return sample_loop(plan.diffusion, lambda x, step, t: plan.denoise(x, step, t, y), noise, generators,
                           settings.sampler, settings.eta)


def static_plan(base, settings):
    return StaticDiT().plan(base, str(STEPS), settings, SPEC)


# --------------------------------------------------------------------------------------------- full compute = DiT
@pytest.mark.parametrize("settings", [UNGUIDED, GUIDED], ids=["unguided", "cfg"])
def test_fora_interval_one_is_the_static_dit(base, settings):
    fora = FORA_METHOD.plan(base, "1", settings, SPEC)
    assert torch.equal(trajectory(fora, settings), trajectory(static_plan(base, settings), settings))
    assert fora.details["computed_fraction"] == 1.0 and fora.details["cache_bytes_per_image"] == 0


@pytest.mark.parametrize("settings", [UNGUIDED, GUIDED], ids=["unguided", "cfg"])
def test_l2c_router_caching_nothing_is_the_static_dit(base, l2c_model, settings):
    plan = L2C_METHOD.plan(l2c_model, "1.00", settings, SPEC, L2C_OPTIONS)
    assert torch.equal(trajectory(plan, settings), trajectory(static_plan(base, settings), settings))


def test_mixed_forward_with_every_gate_open_is_the_dit(base, l2c_model):
    """beta = 1 (logits high) in L2C's training forward: exactly the fresh computation, whatever the cache holds."""
    x, t, y = torch.randn(3, *SHAPE), torch.tensor([10, 500, 990]), torch.tensor([1, 2, 10])
    cache = FeatureCache()
    with torch.no_grad():
        l2c_model.forward_filling(torch.randn(3, *SHAPE), t + 5, y, cache)
        mixed = l2c_model.forward_mixed(x, t, y, cache, torch.sigmoid(torch.full((3, 4, 2), 40.0)))
        assert torch.equal(mixed, base(x, t, y))
        half = l2c_model.forward_mixed(x, t, y, cache, torch.full((3, 4, 2), 0.5))
    assert not torch.allclose(half, mixed, atol=1e-4)


# ------------------------------------------------------------------------------------------------ cached compute
def test_interval_two_differs_from_static_and_computes_less(base):
    fora = FORA_METHOD.plan(base, "2", GUIDED, SPEC)
    static = static_plan(base, GUIDED)
    difference = (trajectory(fora, GUIDED) - trajectory(static, GUIDED)).abs().max()
    assert difference > 1e-3
    fora_macs, static_macs = counted_macs(fora, SHAPE)["macs_per_image"], counted_macs(static, SHAPE)["macs_per_image"]
    assert fora_macs < 0.6 * static_macs
    assert static_macs == 2 * STEPS * dit_macs_per_call(base.config)


@pytest.mark.parametrize("settings", [UNGUIDED, GUIDED], ids=["unguided", "cfg"])
@pytest.mark.parametrize("method,budget,options", [("fora", "2", {}), ("fora", "3", {"blocks": [1, 3]}),
                                                   ("l2c", "0.50", {}), ("l2c", "0.30", {})])
def test_executed_macs_of_a_cached_trajectory_match_the_closed_form(base, l2c_model, method, budget, options,
                                                                    settings):
    if method == "fora":
        plan = FORA_METHOD.plan(base, budget, settings, SPEC, options)
        schedule = fora_schedule(STEPS, 4, int(budget), options.get("blocks"))
    else:
        plan = L2C_METHOD.plan(l2c_model, budget, settings, SPEC, L2C_OPTIONS)
        routed = routed_step_list(STEPS, L2COptions.parse(L2C_OPTIONS).routed_steps)
        schedule = router_schedule(l2c_model.router.logits, float(budget), routed)
    assert not bool(schedule.all())  # something is cached
    closed = cached_macs_per_image(base.config, schedule, settings.guided)
    counted = counted_macs(plan, SHAPE)["macs_per_image"]
    assert counted == closed == round(plan.details["analytic_gmacs_per_image"] * 1e9)
    calls = 2 if settings.guided else 1  # what the run kept: one (T, d) float32 residual per reused unit and call
    assert plan.details["cache_bytes_per_image"] == cache_bytes_per_image(base.config, schedule, settings.guided) \
        == len(CacheSchedule.of(schedule).stored) * 64 * 64 * 4 * calls > 0


def test_the_counter_sees_nothing_of_a_cached_unit(l2c_model):
    """A step with every unit cached runs only the embeddings and the final layer; one cached sublayer removes
    exactly its own MACs (and the adaLN only with both)."""
    config, depth = l2c_model.config, 4
    table = torch.ones(3, depth, 2, dtype=torch.bool)
    table[1] = False
    table[2, 0, 0] = False  # block 0 attention only
    x, t, y = torch.randn(2, *SHAPE), torch.tensor([500, 500]), torch.tensor([1, 2])
    with torch.no_grad():
        full = count_macs(lambda: l2c_model(x, t, y, step=0, schedule=table))
        empty = count_macs(lambda: l2c_model(x, t, y, step=1, schedule=table))
        one = count_macs(lambda: l2c_model(x, t, y, step=2, schedule=table))
    d, tokens = config.hidden_size, config.num_tokens
    assert full == 2 * dit_macs_per_call(config)
    assert empty == 2 * cache_macs_per_call(config, [(False, False)] * depth) == 2 * (
        config.in_channels * 4 * d * tokens + 256 * d + d * d + 2 * d * d + d * 4 * config.out_channels * tokens)
    assert full - one == 2 * (4 * d * d * tokens + 2 * tokens * tokens * d)


def test_a_cached_unit_adds_exactly_what_it_added_when_computed(l2c_model):
    """At an unchanged input, a step under any schedule reproduces the computing step bit for bit (the cache holds
    the gated residuals themselves); L2C's mixed forward does too, up to rounding, whatever its gates."""
    x, t, y = torch.randn(3, *SHAPE), torch.tensor([300, 300, 300]), torch.tensor([0, 4, 10])
    table = torch.rand(4, 4, 2, generator=torch.Generator().manual_seed(2)) < 0.5
    table[0], table[3] = True, False
    cache = FeatureCache()
    with torch.no_grad():
        outputs = [l2c_model(x, t, y, step=step, schedule=table, cache=cache) for step in range(4)]
        assert all(torch.equal(out, outputs[0]) for out in outputs)
        assert not torch.equal(l2c_model(x + 0.1, t, y, step=3, schedule=table, cache=cache),
                               l2c_model(x + 0.1, t, y))  # yet cached: not the model at the new input
        l2c_model.forward_filling(x, t, y, cache)
        beta = torch.rand(3, 4, 2, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(l2c_model.forward_mixed(x, t, y, cache, beta), outputs[0])


def test_the_cache_resets_at_step_zero_of_every_batch(base):
    """Batches of 3 then 2 through one plan: the second starts afresh (a stale cache would not even fit), equal to
    the same batch through a new plan; a trajectory that skips step 0 is refused."""
    plan = FORA_METHOD.plan(base, "2", GUIDED, SPEC)
    both, _ = generate(plan, SPEC, GUIDED, seed=0, indices=range(5), batch_size=3, progress=False)
    alone, _ = generate(FORA_METHOD.plan(base, "2", GUIDED, SPEC), SPEC, GUIDED, seed=0, indices=range(3, 5),
                        batch_size=2, progress=False)
    np.testing.assert_array_equal(both.images[3:], alone.images)
    fresh = FORA_METHOD.plan(base, "2", GUIDED, SPEC)
    t = fresh.diffusion.model_timesteps(torch.tensor([STEPS - 2]))
    with pytest.raises(RuntimeError, match="must start at step 0"):
        fresh.denoise(torch.randn(1, *SHAPE), 1, t, torch.tensor([3]))
    model = CachedDiT.from_dit(base).eval()  # its own cache: a new trajectory keeps only what its schedule reuses
    x, y = torch.randn(2, *SHAPE), torch.tensor([1, 2])
    with torch.no_grad():
        model.set_schedule(fora_schedule(STEPS, 4, 2))
        model(x, t.expand(2), y, step=0)
        assert len(model.cache.entries) == 8
        model.set_schedule(fora_schedule(STEPS, 4, 2, [1, 2]))
        model(x[:1], t, y[:1], step=0)
    assert sorted(model.cache.entries) == [(1, 0), (1, 1)] and model.cache.bytes_per_row() == 2 * 64 * 64 * 4
    model.reset()
    assert model.cache.nbytes == 0


def test_step_keys_group_steps_of_equal_compute(base):
    plan = FORA_METHOD.plan(base, "3", UNGUIDED, SPEC)
    keys = [plan.step_key(step) for step in range(STEPS)]
    assert keys[0] == keys[3] != keys[1] == keys[2] == keys[4] == keys[5]
    assert plan.details["units_computed_per_step"] == "8 0 0 8 0 0"
    assert plan.details["computed_fraction"] == pytest.approx(1 / 5)


# ------------------------------------------------------------------------------------------------------ schedules
def test_fora_schedule():
    table = fora_schedule(7, 4, 3, [1, 3])
    assert table.shape == (7, 4, 2)
    assert table[:, [0, 3]].all()  # blocks outside the range always compute
    assert [bool(table[s, 1:3].any()) for s in range(7)] == [True, False, False, True, False, False, True]
    assert fora_schedule(5, 4, 1).all()
    with pytest.raises(InputError, match="outside the model's 4 blocks"):
        fora_schedule(5, 4, 2, [2, 6])


def test_router_schedule_hits_the_fraction_with_a_deterministic_tie_break():
    logits = torch.randn(9, 4, 2, generator=torch.Generator().manual_seed(0))
    previous = None
    for fraction in (0.0, 0.13, 0.3, 0.5, 0.77, 1.0):
        table = router_schedule(logits, fraction)
        assert table[0].all() and table.shape == (10, 4, 2)
        assert int(table[1:].sum()) == int(np.floor(fraction * 72 + 0.5))
        assert bool((table[1:] == (logits >= logits.flatten().sort(descending=True).values[
            max(int(table[1:].sum()) - 1, 0)])).all()) or fraction == 0.0  # the highest logits compute
        if previous is not None:
            assert bool((previous <= table).all())  # a larger budget keeps what a smaller one computes
        previous = table
    tied = router_schedule(torch.zeros(2, 2, 2), 0.5)  # ties: earlier step, lower block, attention first
    assert tied[1].all() and not tied[2].any()
    odd = router_schedule(logits, 0.0, routed_step_list(10, "odd"))
    assert [bool(odd[s].all()) for s in range(10)] == [s % 2 == 0 for s in range(10)]
    assert int(router_schedule(logits, 0.5, [1, 3, 5, 7, 9])[1::2].sum()) == 20
    with pytest.raises(ValueError, match="non-finite"):
        router_schedule(torch.full((2, 2, 2), float("nan")), 0.5)


# ------------------------------------------------------------------------------------------------ router training
def _fixed_loss(model: CachedDiT, x0, y, weight: float) -> dict:
    diffusion = GaussianDiffusion.respaced("ddim", STEPS)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(123)
        return {k: float(v) for k, v in L2CLoss(weight)(model, x0, y, diffusion).items()}


@pytest.mark.parametrize("weight", [0.0, 0.01])
def test_router_training_reduces_its_loss_and_leaves_the_dit_alone(base, weight, tmp_path):
    rng = np.random.default_rng(0)
    data = ImageSet(rng.integers(0, 256, (48, 16, 16, 1), dtype=np.uint8), rng.integers(0, 10, 48))
    options = L2C_METHOD.parse_options({"sampler_steps": STEPS, "sparsity_weight": weight, "lr": 0.05})
    model = L2C_METHOD.convert(copy.deepcopy(base), options)
    x0, y = data.as_model_input()[:32], torch.from_numpy(data.labels[:32])
    before = _fixed_loss(model, x0, y, weight)
    train = L2C_METHOD.training_run(TrainConfig(steps=25, batch_size=16, log_every=5, seed=1), options)
    trained = L2C_METHOD.finetune(model, data, options, None, train, tmp_path / "state.pt", tmp_path / "loss.csv")
    after = _fixed_loss(trained, x0, y, weight)
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    if weight == 0.0:  # the fit alone opens the gates
        assert after["mse"] < 0.5 * before["mse"] and after["mean_beta"] > before["mean_beta"]
    else:
        assert after["mean_beta"] < before["mean_beta"]
    state, reference = trained.state_dict(), base.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference)  # the DiT is frozen
    assert not torch.equal(state[ROUTER_KEY], torch.zeros_like(state[ROUTER_KEY]))
    assert (tmp_path / "loss.csv").read_text().splitlines()[0].split(",")[:5] == [
        "step", "loss", "mse", "mean_beta", "open_share"]


def test_train_step_macs_count_the_frozen_passes_and_the_backward_to_the_router(l2c_model):
    x0, y = torch.randn(4, *SHAPE), torch.tensor([1, 2, 3, 4])
    macs = L2C_METHOD.train_step_macs(l2c_model, x0, y, L2C_OPTIONS, None)
    forward = 4 * dit_macs_per_call(l2c_model.config)
    assert 3 * forward < macs(0) == macs(500) < 6 * forward  # three passes, one backward without weight grads
    eight = L2C_METHOD.train_step_macs(l2c_model, torch.cat([x0, x0]), torch.cat([y, y]), L2C_OPTIONS, None)
    assert eight(0) == 2 * macs(0)
    assert not any(p.requires_grad for p in l2c_model.parameters())


def test_l2c_train_config_overrides():
    recipe = TrainConfig(steps=1200, batch_size=128, lr=3e-4, ema_decay=0.999)
    run = L2C_METHOD.training_run(recipe, {"lr": 0.1})
    assert run == l2c_train_config(recipe, L2C_METHOD.parse_options({"lr": 0.1}))
    assert (run.steps, run.batch_size, run.lr, run.ema_decay, run.weight_decay) == (1200, 128, 0.1, 0.0, 0.0)
    assert StaticDiT().training_run(recipe, {}) is recipe


# --------------------------------------------------------------------------------------------- loading and input
def test_checkpoints_round_trip_and_are_validated(base, l2c_model, tmp_path):
    path = tmp_path / "l2c.pt"
    torch.save(L2C_METHOD.state_to_save(l2c_model), path)
    loaded = L2C_METHOD.load_model(path, SPEC, L2C_OPTIONS)
    assert torch.equal(loaded.router.logits, l2c_model.router.logits) and not loaded.training
    assert set(loaded.state_dict()) == set(base.state_dict()) | {ROUTER_KEY}

    state = {k: v.clone() for k, v in l2c_model.state_dict().items()}
    with pytest.raises(InputError, match="has no L2C router"):
        L2C_METHOD.load_model(base.state_dict(), SPEC, L2C_OPTIONS)
    with pytest.raises(InputError, match=r"router.logits has shape \(5, 4, 2\).*expects \(9, 4, 2\)"):
        L2C_METHOD.load_model(state, SPEC, L2C_METHOD.parse_options({"sampler_steps": 10}))
    state[ROUTER_KEY][2, 1, 0] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        L2C_METHOD.load_model(state, SPEC, L2C_OPTIONS)
    with pytest.raises(InputError, match="missing keys"):
        L2C_METHOD.load_model({k: v for k, v in l2c_model.state_dict().items() if "blocks.3" not in k}, SPEC,
                              L2C_OPTIONS)
    with pytest.raises(InputError, match="load it with the l2c method"):
        load_cached_state(CachedDiT(base.config), l2c_model.state_dict(), "a cached dit-tiny-2")
    with pytest.raises(InputError, match=r"unexpected keys \[router.logits\]"):
        FORA_METHOD.load_model(l2c_model.state_dict(), SPEC, {})
    fora = FORA_METHOD.load_model(base.state_dict(), SPEC, {})
    assert type(fora).__name__ == "DiT" and set(fora.state_dict()) == set(base.state_dict())


def test_bad_input_is_refused_with_a_message_naming_it(base, l2c_model):
    video = ModelSpec("latte-toy-2", 16, in_channels=1, num_classes=10)
    for method in (FORA_METHOD, L2C_METHOD):
        with pytest.raises(InputError, match="image DiTs only"):
            method.load_model({}, video, {})
    with pytest.raises(InputError, match="trained for ddim with 6 steps"):
        L2C_METHOD.plan(l2c_model, "0.50", SamplingSettings(steps=5), SPEC, L2C_OPTIONS)
    with pytest.raises(InputError, match="router routes 6 steps"):
        L2C_METHOD.plan(l2c_model, "0.50", SamplingSettings(steps=10), SPEC, {"sampler_steps": 10})
    with pytest.raises(InputError, match="outside the model's 4 blocks"):
        FORA_METHOD.plan(base, "2", UNGUIDED, SPEC, {"blocks": [0, 5]})
    with pytest.raises(InputError, match="without --budget"):
        L2C_METHOD.finetune(l2c_model, None, L2C_OPTIONS, 0.5, None, None, None)
    for raw, key in (({"blocks": [3, 3]}, "blocks"), ({"blocks": 2}, "blocks"), ({"interval": 2}, "unknown")):
        with pytest.raises(InputError, match=key):
            ForaOptions.parse(raw)
    for raw, key in (({"lr": 0}, "lr"), ({"sparsity_weight": -1}, "sparsity_weight"), ({"sampler": "euler"}, "sampler"),
                     ({"sampler_steps": 1}, "sampler_steps"), ({"batch_size": 0}, "batch_size"),
                     ({"routed_steps": "even"}, "routed_steps")):
        with pytest.raises(InputError, match=key):
            L2COptions.parse(raw)
    for budget in ("0", "1.5", "two", True):
        with pytest.raises(InputError, match="fora budget"):
            FORA_METHOD.parse_budget(budget)
    for budget in ("1.5", "-0.1", "0.333", "half"):
        with pytest.raises(InputError, match="l2c budget"):
            L2C_METHOD.parse_budget(budget)


def test_vocabularies_and_specs():
    assert [FORA_METHOD.budget_label(b) for b in ("1", 2, "03")] == ["1", "2", "3"]
    assert [L2C_METHOD.budget_label(b) for b in ("0.3", 1, "0.50")] == ["0.30", "1.00", "0.50"]
    settings = SamplingSettings(steps=10)
    assert FORA_METHOD.full_budget(settings) == 1 and L2C_METHOD.full_budget(settings) == 1.0
    assert FORA_METHOD.nominal_compute_ratio("2", settings) == 0.5
    assert FORA_METHOD.nominal_compute_ratio("3", settings) == 0.4  # steps 0, 3, 6, 9
    assert L2C_METHOD.nominal_compute_ratio("0.50", settings) == pytest.approx(0.75)  # 5 of 10 steps routed
    assert L2COptions.parse(None).to_dict()["routed_steps"] == "odd"  # the authors' train_router.py
    assert ForaOptions.parse({"blocks": (2, 4)}).to_dict() == {"blocks": [2, 4]}
    assert (FORA.finetune_mode, L2C.finetune_mode) == ("none", "shared")
    colors = [s.color for s in SPECS.values()]
    assert SPECS["fora"] is FORA and SPECS["l2c"] is L2C and len(set(colors)) == len(colors)
    assert isinstance(FORA_METHOD, type(FORA.vocabulary)) and isinstance(L2C_METHOD, type(L2C.vocabulary))


# ------------------------------------------------------------------------------------------------------------ bf16
def test_bf16_autocast_samples_and_trains_without_dtype_mixing(base, l2c_model):
    """bf16 as the pipeline runs it (CPU autocast: the casts CUDA's makes): cached residuals in bfloat16 next to the
    float32 stream, finite outputs, float32 sampler state and router gradients. (``model.to(torch.bfloat16)`` is
    not supported by the DiT itself: its timestep features are float32.)"""
    for plan in (FORA_METHOD.plan(base, "2", GUIDED, SPEC), L2C_METHOD.plan(l2c_model, "0.50", GUIDED, SPEC,
                                                                             L2C_OPTIONS)):
        reference, _ = generate(plan, SPEC, GUIDED, seed=0, indices=range(3), batch_size=3, progress=False)
        with precision_scope("bf16", "cpu"):
            x = trajectory(plan, GUIDED)
            macs = counted_macs(plan, SHAPE)
            batch, _ = generate(plan, SPEC, GUIDED, seed=0, indices=range(3), batch_size=3, progress=False)
        assert x.dtype == torch.float32 and bool(torch.isfinite(x).all())
        assert macs["macs_per_image"] == round(plan.details["analytic_gmacs_per_image"] * 1e9)
        assert plan.details["cache_bytes_per_image"] == cache_bytes_per_image(base.config, plan_schedule(plan), True,
                                                                              element_size=2)  # what was kept
        assert np.abs(batch.images.astype(int) - reference.images.astype(int)).mean() < 8
    model = copy.deepcopy(l2c_model)
    model.router.logits.requires_grad_(True)
    with precision_scope("bf16", "cpu"):
        terms = L2CLoss(0.01)(model, torch.randn(4, *SHAPE), torch.tensor([1, 2, 3, 4]),
                              GaussianDiffusion.respaced("ddim", STEPS))
        terms["loss"].backward()
    assert bool(torch.isfinite(terms["loss"])) and model.router.logits.grad.dtype == torch.float32
    assert bool(model.router.logits.grad.abs().sum() > 0)


def plan_schedule(plan) -> torch.Tensor:
    """A cache plan's table, rebuilt from its step keys."""
    return torch.tensor([plan.step_key(step) for step in range(plan.num_steps)], dtype=torch.bool)
