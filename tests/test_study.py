"""The torch-free study layer: settings dataclasses are the one source of defaults (the schema agrees), the
config-to-argv serialiser, and the grid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ditpareto.archs import DiTConfig
from ditpareto.study import (
    FinetuneRecipe, SamplingSettings, TrainConfig, argv, ft_label, grid_points, num_samples, parse_ft,
    selection_points,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def schema_defaults(*path):
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return {key: spec["default"] for key, spec in node["properties"].items() if "default" in spec}


def dataclass_defaults(cls):
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def test_schema_defaults_equal_the_settings_dataclasses():
    train = dataclass_defaults(TrainConfig)
    pretrain = schema_defaults("base", "pretrain")
    assert pretrain.pop("class_dropout") == DiTConfig.__dataclass_fields__["class_dropout_prob"].default
    assert pretrain == {key: train[key] for key in pretrain}
    assert schema_defaults("finetune") == {**dataclass_defaults(FinetuneRecipe),
                                           **{k: v for k, v in schema_defaults("finetune").items()
                                              if k in ("plateau", "shipped_dir", "seed_noise", "noise_recorded",
                                                       "plateau_recorded")}}
    sampling, settings = schema_defaults("sampling"), dataclass_defaults(SamplingSettings)
    assert sampling["steps"] == [settings["steps"]]
    for key in ("sampler", "cfg_scale", "guidance_channels"):
        assert sampling[key] == settings[key], key


def test_argv_serialises_config_values_as_flags():
    assert argv({"batch_size": 8, "lr": 0.001, "path": "a b;c", "skip": None, "off": False, "on": True}) == (
        "--batch-size 8 --lr 0.001 --path 'a b;c' --on")
    assert argv({"a": 1, "b": 2}, ["b"]) == "--b 2"


def test_grid_points_cover_budgets_steps_parity_and_plateau():
    config = {"sampling": {"steps": [10, 5], "cfg_scale": 2.0, "seeds": [0, 1]},
              "finetune": {"plateau": {"multipliers": [0.5, 2.0], "budgets": {"dydit": "0.50"}}},
              "methods": {"dit": {"budgets": ["10", "2"]},
                          "dydit": {"budgets": ["0.50"], "parity": "full@0.50", "cfg_sweep": [3.0]}}}
    points = grid_points(config)
    dit = [p for p in points if p.method == "dit"]
    assert sorted((p.budget, p.steps, p.ft) for p in dit if p.seed == 0) == [("10", 10, "0.00"), ("2", 2, "0.00")]
    dydit = [p for p in points if p.method == "dydit"]
    assert {(p.budget, p.steps, p.cfg) for p in dydit if p.ft == "1.00" and p.seed == 0} == {
        ("0.50", 10, "2.00"), ("0.50", 5, "2.00"), ("0.50", 10, "3.00"), ("0.50", 5, "3.00"),
        ("full@0.50", 10, "2.00")}
    plateau = {(p.ft, p.steps, p.seed) for p in dydit if p.ft not in ("1.00",)}
    assert plateau == {("0.50", 10, 0), ("2.00", 10, 0)}  # first step count, fixed scale, first seed
    assert len(points) == len(set(points))


def test_the_plateau_is_planned_only_where_its_budgets_are_in_the_grid():
    from ditpareto.study import plateau_planned

    config = {"sampling": {"steps": [10], "cfg_scale": 2.0, "seeds": [0]},
              "finetune": {"plateau": {"multipliers": [0.5], "budgets": {"dit-ft": "4"}}},
              "methods": {"dit": {"budgets": ["10"]}}}
    assert not plateau_planned(config)
    config["methods"]["dit-ft"] = {"budgets": ["4"]}
    assert plateau_planned(config)


def test_interval_budgets_are_step_counts_never_sampled_unguided():
    config = {"sampling": {"steps": [10], "cfg_scale": 2.0, "seeds": [0], "num_samples": 1000,
                           "cfg_selection": {"scales": [1.0, 3.0], "seed": 4095, "num_samples": 500}},
              "methods": {"dit": {"budgets": ["10", "10i", "3i"], "cfg_sweep": [1.0]}}}
    points = {(p.budget, p.steps, p.cfg, p.seed) for p in grid_points(config)}
    assert ("10", 10, "1.00", 0) in points and ("10i", 10, "2.00", 0) in points and ("3i", 3, "3.00", 0) in points
    assert not any(budget.endswith("i") and cfg == "1.00" for budget, _, cfg, _ in points)
    assert {(p.budget, p.cfg) for p in selection_points(config)} == {
        ("10", "1.00"), ("10", "3.00"), ("10i", "3.00"), ("3i", "3.00")}


def test_cfg_selection_samples_every_grid_budget_on_a_held_out_seed_and_evaluates_every_candidate():
    config = {"sampling": {"steps": [10, 5], "cfg_scale": 2.0, "seeds": [0, 1], "num_samples": 1000,
                           "cfg_selection": {"scales": [1.5, 3.0], "seed": 4095, "num_samples": 500}},
              "methods": {"dit": {"budgets": ["10", "5"]}, "dydit": {"budgets": ["0.50"], "parity": "full@0.50"}}}
    selection = selection_points(config)
    assert {p.seed for p in selection} == {4095} and not {p.seed for p in selection} & {0, 1}
    assert {(p.method, p.budget, p.steps, p.cfg) for p in selection} == {
        (m, b, n, c) for m, b, n in (("dit", "10", 10), ("dit", "5", 5), ("dydit", "0.50", 10), ("dydit", "0.50", 5))
        for c in ("1.50", "3.00")} | {("dydit", "full@0.50", 10, c) for c in ("1.50", "3.00")}  # parity too
    evaluation = {(p.method, p.budget, p.steps, p.cfg) for p in grid_points(config) if p.seed == 0}
    assert {(p.method, p.budget, p.steps, p.cfg) for p in selection} <= evaluation
    assert ("dit", "10", 10, "2.00") in evaluation  # the fixed scale stays
    assert num_samples(config, 4095) == 500 and num_samples(config, 0) == 1000
    config["sampling"]["cfg_selection"]["scales"] = []
    assert selection_points(config) == [] and num_samples(config, 4095) == 1000


def test_fine_tune_seed_repeats_are_grid_points_with_their_own_label():
    config = {"sampling": {"steps": [10, 5], "cfg_scale": 2.0, "seeds": [0, 1]},
              "finetune": {"seed_noise": {"seeds": [1, 2], "budgets": {"dydit": "0.50", "dit-ft": "10"}}},
              "methods": {"dit-ft": {"budgets": ["10", "5"]}, "dydit": {"budgets": ["0.50"]}}}
    repeats = [p for p in grid_points(config) if parse_ft(p.ft)[1] is not None]
    assert {(p.method, p.budget, p.steps, p.ft, p.seed) for p in repeats} == {
        ("dydit", "0.50", 10, "1.00s1", 0), ("dydit", "0.50", 10, "1.00s2", 0),
        ("dit-ft", "10", 10, "1.00s1", 0), ("dit-ft", "10", 10, "1.00s2", 0)}
    assert ft_label(1.0, 2) == "1.00s2" and parse_ft("1.00s2") == (1.0, 2) and parse_ft(0.5) == (0.5, None)


def test_recorded_scales_replace_the_fixed_one_point_by_point():
    config = {"sampling": {"steps": [10, 5], "cfg_scale": 1.5, "seeds": [0]},
              "finetune": {"seed_noise": {"seeds": [1], "budgets": {"dydit": "0.50"}}},
              "methods": {"dit": {"budgets": ["10"]}, "dydit": {"budgets": ["0.50"], "parity": "full@0.50"}}}
    recorded = {("dit", "10", 10, "0.00"): 1.5, ("dydit", "0.50", 10, "1.00"): 2.0, ("dydit", "0.50", 5, "1.00"): 3.0,
                ("dydit", "full@0.50", 10, "1.00"): 1.25}
    points = {(p.method, p.budget, p.steps, p.ft, p.cfg) for p in grid_points(config, recorded)}
    assert points == {("dit", "10", 10, "0.00", "1.50"), ("dydit", "0.50", 10, "1.00", "2.00"),
                      ("dydit", "0.50", 5, "1.00", "3.00"), ("dydit", "full@0.50", 10, "1.00", "1.25"),
                      ("dydit", "0.50", 10, "1.00s1", "2.00")}  # the repeat at its own fine-tune's scale
    assert {p.cfg for p in grid_points(config)} == {"1.50"}


def test_a_parity_point_is_compared_with_dit_ft_at_its_own_sampler():
    """dit-ft at 10 steps on DDIM and on DPM-Solver++ are two references: each full-compute point takes the one at
    its sampler (one table with both used to fail on an ambiguous lookup)."""
    import pandas as pd

    from ditpareto.results import mark_parity

    rows = [("dit-ft", "10", 3.0), ("dit-ft", "10+dpmpp-2m", 2.0), ("flexidit", "0.00", 3.5),
            ("flexidit", "0.00+dpmpp-2m", 2.1), ("flexidit", "0.50", 9.0)]
    table = pd.DataFrame([{"method": m, "budget": b, "fid": f, "steps": 10, "ft": "1.00", "cfg_scale": 1.5, "seed": 0,
                           "nominal_compute_ratio": 0.5 if b == "0.50" else 1.0} for m, b, f in rows])
    gaps = mark_parity(table).set_index("budget")
    assert gaps.loc["0.00", "parity_gap"] == pytest.approx(0.5) and bool(gaps.loc["0.00", "conversion_cost"])
    assert gaps.loc["0.00+dpmpp-2m", "parity_gap"] == pytest.approx(0.1)
    assert not gaps.loc["0.00+dpmpp-2m", "conversion_cost"] and pd.isna(gaps.loc["0.50", "parity_gap"])
