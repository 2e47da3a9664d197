"""Equal fine-tuning compute: the training-MAC counter, the budget -> steps rule and the fine-tune record."""

from __future__ import annotations

import json

import pytest
import torch

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.flops import count_train_macs, steps_for_train_macs
from ditpareto.spec.dit import dit_macs_per_call
from ditpareto.methods import ModelSpec, get_method
from ditpareto.models import build_dit, dit_config
from ditpareto.train import diffusion_loss
from test_cli import run_cli

MICRO = ModelSpec("dit-micro-2", 16, in_channels=1, num_classes=10)


def test_dit_training_macs_match_the_closed_form():
    """Forward F per image; backward 2F, minus the input gradients nobody needs (the patch-embedding conv and the
    timestep MLP's first layer see no trainable input), plus SDPA's backward recomputing the scores (5 matmuls
    against the forward's 2: one extra T x T x d per block)."""
    config = dit_config(MICRO.name, MICRO.image_size, **MICRO.overrides())
    torch.manual_seed(0)
    model = build_dit(MICRO.name, MICRO.image_size, **MICRO.overrides())
    batch = 8
    x, y = torch.randn(batch, 1, 16, 16), torch.randint(0, 10, (batch,))
    t, d, p = config.num_tokens, config.hidden_size, config.patch_size
    forward = dit_macs_per_call(config)
    closed = batch * (3 * forward - config.in_channels * p * p * d * t - 256 * d + config.depth * t * t * d)
    assert count_train_macs(diffusion_loss, model, x, y, GaussianDiffusion.base()) == closed
    # the counter leaves the caller's RNG and model untouched
    state = torch.get_rng_state()
    count_train_macs(diffusion_loss, model, x, y, GaussianDiffusion.base())
    assert torch.equal(state, torch.get_rng_state())
    assert all(p.grad is None for p in model.parameters())


def test_steps_for_a_budget():
    assert steps_for_train_macs(lambda i: 10.0, 100.0) == (10, 100.0)
    assert steps_for_train_macs(lambda i: 10.0, 104.0) == (10, 100.0)
    assert steps_for_train_macs(lambda i: 10.0, 106.0) == (11, 110.0)
    assert steps_for_train_macs(lambda i: 10.0, 1.0) == (1, 10.0)  # at least one step
    steps, total = steps_for_train_macs(lambda i: 30.0 if i % 4 == 0 else 10.0, 150.0)  # periodic extra term
    assert (steps, total) == (9, 150.0)  # 30 + 10 + 10 + 10 + 30 + 10 + 10 + 10 + 30


@pytest.fixture(scope="module")
def converted():
    from conftest import randomize_

    torch.manual_seed(0)
    base = randomize_(build_dit(MICRO.name, MICRO.image_size, **MICRO.overrides()))
    out = {}
    for name, options in (("dit-ft", {}), ("flexidit", {"tokenizer": "flexible"}), ("dydit", {"mlp_groups": 2}),
                          ("flexdit", {})):
        method = get_method(name)
        options = method.parse_options(options)
        out[name] = (method, method.convert(base, options), options)
    return out


@pytest.mark.parametrize("name, budget", [("dit-ft", None), ("flexidit", None), ("dydit", "0.50"),
                                          ("flexdit", "0.61-0.86")])
def test_every_method_is_counted_and_budgets_equalise(converted, name, budget):
    method, model, options = converted[name]
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    budget = method.parse_budget(budget) if budget else None
    macs_at = method.train_step_macs(model, x, y, options, budget)
    per_step = macs_at(1)
    assert per_step > 0
    dit_step = count_train_macs(diffusion_loss, converted["dit-ft"][1], x, y, GaussianDiffusion.base())
    if name == "flexidit":  # half the steps at 4x fewer tokens
        assert per_step < 0.75 * dit_step
    if name == "flexdit":  # sparse blocks
        assert per_step < dit_step
    if name == "dydit":  # the masked training forward is full width, plus routers
        assert per_step >= dit_step
    budget_macs = 200 * dit_step
    steps, total = steps_for_train_macs(macs_at, budget_macs)
    assert abs(total - budget_macs) <= 0.1 * budget_macs  # equal training compute within +-10 %
    assert abs(total - budget_macs) <= per_step / 2 + 1


def test_flexidit_counts_the_mmd_chain_on_its_steps(converted):
    method, model, _ = converted["flexidit"]
    options = method.parse_options({"tokenizer": "flexible", "mmd_weight": 1.0, "mmd_every": 3, "mmd_batch": 8})
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    macs_at = method.train_step_macs(model, x, y, options, None)
    assert macs_at(0) > macs_at(1) == macs_at(2) and macs_at(3) == macs_at(0)


def test_finetune_takes_its_steps_from_the_budget_and_records_them(tmp_path):
    from ditpareto.data import digits_draw, save_draw
    from ditpareto.models.checkpoint import atomic_save

    torch.manual_seed(0)
    atomic_save(build_dit(MICRO.name, 16, **MICRO.overrides()).state_dict(), tmp_path / "base.pt")
    save_draw(digits_draw("train"), tmp_path / "train.npz")
    model_args = ["--model", MICRO.name, "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]
    result = run_cli("finetune", "--method", "dit-ft", "--checkpoint", str(tmp_path / "base.pt"), "--data",
                     str(tmp_path / "train.npz"), *model_args, "--train-gmacs", "0.5", "--batch-size", "8",
                     "--warmup-fraction", "0.2", "--schedule", "cosine", "--ema-horizon", "0.5",
                     "--state", str(tmp_path / "state.pt"), "--log-csv", str(tmp_path / "loss.csv"),
                     "--out", str(tmp_path / "ft.pt"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "ft.pt.json").read_text())
    per_step = record["gmacs_per_step_first"]
    assert record["optimizer_steps"] == round(0.5 / per_step)
    assert record["train_gmacs"] == pytest.approx(record["optimizer_steps"] * per_step)
    assert record["samples_seen"] == 8 * record["optimizer_steps"]
    assert record["warmup_steps"] == round(0.2 * record["optimizer_steps"])
    assert record["ema_decay"] == pytest.approx(1 - 1 / (0.5 * record["optimizer_steps"]))
