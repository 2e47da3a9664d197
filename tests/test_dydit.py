"""DyDiT: conversion invariant, masked/sliced equivalence, executed MACs, FLOPs loss, training, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import randomize_
from ditpareto.data import ImageSet
from ditpareto.errors import InputError
from ditpareto.flops import count_macs
from ditpareto.spec.dit import dit_macs_per_call
from ditpareto.sampling import counted_macs
from ditpareto.methods import METHODS, SamplingSettings
from ditpareto.methods.dydit import stratified_timesteps, target_at
from ditpareto.models import build_dit, dit_config
from ditpareto.models.dydit import DyDiT, RouterConfig, compute_ratio, flops_loss
from ditpareto.spec.dydit import layer_flops, sliced_macs_per_call
from ditpareto.train import TrainConfig

METHOD = METHODS["dydit"]
MODEL = ["--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]


def inputs(batch=6, t=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 16, 16, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g) if t is None else torch.full((batch,), t)
    return x, t, torch.randint(0, 10, (batch,), generator=g)


def scrambled_routers(model: DyDiT, seed: int = 1) -> DyDiT:
    """Random router weights, so heads, groups and tokens are switched off at varied places."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.router_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


@pytest.fixture
def tiny4():
    """dit-tiny-2 shape at random weights (4 heads; 8 MLP groups): more units to route than dit-micro-2."""
    torch.manual_seed(0)
    base = randomize_(build_dit("dit-tiny-2", 16, in_channels=1, num_classes=10)).eval()
    return base, DyDiT.from_dit(base, RouterConfig(mlp_groups=8)).eval()


@pytest.mark.parametrize("init", ["xavier", "zero"])
def test_converted_model_is_the_base(tiny_model, init):
    model = DyDiT.from_dit(tiny_model, RouterConfig(router_init=init)).eval()
    with torch.no_grad():
        x, t, y = inputs()
        ref = tiny_model(x, t, y)
        for mode in ("complete", "hard"):
            out, gates = model.forward_masked(x, t, y, mode)
            assert (out - ref).abs().max() < 1e-4
            assert all(bool((g == 1).all()) for layer in gates for g in layer)  # all units on at conversion
        x, t, y = inputs(t=999)
        widths = model.gather_widths(model.width_masks(999))
        assert (model.forward_sliced(x, t, y, widths) - tiny_model(x, t, y)).abs().max() < 1e-4


def test_masked_and_sliced_paths_agree(tiny4):
    _, model = tiny4
    scrambled_routers(model)
    seen_heads, seen_groups, seen_tokens = set(), set(), []
    with torch.no_grad():
        for t in (0, 250, 600, 999):
            x, tt, y = inputs(batch=8, t=t, seed=t)
            masked, gates = model.forward_masked(x, tt, y, "hard")
            sliced = model.forward_sliced(x, tt, y, model.gather_widths(model.width_masks(t)))
            assert (masked - sliced).abs().max() < 1e-4
            for m_head, m_grp, m_tok in gates:
                assert bool((m_head == m_head[0]).all() and (m_grp == m_grp[0]).all())  # batch-independent width
                assert m_head[0, 0] == 1 and m_grp[0, 0] == 1  # unit 0 always on
                seen_heads.add(int(m_head[0].sum()))
                seen_groups.add(int(m_grp[0].sum()))
                seen_tokens.append(float(m_tok.mean()))
    # the check is not vacuous: widths vary and tokens are both skipped and kept
    assert len(seen_heads) > 1 and len(seen_groups) > 1
    assert 0 < np.mean(seen_tokens) < 1


def test_width_depends_on_timestep_only(tiny4):
    _, model = tiny4
    scrambled_routers(model)
    x, t, _ = inputs(batch=4, t=321)
    with torch.no_grad():
        _, a = model.forward_masked(x, t, torch.tensor([0, 1, 2, 3]), "hard")
        _, b = model.forward_masked(torch.randn_like(x), t, torch.tensor([9, 8, 7, 6]), "hard")
    assert all(torch.equal(ga[0], gb[0]) and torch.equal(ga[1], gb[1]) for ga, gb in zip(a, b))


def test_sliced_macs_are_the_executed_ones(tiny4):
    """The counter sees fewer MACs exactly as the closed form with the realised heads, groups and kept tokens."""
    _, model = tiny4
    scrambled_routers(model)
    x, t, y = inputs(batch=4, t=700)
    masks = model.width_masks(700)
    with torch.no_grad():
        _, gates = model.forward_masked(x, t, y, "hard")
        counted = count_macs(lambda: model.forward_sliced(x, t, y, model.gather_widths(masks)))
    heads = [int(h.sum()) for h, _ in masks]
    groups = [int(g.sum()) for _, g in masks]
    kept = [float(g[2].mean()) for g in gates]
    expected = 4 * sliced_macs_per_call(model.config, 8, heads, groups, kept)
    assert counted == pytest.approx(expected, rel=1e-9)
    assert counted < 4 * dit_macs_per_call(model.config)


