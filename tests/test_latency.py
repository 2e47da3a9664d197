"""The latency job: every grid point timed in rounds on recorded trajectory states; its medians join the table."""

from __future__ import annotations

import pandas as pd
import pytest

from ditpareto.latency import machine, measure, prepare
from ditpareto.methods import SamplingSettings, get_method
from ditpareto.results import with_latency


@pytest.fixture
def points(tiny_model, tiny_spec):
    settings = SamplingSettings(steps=4, cfg_scale=2.0)
    out = []
    for name in ("dit", "flexidit"):
        method = get_method(name)
        options = method.parse_options({})
        model = tiny_model if name == "dit" else method.convert(tiny_model, options)
        budget = method.parse_budget("4" if name == "dit" else "0.50")
        plan = method.plan(model, budget, settings, tiny_spec)
        out.append(prepare(name, plan, tiny_spec, settings, seed=0))
    return out


def test_steps_of_equal_compute_are_timed_once_on_real_states(points):
    dit, flexidit = points
    assert list(dit.keys.values()) == [[0, 1, 2, 3]]  # one network: one kind of step
    assert sorted(len(v) for v in flexidit.keys.values()) == [2, 2]  # weak and powerful steps
    assert len(dit.states) == 4 and dit.states[0][0].shape == (1, 1, 16, 16)
    assert not dit.states[0][0].equal(dit.states[-1][0])  # the trajectory moved


def test_rounds_and_batches_are_recorded(points):
    rows = measure(points, batches=[1, 3], rounds=2)
    assert len(rows) == 4 and {r["batch_size"] for r in rows} == {1, 3}
    for row in rows:
        assert row["rounds"] == 2 and row["latency_ms_min"] <= row["latency_ms_per_image"] <= row["latency_ms_max"]
    record = machine()
    assert {"cpu", "threads", "blas_threads", "torch", "blas", "onednn"} <= set(record)


def test_the_table_takes_the_latency_jobs_medians(tmp_path):
    table = pd.DataFrame({"method": ["dit", "dit"], "budget": ["4", "2"], "steps": [4, 2], "ft": ["0.00", "0.00"],
                          "fid": [1.0, 2.0], "latency_ms_per_image": [9.0, 9.0], "latency_ms_per_image_std": [1.0, 1]})
    latency = pd.DataFrame({"method": ["dit"] * 4, "budget": ["4", "4", "2", "2"], "steps": [4, 4, 2, 2],
                            "ft": ["0.00"] * 4, "batch_size": [1, 250, 1, 250],
                            "latency_ms_per_image": [8.0, 2.0, 4.0, 1.0], "latency_ms_min": [7.0, 1.9, 3.9, 0.9],
                            "latency_ms_max": [9.0, 2.1, 4.1, 1.1]})
    latency.to_csv(tmp_path / "latency.csv", index=False)
    out = with_latency(table, tmp_path / "latency.csv").set_index("budget")
    assert out.loc["4", "latency_ms_per_image"] == 2.0 and out.loc["4", "latency_ms_batch1"] == 8.0
    assert out.loc["2", "latency_ms_min"] == 0.9 and out.loc["4", "sampling_latency_ms_per_image"] == 9.0


def test_every_guided_scale_of_a_point_takes_its_timing_and_an_unguided_one_does_not(tmp_path):
    """The latency job times each compute once, at the fixed scale (1.5): the same point at a recorded scale (3.0)
    does the same work and takes that timing; at CFG 1 (one call a step) it is not timed."""
    table = pd.DataFrame({"method": ["dit"] * 3, "budget": ["4"] * 3, "steps": [4] * 3, "ft": ["0.00"] * 3,
                          "cfg_scale": [1.5, 3.0, 1.0], "fid": [1.0, 2.0, 3.0]})
    latency = pd.DataFrame({"method": ["dit"] * 2, "budget": ["4"] * 2, "steps": [4] * 2, "ft": ["0.00"] * 2,
                            "cfg_scale": [1.5] * 2, "batch_size": [1, 64], "latency_ms_per_image": [8.0, 2.0],
                            "latency_ms_min": [7.0, 1.9], "latency_ms_max": [9.0, 2.1]})
    latency.to_csv(tmp_path / "latency.csv", index=False)
    out = with_latency(table, tmp_path / "latency.csv").set_index("cfg_scale")
    assert len(out) == 3 and "guided_" not in out
    assert out.loc[1.5, "latency_ms_per_image"] == out.loc[3.0, "latency_ms_per_image"] == 2.0
    assert out.loc[3.0, "latency_ms_batch1"] == 8.0 and pd.isna(out.loc[1.0, "latency_ms_per_image"])


def test_one_timing_statistic():
    from ditpareto.timing import summarize, time_repeated

    timing = summarize([0.3, 0.1, 0.2, 0.5])
    assert (timing.median, timing.min, timing.max, timing.count) == (0.25, 0.1, 0.5, 4)
    calls = []
    assert time_repeated(lambda: calls.append(1), repeats=3, warmup=2).count == 3 and len(calls) == 5


def test_the_latency_job_names_its_device_precision_and_timer(tiny_model, tiny_spec, tmp_path):
    import json

    import torch

    from ditpareto.jobs.sampling import latency

    torch.save(tiny_model.state_dict(), tmp_path / "base.pt")
    points = [{"method": "dit", "budget": "2", "steps": 2, "ft": "0.00", "cfg_scale": 2.0, "seed": 0,
               "checkpoint": str(tmp_path / "base.pt")}]
    latency(spec=tiny_spec, points=json.dumps(points), out=str(tmp_path / "latency.csv"), batch_sizes=[1, 2],
            rounds=1, device="cpu", precision="bf16")
    table = pd.read_csv(tmp_path / "latency.csv")
    assert set(table["precision"]) == {"bf16"} and set(table["device"]) == {"cpu"}
    record = json.loads((tmp_path / "latency.csv.json").read_text())
    assert (record["device"], record["precision"], record["timer"]) == ("cpu", "bf16", "perf_counter")
    assert record["torch_compile"] is False and record["cuda_graphs"] is False
    metrics = pd.DataFrame({"method": ["dit"], "budget": ["2"], "steps": [2], "ft": ["0.00"], "fid": [1.0],
                            "latency_ms_per_image": [1.0], "latency_ms_per_image_std": [0.1]})
    joined = with_latency(metrics, tmp_path / "latency.csv")
    assert joined.loc[0, "latency_precision"] == "bf16" and joined.loc[0, "latency_device"] == "cpu"
