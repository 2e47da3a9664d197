"""benchmarks/speed.py runs in-process at a tiny shape: every (mode, method, budget, precision, batch) row, with
finite positive timings (their values are never asserted), executed FLOPs ratios in (0, 1] and failed rows for a
method that raises."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys

import pytest
import torch

from conftest import REPO


@pytest.fixture
def speed(monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmark_speed", REPO / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ on it
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_rows(speed, tmp_path, monkeypatch, capsys):
    from ditpareto.methods import METHODS

    plan = METHODS["flexdit"].plan

    def failing_plan(model, budget, settings, spec):  # one budget fails: its rows say why, the rest go on
        if budget == "0.61-0.86":
            raise RuntimeError("synthetic failure\nsecond line")
        return plan(model, budget, settings, spec)

    monkeypatch.setattr(METHODS["flexdit"], "plan", failing_plan)
    out = tmp_path / "speed.csv"
    threads = torch.get_num_threads()
    try:
        code = speed.main(["--device", "cpu", "--model", "dit-tiny-2", "--image-size", "64", "--num-classes", "10",
                           "--batches", "2", "--steps", "2", "--precisions", "fp32", "bf16", "--repeats", "2",
                           "--min-repeats", "1", "--max-seconds", "0.2", "--flops-images", "2", "--threads", "1",
                           "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == speed.COLUMNS
        rows = list(reader)

    budgets = [("dit", "full"), ("dydit", "0.50"), ("dydit", "0.70"), ("flexdit", "0.44-0.61"),
               ("flexdit", "0.61-0.86"), ("flexidit", "0.48"), ("flexidit", "0.72")]
    weak = ("flexidit", "weak call (p4 vs p2)")
    expected = {("forward", m, b, p) for m, b in budgets + [weak] for p in ("fp32", "bf16")}
    expected |= {("trajectory", m, b, p) for m, b in budgets for p in ("fp32", "bf16")}
    assert sorted((r["mode"], r["method"], r["budget"], r["precision"]) for r in rows) == sorted(expected)
    for row in rows:
        assert row["device"] == "cpu" and row["batch"] == "2" and row["compile"] == "none"
        assert row["torch"] == torch.__version__ and row["model"] == "dit-tiny-2"
        if row["budget"] == "0.61-0.86":
            assert row["status"] == "failed" and row["error"] == "plan: RuntimeError: synthetic failure"
            continue
        assert row["status"] == "ok", row["error"]
        for key in ("ms_per_image_median", "ms_per_image_min", "ms_per_image_max", "gmacs_per_image", "speedup",
                    "efficiency"):
            value = float(row[key])
            assert math.isfinite(value) and value > 0, (key, row)
        ratio = float(row["flops_ratio"])
        if row["method"] == "dit":
            assert ratio == 1.0
        else:
            assert 0 < ratio <= 1, row
    assert "| trajectory | flexidit | 0.48 | bf16 | 2 |" in capsys.readouterr().out