def test_xl_constants_and_router_overhead():
    config = dit_config("dit-xl-2", 256)
    f_attn, f_mlp = layer_flops(config)
    assert (f_attn, f_mlp) == (1_509_949_440, 2_717_908_992)  # spec section 2.2
    full = sliced_macs_per_call(config, 16, [16] * 28, [16] * 28, [1.0] * 28)
    router = full - dit_macs_per_call(config)
    assert router / 1e9 == pytest.approx(0.595, abs=0.001)  # spec section 3.3


def test_flops_loss_hand_computed():
    # dit-micro-2: N=64, D=32, MLP 128 -> F_attn = 4*64*32^2 + 2*64^2*32 = 524288 = F_mlp = 2*64*32*128
    config = dit_config("dit-micro-2", 16, in_channels=1, num_classes=10)
    assert layer_flops(config) == (524288, 524288)
    ones = torch.ones
    gates = [
        (torch.tensor([[1.0, 0.0], [1, 1]]), ones(2, 2), torch.tensor([[1.0] * 16 + [0.0] * 48, [1.0] * 64])),
        (ones(2, 2), torch.tensor([[1.0, 0.0], [1, 1]]), ones(2, 64)),
    ]
    # sample 0: (0.5 + 1*0.25 + 1 + 0.5*1) / 4 = 0.5625; sample 1: 1.0; batch mean 0.78125
    assert compute_ratio(gates, config).tolist() == [0.5625, 1.0]
    loss, ratio = flops_loss(gates, config, target=0.5)
    assert ratio.item() == 0.78125
    assert loss.item() == pytest.approx(0.28125**2, abs=1e-12)


def test_gumbel_gates_are_hard_with_soft_gradient():
    from ditpareto.models.dydit import gumbel_sigmoid_gate

    logits = torch.tensor([-40.0, 0.0, 40.0] * 100, requires_grad=True)
    gates = gumbel_sigmoid_gate(logits, tau=5.0)
    assert set(gates.detach().unique().tolist()) <= {0.0, 1.0}
    assert gates[0] == 0 and gates[2] == 1 and 0.3 < gates[1::3].mean() < 0.7
    gates.sum().backward()
    assert logits.grad[1] > logits.grad[0] > 0
    noiseless = gumbel_sigmoid_gate(torch.tensor([-0.1, 0.1] * 50), tau=5.0, noise=0.0)
    assert noiseless.tolist() == [0.0, 1.0] * 50  # annealed noise ends at the inference gates


def test_noiseless_training_gates_are_the_inference_gates(tiny4):
    _, model = tiny4
    scrambled_routers(model)
    x, t, y = inputs(batch=4)
    with torch.no_grad():
        hard, g_hard = model.forward_masked(x, t, y, "hard")
        soft, g_soft = model.forward_masked(x, t, y, "gumbel", noise=0.0)
    assert torch.equal(hard, soft) and all(torch.equal(a, b) for la, lb in zip(g_hard, g_soft) for a, b in zip(la, lb))


