"""CFG chosen on a held-out seed: the selected scale, its evaluation FID, the selection bias and the optimism of
choosing on the evaluation FID."""

from __future__ import annotations

import pandas as pd
import pytest

from ditpareto.cfg_selection import mark_selected, select_scales


def _record(cfg, seed, fid, n=1000):
    return {"method": "dydit", "budget": "0.50", "steps": 10, "ft": "1.00", "cfg_scale": cfg, "seed": seed,
            "fid": fid, "params": {"num_samples": n}}


def test_the_scale_is_chosen_on_the_selection_seed_and_scored_on_the_evaluation_seeds():
    selection = [_record(1.5, 4095, 6.0, 500), _record(2.0, 4095, 5.5, 500), _record(3.0, 4095, 5.8, 500)]
    evaluation = [_record(1.5, 0, 5.0), _record(2.0, 0, 5.3), _record(3.0, 0, 5.1),
                  _record(1.5, 1, 5.2), _record(2.0, 1, 5.1), _record(3.0, 1, 5.3)]
    row = select_scales(selection, evaluation).iloc[0]
    assert row["cfg_selected"] == 2.0 and row["fid_selection"] == 5.5 and row["selection_samples"] == 500
    assert row["fid_evaluation"] == pytest.approx(5.2) and row["evaluation_seeds"] == 2
    assert row["selection_bias"] == pytest.approx(0.3)
    # chosen on the evaluation FID itself: 1.5 (mean 5.1), 0.1 lower than the honest choice
    assert row["cfg_best_on_evaluation"] == 1.5 and row["optimism"] == pytest.approx(0.1)


def test_a_selection_seed_that_is_an_evaluation_seed_is_refused():
    with pytest.raises(ValueError, match="also evaluation seeds"):
        select_scales([_record(2.0, 0, 5.0)], [_record(2.0, 0, 5.0)])


def test_a_candidate_without_its_evaluation_point_is_refused():
    with pytest.raises(ValueError, match="evaluation points missing for scales"):
        select_scales([_record(2.0, 9, 5.0), _record(3.0, 9, 4.0)], [_record(2.0, 0, 5.0)])


def test_rows_at_the_selected_scale_are_marked():
    table = pd.DataFrame([{k: v for k, v in _record(c, 0, 5.0).items() if k != "params"} for c in (1.5, 2.0)])
    selected = select_scales([_record(1.5, 9, 5.0), _record(2.0, 9, 4.0)],
                             [_record(1.5, 0, 5.0), _record(2.0, 0, 5.0)])
    assert mark_selected(table, selected)["cfg_selected"].tolist() == [False, True]
