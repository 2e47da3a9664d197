"""Figure helpers: pareto frontier, seed summaries and the fixed- vs best-CFG curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ditpareto.plotting import cfg_curves, pareto_frontier, plot_pareto, summarize_seeds


def _table():
    rows = []
    # flexidit swept at 2.0 (fixed) and 3.0; dit only at 2.0. FID (seed 0, seed 1) per point.
    for method, budget, cfg, gmacs, fids in [
        ("dit", "10", 2.0, 0.30, (5.0, 5.2)),
        ("dit", "4", 2.0, 0.12, (7.0, 7.4)),
        ("flexidit", "0.00", 2.0, 0.30, (4.0, 4.2)),
        ("flexidit", "0.00", 3.0, 0.30, (4.5, 4.5)),
        ("flexidit", "0.50", 2.0, 0.18, (6.0, 6.0)),
        ("flexidit", "0.50", 3.0, 0.18, (5.0, 5.4)),
    ]:
        for seed, fid in enumerate(fids):
            rows.append({"method": method, "budget": budget, "cfg_scale": cfg, "seed": seed,
                         "gmacs_per_image": gmacs, "fid": fid})
    return pd.DataFrame(rows)


def test_summary_keeps_scales_apart_and_averages_seeds():
    points = summarize_seeds(_table(), "gmacs_per_image", "fid").set_index(["method", "budget", "cfg_scale"])
    assert points.loc[("flexidit", "0.50", 3.0), "fid"] == 5.2
    assert points.loc[("dit", "4", 2.0), "seeds"] == 2


def test_fixed_and_best_cfg_curves():
    fixed, best = cfg_curves(summarize_seeds(_table(), "gmacs_per_image", "fid"), fixed_cfg=2.0)
    assert set(fixed["cfg_scale"]) == {2.0} and len(fixed) == 4
    chosen = best.set_index("budget")["cfg_scale"]
    assert set(best["method"]) == {"flexidit"}  # dit was sampled at one scale only
    assert chosen["0.00"] == 2.0 and chosen["0.50"] == 3.0  # lowest mean FID per budget


def test_frontier_drops_dominated_points():
    points = pd.DataFrame({"x": [1, 2, 3, 4], "y": [5.0, 6.0, 4.0, 4.5]})
    assert pareto_frontier(points, "x", "y")["x"].tolist() == [1, 3]


def test_plot_with_sweep_writes_nonblank_figure(tmp_path):
    out = tmp_path / "pareto.png"
    plot_pareto(_table(), [out], floor=0.2, fixed_cfg=2.0)
    pixels = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert pixels.std() > 5


def test_recorded_scales_draw_one_frontier_per_method():
    """Every point at its recorded scale (no fixed scale): the points are the frontier, nothing is drawn twice."""
    table = _table().drop_duplicates(["method", "budget", "seed"]).assign(cfg_selected=True)
    fixed, best = cfg_curves(summarize_seeds(table, "gmacs_per_image", "fid"), fixed_cfg=None)
    assert len(fixed) == 4 and best.empty
    # recorded scales plus unguided extras (cfg_sweep [1.0]): still one frontier over every point, no dashed copy
    mixed = _table().assign(cfg_selected=lambda t: t["cfg_scale"] == 3.0)
    fixed, best = cfg_curves(summarize_seeds(mixed, "gmacs_per_image", "fid"), fixed_cfg=None)
    assert len(fixed) == len(summarize_seeds(mixed, "gmacs_per_image", "fid")) and best.empty
    fixed, best = cfg_curves(summarize_seeds(_table().assign(cfg_selected=lambda t: t["cfg_scale"] == 3.0),
                                             "gmacs_per_image", "fid"), fixed_cfg=2.0)
    assert set(fixed["cfg_scale"]) == {2.0} and set(best["cfg_scale"]) == {3.0}


def test_every_step_count_of_a_dense_ladder_has_its_own_marker():
    from ditpareto.plotting import step_markers

    markers = step_markers(pd.DataFrame({"steps": list(range(2, 11))}))
    assert len(set(markers.values())) == 9


def test_a_method_left_out_by_the_guidance_filter_says_so(capsys):
    from ditpareto.plotting import at_cfg

    table = pd.DataFrame({"method": ["dit", "dit", "dydit"], "cfg_scale": [1.5, 1.0, 2.0], "fid": [1.0, 2.0, 3.0]})
    assert at_cfg(table, None).equals(table)
    kept = at_cfg(table, 1.5)
    assert kept["method"].tolist() == ["dit"]
    assert "dydit: left out, no point at CFG 1.5 (its scales: 2" in capsys.readouterr().out


def test_every_method_has_its_own_colour_and_no_empty_plateau_figure_is_drawn(tmp_path):
    from ditpareto.plotting import method_palette, plot_plateau

    colours = list(method_palette().values())
    assert len(set(colours)) == len(colours)
    with pytest.raises(ValueError, match="no plateau points"):
        plot_plateau(pd.DataFrame({"method": ["dit"], "budget": ["10"], "steps": [10], "ft": ["1.00"],
                                   "cfg_scale": [1.5], "seed": [0], "fid": [3.0], "train_gmacs": [1.0]}),
                     [tmp_path / "plateau.png"])
    assert not (tmp_path / "plateau.png").exists()


def test_the_full_static_mark_is_the_guided_full_step_point():
    from ditpareto.plotting import with_compute_ratio

    table = pd.DataFrame({"method": ["dit", "dit", "dit", "dydit"], "budget": ["10", "10", "10i", "0.50"],
                          "steps": [10, 10, 10, 10], "cfg_scale": [1.5, 1.0, 1.5, 1.5],
                          "nominal_compute_ratio": [1.0, 1.0, 1.0, 0.5], "gmacs_per_image": [2.0, 1.0, 1.5, 1.0]})
    ratios = with_compute_ratio(table)["measured_compute_ratio"].tolist()
    assert ratios == [1.0, 0.5, 0.75, 0.5]
    unguided_only = table[table["cfg_scale"] != 1.5].assign(nominal_compute_ratio=1.0)  # the selection chose CFG 1
    assert with_compute_ratio(unguided_only)["measured_compute_ratio"].tolist() == [0.5]


def test_the_claims_figure_draws_intervals_that_exclude_their_point(tmp_path):
    """A basic-bootstrap CI of the population FID can lie wholly below the finite-N FID: still drawn."""
    from ditpareto.plotting import plot_claims

    table = pd.DataFrame({"method": ["dit", "dydit"], "budget": ["10", "0.50"], "steps": [10, 10],
                          "ft": ["0.00", "1.00"], "cfg_scale": [1.5, 1.5], "seed": [0, 0],
                          "nominal_compute_ratio": [1.0, 0.5], "gmacs_per_image": [1.0, 0.5], "fid": [3.5, 3.6],
                          "fid_ci_low": [2.9, 3.0], "fid_ci_high": [3.4, 3.5]})
    claims = pd.DataFrame([{"method": "dit", "model": "DiT-XL/2", "resolution": 256, "setting": "250", "fid": 2.27,
                            "compute_ratio": 1.0},
                           {"method": "dydit", "model": "DiT-XL/2", "resolution": 256, "setting": "lambda=0.5",
                            "fid": 2.07, "compute_ratio": 0.49}])
    plot_claims(table, claims, [tmp_path / "claims.png"])
    assert (tmp_path / "claims.png").stat().st_size > 1000


def test_the_claims_figure_keeps_its_range_on_the_claims():
    """A 2-step ladder point at +300 % would flatten the ±10 % claims: it sits on the top edge (a triangle), the
    axis stops at +100 % and the title says how many points lie beyond."""
    import matplotlib.pyplot as plt

    from ditpareto.plotting import _clip_far_points

    points = pd.DataFrame({"method": ["dit", "dit", "dydit"], "compute_ratio": [0.2, 1.0, 0.5],
                           "fid_change_pct": [300.0, 0.0, -5.0], "pct_low": [250.0, -3.0, -9.0],
                           "pct_high": [350.0, 3.0, -1.0]})
    fig, ax = plt.subplots()
    ax.scatter(points["compute_ratio"], points["fid_change_pct"])
    _clip_far_points(ax, points, {})
    assert ax.get_ylim()[1] == 100.0
    assert ax.get_title(loc="left").startswith("▲ on the top edge: 1 point(s) beyond +100 %")
    fig_nothing, ax_nothing = plt.subplots()
    _clip_far_points(ax_nothing, points.iloc[1:], {})
    assert ax_nothing.get_title(loc="left") == ""
    plt.close("all")


def test_a_collapsed_method_turns_the_quality_axis_logarithmic(monkeypatch):
    """FIDs spanning more than LOG_Y_SPAN (ToMe at 40 beside a frontier at 4) get a log y axis; a narrow range stays
    linear; log_y=False forces linear."""
    import ditpareto.plotting as plotting

    scales = []
    monkeypatch.setattr(plotting, "_save", lambda fig, paths: scales.append(fig.axes[0].get_yscale()))
    table = _table()
    plot_pareto(table, [], fixed_cfg=2.0)
    collapsed = table.assign(fid=table["fid"].where(table["method"] != "dit", table["fid"] * 10))
    plot_pareto(collapsed, [], fixed_cfg=2.0)
    plot_pareto(collapsed, [], fixed_cfg=2.0, log_y=False)
    assert scales == ["linear", "log", "linear"]