def test_schedule_and_stratified_timesteps():
    assert [target_at(s, 0.5, 100, 1000) for s in (0, 99, 100, 500, 1000, 5000)] == [1.0, 1.0, 0.95, 0.75, 0.5, 0.5]
    t = stratified_timesteps(64, 1000, 4)
    assert ((t // 250) == torch.arange(64) % 4).all()
    assert stratified_timesteps(8, 1000, 1).max() < 1000


@pytest.mark.parametrize("text", ["0", "0.0", "-0.5", "1.01", "2", "nan", "inf", "half", ""])
def test_lambda_out_of_range_is_an_input_error(text):
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        METHOD.parse_budget(text)


def test_budget_labels_and_options():
    assert METHOD.budget_label(METHOD.parse_budget("0.5")) == "0.50"
    assert METHOD.budget_label(1) == "1.00" and METHOD.nominal_compute_ratio("0.30", SamplingSettings()) == 0.3
    with pytest.raises(InputError, match="unknown dydit option"):
        METHOD.parse_options({"lamda": 0.5})
    for bad in ({"tau": 0}, {"mlp_groups": "8"}, {"router_init": "normal"}, {"complete_steps": True}):
        with pytest.raises(InputError, match="dydit option"):
            METHOD.parse_options(bad)
    with pytest.raises(InputError, match="must divide"):
        DyDiT(dit_config("dit-micro-2", 16, in_channels=1, num_classes=10), RouterConfig(mlp_groups=7))


def test_cli_rejects_bad_lambda(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ditpareto", "flops", "--method", "dydit", "--budget", "1.5", *MODEL],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: dydit budget" in result.stderr and "(0, 1]" in result.stderr


def test_finetune_routes_logs_and_resumes(tiny_model, tmp_path):
    options = METHOD.parse_options({"router_init": "zero", "width_bias_init": 0.5, "token_bias_init": 0.5,
                                    "router_lr_scale": 10, "hold_steps": 0, "ramp_steps": 2, "complete_steps": 1,
                                    "noise_anneal_steps": 4})
    rng = np.random.default_rng(0)
    data = ImageSet(rng.integers(0, 255, (32, 16, 16, 1), dtype=np.uint8), rng.integers(0, 10, 32))
    model = METHOD.convert(tiny_model, options)
    state, log = tmp_path / "state.pt", tmp_path / "loss.csv"
    train = TrainConfig(steps=3, batch_size=8, lr=1e-3, ema_decay=0.5, checkpoint_every=2)
    METHOD.finetune(model, data, options, 0.5, train, state, log)
    before = [p.clone() for p in model.router_parameters()]
    ema = METHOD.finetune(METHOD.convert(tiny_model, options), data, options, 0.5,
                          TrainConfig(**{**train.__dict__, "steps": 5}), state, log)  # resumes at step 3
    rows = log.read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 1 + 5 and {"compute_ratio", "target", "flops_loss", "token_frac"} <= set(header)
    targets = [float(r.split(",")[header.index("target")]) for r in rows[1:]]
    assert targets == [1.0, 0.75, 0.5, 0.5, 0.5]  # the ramp continues across the resume
    assert [float(r.split(",")[header.index("gate_noise")]) for r in rows[1:]] == [1.0, 0.75, 0.5, 0.25, 0.0]
    complete = [float(r.split(",")[header.index("complete_loss")]) for r in rows[1:]]
    assert complete[0] > 0 and all(np.isnan(complete[1:]))  # complete-model loss for complete_steps=1 only
    assert any(not torch.equal(a, b) for a, b in zip(before, ema.router_parameters()))
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())


def test_plan_counts_executed_macs_on_real_samples(tiny4):
    from ditpareto.methods import ModelSpec

    base, model = tiny4
    spec = ModelSpec("dit-tiny-2", 16, in_channels=1, num_classes=10)
    settings = SamplingSettings(steps=4, cfg_scale=2.0)
    options = METHOD.parse_options({"flops_samples": 3})
    static = dit_macs_per_call(model.config)
    router = sliced_macs_per_call(model.config, 8, [4] * 4, [8] * 4, [1.0] * 4) - static
    plan = METHOD.plan(model, "0.50", settings, spec, options)
    macs = counted_macs(plan, (1, 16, 16))
    assert macs["macs_per_call"] == static + router  # converted: full width, all tokens, plus token routers
    assert macs["macs_per_image"] == 4 * 2 * (static + router)
    assert plan.details["block_compute_ratio"] == pytest.approx(1.0)
    scrambled_routers(model)
    plan = METHOD.plan(model, "0.50", settings, spec, options)
    macs = counted_macs(plan, (1, 16, 16))
    details = plan.details
    assert details["flops_count_samples"] == 3 and 0 < details["token_keep_rate"] < 1
    assert details["executed_compute_ratio"] == pytest.approx(macs["macs_per_call"] / static)
    assert 0 < details["block_compute_ratio"] < 1 and macs["macs_per_call"] < static
    with pytest.raises(ValueError, match="expects model timestep"):
        plan.denoise(torch.randn(2, 1, 16, 16), 0, torch.tensor([1, 1]), torch.tensor([0, 1]))


def test_cli_convert_then_flops_from_checkpoint(tmp_path, tiny_model):
    base = tmp_path / "base.pt"
    torch.save(tiny_model.state_dict(), base)
    out = tmp_path / "converted.pt"
    cli = [sys.executable, "-m", "ditpareto"]
    subprocess.run([*cli, "convert", "--method", "dydit", "--base", str(base), *MODEL, "--out", str(out)],
                   check=True, capture_output=True)
    result = subprocess.run([*cli, "flops", "--method", "dydit", "--budget", "0.5", "--checkpoint", str(out), *MODEL,
                             "--steps", "2", "--options", '{"flops_samples": 2}'], capture_output=True, text=True,
                            check=True)
    report = json.loads(result.stdout)
    config = dit_config("dit-micro-2", 16, in_channels=1, num_classes=10)
    assert report["budget"] == "0.50" and report["network_calls_per_image"] == 4
    assert report["details"]["executed_compute_ratio"] == pytest.approx(
        sliced_macs_per_call(config, 2, [2, 2], [2, 2], [1, 1]) / dit_macs_per_call(config))
