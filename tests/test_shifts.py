"""compare-runs: paired FID shifts between two runs of one grid (bf16 against fp32)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ditpareto.cli import main
from ditpareto.errors import InputError
from ditpareto.shifts import paired_shifts


def record(method, budget, fid, replicates, precision="fp32", seed=0, bootstrap_seed=0, samples=1000):
    return {"method": method, "budget": budget, "steps": 10, "ft": "1.00", "cfg_scale": 1.5, "seed": seed,
            "fid": fid, "fid_bootstrap": list(replicates), "sampling_precision": precision, "device": "cpu",
            "bootstrap": {"seed": bootstrap_seed}, "params": {"num_samples": samples}}


def runs(shift_by_method: dict, noise: float = 0.01):
    """A baseline and another run whose replicates move with the baseline's (paired) plus a little noise."""
    rng = np.random.default_rng(0)
    base, other = [], []
    for method, shift in shift_by_method.items():
        for budget, fid in (("0.50", 4.0), ("0.70", 3.5)):
            reps = fid + rng.normal(0, 0.3, 200)  # the sets' own bootstrap spread: large
            base.append(record(method, budget, fid, reps))
            other.append(record(method, budget, fid + shift, reps + shift + rng.normal(0, noise, 200), "bf16"))
    return base, other


def test_a_paired_shift_is_resolved_far_below_the_fid_spread():
    base, other = runs({"dydit": 0.10, "flexdit": 0.0})
    table = paired_shifts(base, other).set_index(["method", "budget"])
    dydit, flexdit = table.loc[("dydit", "all points")], table.loc[("flexdit", "all points")]
    assert dydit["fid_shift"] == pytest.approx(0.10) and flexdit["fid_shift"] == pytest.approx(0.0)
    assert 0.05 < dydit["fid_shift_ci_low"] < 0.10 < dydit["fid_shift_ci_high"] < 0.15  # paired: narrow
    assert not dydit["within_noise"] and flexdit["within_noise"]
    assert table.loc[("dydit", "0.50"), "precision_other"] == "bf16" and dydit["points"] == 2
    assert len(table) == 6  # 4 points + 2 methods


def test_unpaired_or_disjoint_runs_are_refused():
    base, other = runs({"dydit": 0.1})
    other[0]["bootstrap"]["seed"] = 1
    with pytest.raises(InputError, match="bootstraps differ"):
        paired_shifts(base, other)
    with pytest.raises(InputError, match="share no grid point"):
        paired_shifts(base, [record("dydit", "0.30", 4.0, [4.0] * 200)])
    del base[0]["fid_bootstrap"]
    with pytest.raises(InputError, match="no bootstrap replicates"):
        paired_shifts(base, other)


def test_the_command_writes_the_table(tmp_path, capsys):
    base, other = runs({"flexidit": -0.2})
    paths = {}
    for name, records in (("a", base), ("b", other)):
        paths[name] = []
        for i, r in enumerate(records):
            path = tmp_path / f"{name}{i}.json"
            path.write_text(json.dumps(r))
            paths[name].append(str(path))
    main(["compare-runs", "--baseline", *paths["a"], "--other", *paths["b"], "--out", str(tmp_path / "t.csv")])
    summary = json.loads(capsys.readouterr().out)
    assert summary["points"] == 2 and summary["shift_per_method"]["flexidit"][0] == pytest.approx(-0.2)
    assert len(pd.read_csv(tmp_path / "t.csv")) == 3
