"""Paired FID shifts between two runs of one grid: the same points, noise and labels, sampled another way (bf16
against fp32, one device against another).

Both runs score each point with the same paired bootstrap (same N, seed and replicate count: replicate b resamples
the same sample indices in both), so the shift of a point is FID(other) - FID(baseline) with the replicate-wise
differences as its bootstrap; a method's shift is the mean over its points, replicate by replicate. Intervals are
the replicate differences' percentile intervals, as for the study's other paired differences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ditpareto.intervals import percentile_ci
from ditpareto.errors import InputError

POINT_KEY = ("method", "budget", "steps", "ft", "cfg_scale", "seed")


def _key(record: dict) -> tuple:
    return (record["method"], str(record["budget"]), int(record["steps"]), str(record.get("ft", "1.00")),
            round(float(record["cfg_scale"]), 6), int(record["seed"]))


def _by_point(records: list[dict], run: str) -> dict:
    points = {}
    for record in records:
        if "fid_bootstrap" not in record:
            raise InputError(f"{run} run: {record['method']} {record['budget']} has no bootstrap replicates "
                             "(metrics.bootstrap.replicates must be > 0)")
        key = _key(record)
        if key in points:
            raise InputError(f"{run} run holds {'/'.join(map(str, key))} twice")
        points[key] = record
    return points


def _bootstrap_id(record: dict) -> tuple:
    return (record.get("bootstrap", {}).get("seed"), len(record["fid_bootstrap"]), record["params"]["num_samples"])


def paired_shifts(baseline: list[dict], other: list[dict]) -> pd.DataFrame:
    """One row per grid point in both runs, then one ``all points`` row per method: FID of each run, the shift and
    its 95 % CI, the relative shift, and each run's precision and device. InputError when no point is shared or a
    shared point was bootstrapped differently (the differences would not be paired)."""
    a, b = _by_point(baseline, "baseline"), _by_point(other, "other")
    shared = sorted(set(a) & set(b), key=str)
    if not shared:
        raise InputError("the two runs share no grid point (method, budget, steps, ft, cfg, seed)")
    rows, per_method = [], {}
    for key in shared:
        ra, rb = a[key], b[key]
        if _bootstrap_id(ra) != _bootstrap_id(rb):
            raise InputError(f"{'/'.join(map(str, key))}: the runs' bootstraps differ (seed, replicates, samples "
                             f"{_bootstrap_id(ra)} vs {_bootstrap_id(rb)}): not paired")
        diffs = np.asarray(rb["fid_bootstrap"], float) - np.asarray(ra["fid_bootstrap"], float)
        shift = float(rb["fid"]) - float(ra["fid"])
        per_method.setdefault(key[0], []).append((shift, diffs, float(ra["fid"])))
        rows.append(_row(dict(zip(POINT_KEY, key)), float(ra["fid"]), float(rb["fid"]), shift, diffs, ra, rb))
    for method, items in per_method.items():
        shift = float(np.mean([s for s, _, _ in items]))
        diffs = np.mean([d for _, d, _ in items], axis=0)
        fid_a = float(np.mean([f for _, _, f in items]))
        ra, rb = a[shared[0]], b[shared[0]]
        rows.append(_row({"method": method, "budget": "all points", "points": len(items)}, fid_a, fid_a + shift,
                         shift, diffs, ra, rb))
    return pd.DataFrame(rows)


def _row(key: dict, fid_a: float, fid_b: float, shift: float, diffs: np.ndarray, ra: dict, rb: dict) -> dict:
    low, high = percentile_ci(diffs)
    return {**key, "fid_baseline": fid_a, "fid_other": fid_b, "fid_shift": shift, "fid_shift_ci_low": low,
            "fid_shift_ci_high": high, "relative_shift": shift / fid_a if fid_a else float("nan"),
            "within_noise": bool(low <= 0 <= high),
            "precision_baseline": ra.get("sampling_precision", "fp32"),
            "precision_other": rb.get("sampling_precision", "fp32"),
            "device_baseline": ra.get("device"), "device_other": rb.get("device")}
