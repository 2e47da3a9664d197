"""Verdicts with confidence: each method point against the static envelope, and each published claim's toy analogue.

Inputs are the grid points' metrics records with their paired-bootstrap FID replicates (``ditpareto.bootstrap``:
replicate b of every point of a seed resamples the same sample indices), so every quantity below is computed per
replicate and its 95 % CI is the replicates' percentile interval moved by their bias (``bootstrap_ci``).

* Static envelope: a static DiT's step ladder (``dit-ft``, or the untouched ``dit``) at the fixed guidance scale, FID
  interpolated linearly in log-GMACs between its points (no extrapolation: outside the ladder, NaN).
* ``diff_vs_envelope``: a method point's FID minus the envelope's at the same GMACs (< 0: the method beats fewer steps).
* ``compute_saved``: 1 - GMACs(point) / GMACs at which the envelope reaches the point's FID (> 0: the method needs
  less compute than fewer steps for the same FID); the envelope is made monotone (running minimum over GMACs).
* Claims: the papers' ratio FID(method) / FID(own DiT) at a compute ratio, against ours at the matching budget
  (the untouched base at full steps is our own DiT).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ditpareto.bootstrap import bootstrap_ci
from ditpareto.study import FINETUNE_MODES, OFFICIAL, STEP_BUDGET_METHODS, checkpoint_budget, parse_ft

VERDICTS = ("supported", "contradicted", "inconclusive")
BEATS_FEWER_STEPS = "beats fewer steps: lower FID than the fine-tuned static DiT's step ladder at equal GMACs"
ENVELOPE_COLUMNS = ["seed", "nominal_compute_ratio", "diff_vs_envelope", "diff_ci_low", "diff_ci_high"]
# A claim's relative FID change is reproduced within this many (relative) points.
CLAIM_TOLERANCE = 0.05
# Said in the basis of a verdict on points sampled from the authors' released checkpoints (finetune_source official).
AUTHORS_NOTE = "authors' released checkpoint: trained by them, not with this study's fine-tuning compute"


def load_points(records: list[dict], fixed_cfg: float, selected: dict | None = None) -> pd.DataFrame:
    """One row per grid point at the shared fine-tuning compute, with its replicates: at the fixed guidance scale,
    or, given ``selected`` ((method, budget, steps, ft) -> scale, the select-cfg table), at each point's selected
    scale (points without one are left out)."""
    rows = []
    for r in records:
        ft = str(r.get("ft", "1.00"))
        if ft not in ("0.00", "1.00"):
            continue
        scale = fixed_cfg if selected is None else selected.get((r["method"], str(r["budget"]), int(r["steps"]), ft))
        if scale is None or abs(float(r["cfg_scale"]) - scale) > 1e-9:
            continue
        if "fid_bootstrap" not in r:
            raise ValueError(f"record of {r['method']} {r['budget']} has no bootstrap replicates (fid_bootstrap)")
        rows.append({"method": r["method"], "budget": str(r["budget"]), "steps": int(r["steps"]),
                     "seed": int(r["seed"]), "gmacs": float(r["gmacs_per_image"]), "fid": float(r["fid"]),
                     "nominal_compute_ratio": float(r["nominal_compute_ratio"]),
                     "finetune_source": r.get("finetune_source"),
                     "replicates": np.asarray(r["fid_bootstrap"], dtype=np.float64)})
    return pd.DataFrame(rows)


def finetune_seed_noise(records: list[dict]) -> pd.DataFrame:
    """FID spread across fine-tune seeds (finetune.seed_noise): per (method, budget) repeated, the standard deviation
    over the study's own fine-tune ("1.00") and its repeats ("1.00s<seed>") at the guidance scale and the first
    sampling seed that have them all. Columns: method, budget, steps, finetune_seed_std, finetune_seeds."""
    rows = []
    for r in records:
        multiple, seed = parse_ft(r.get("ft", "1.00"))
        if multiple != 1.0:
            continue
        rows.append({"method": r["method"], "budget": str(r["budget"]), "steps": int(r["steps"]),
                     "cfg": float(r["cfg_scale"]), "seed": int(r["seed"]), "repeat": seed is not None,
                     "fid": float(r["fid"])})
    table = pd.DataFrame(rows, columns=["method", "budget", "steps", "cfg", "seed", "repeat", "fid"])
    out = []
    for (method, budget, steps, _, _), group in table.groupby(["method", "budget", "steps", "cfg", "seed"]):
        if group["repeat"].any() and len(group) >= 2:
            out.append({"method": method, "budget": budget, "steps": steps,
                        "finetune_seed_std": float(group["fid"].std(ddof=1)), "finetune_seeds": len(group)})
    frame = pd.DataFrame(out, columns=["method", "budget", "steps", "finetune_seed_std", "finetune_seeds"])
    return frame.drop_duplicates(["method", "budget"])


def widen(estimate: float, low: float, high: float, std: float) -> tuple[float, float]:
    """A bootstrap interval widened by an independent noise of standard deviation ``std`` (half-widths added in
    quadrature with the normal 95 % half-width of that noise)."""
    if not std or math.isnan(std):
        return low, high
    extra = 1.959964 * std
    return (estimate - math.hypot(estimate - low, extra), estimate + math.hypot(high - estimate, extra))


def _envelope_fid(ladder: pd.DataFrame, gmacs: float, replicate: int | None) -> float:
    """FID of the static ladder at ``gmacs`` (log-linear interpolation; NaN outside the ladder)."""
    x = np.log(ladder["gmacs"].to_numpy())
    y = np.array([v[replicate] if replicate is not None else f
                  for v, f in zip(ladder["replicates"], ladder["fid"])])
    order = np.argsort(x)
    x, y = x[order], y[order]
    g = math.log(gmacs)
    if g < x[0] - 1e-9 or g > x[-1] + 1e-9:
        return float("nan")
    return float(np.interp(g, x, y))


def _envelope_gmacs(ladder: pd.DataFrame, fid: float, replicate: int | None) -> float:
    """GMACs at which the static ladder reaches ``fid`` (inverse interpolation on its monotone running minimum)."""
    x = np.log(ladder["gmacs"].to_numpy())
    y = np.array([v[replicate] if replicate is not None else f
                  for v, f in zip(ladder["replicates"], ladder["fid"])])
    order = np.argsort(x)
    x, y = x[order], np.minimum.accumulate(y[order])  # more compute never hurts: the frontier
    if fid > y[0] or fid < y[-1]:
        return float("nan")
    # y is non-increasing: find the first index where y <= fid
    i = int(np.argmax(y <= fid))
    if i == 0:
        return float(math.exp(x[0]))
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    t = 0.0 if y0 == y1 else (y0 - fid) / (y0 - y1)
    return float(math.exp(x0 + t * (x1 - x0)))


def _noise_std(noise: pd.DataFrame | None, method: str, budget: str | None = None) -> float:
    """The fine-tune seed spread measured for the fine-tune a point of ``method`` at ``budget`` samples (a shared
    fine-tune's, measured at any budget; a per-budget method's at that budget, "full@B" sampling B's); 0 when
    unmeasured."""
    if noise is None or noise.empty:
        return 0.0
    rows = noise[noise["method"] == method]
    if budget is not None and FINETUNE_MODES.get(method) == "per_budget":
        rows = rows[rows["budget"] == checkpoint_budget(budget)]
    return float(rows["finetune_seed_std"].iloc[0]) if len(rows) else 0.0


def compare_with_envelopes(points: pd.DataFrame, noise: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dynamic-method point and seed: FID difference from the dit-ft envelope at equal GMACs, and the compute
    saved at matched FID against the dit-ft and the dit envelopes, each with its paired-bootstrap CI. Where the
    fine-tune seed spread is measured (``finetune_seed_noise``: the method at this budget, dit-ft at any), the
    difference's CI is widened by both spreads (``finetune_seed_std``)."""
    rows = []
    for seed, group in points.groupby("seed"):
        ladders = {m: group[group["method"] == m] for m in STEP_BUDGET_METHODS}
        for _, p in group[~group["method"].isin(STEP_BUDGET_METHODS)].iterrows():
            row = {"method": p["method"], "budget": p["budget"], "steps": p["steps"], "seed": seed,
                   "gmacs_per_image": p["gmacs"], "nominal_compute_ratio": p["nominal_compute_ratio"],
                   "fid": p["fid"], "finetune_source": p.get("finetune_source")}
            ladder = ladders["dit-ft"]
            if len(ladder) >= 2:
                diffs = [p["replicates"][b] - _envelope_fid(ladder, p["gmacs"], b)
                         for b in range(len(p["replicates"]))]
                row["diff_vs_envelope"] = p["fid"] - _envelope_fid(ladder, p["gmacs"], None)
                std = math.hypot(_noise_std(noise, p["method"], p["budget"]), _noise_std(noise, "dit-ft"))
                row["finetune_seed_std"] = std
                row["diff_ci_low"], row["diff_ci_high"] = widen(row["diff_vs_envelope"],
                                                                *bootstrap_ci(row["diff_vs_envelope"], diffs), std)
                row["beats_fewer_steps"] = answer(row["diff_ci_low"], row["diff_ci_high"])
            for name, ladder in (("dit_ft", ladders["dit-ft"]), ("dit", ladders["dit"])):
                if len(ladder) < 2:
                    continue
                saved = [1 - p["gmacs"] / _envelope_gmacs(ladder, p["replicates"][b], b)
                         for b in range(len(p["replicates"]))]
                row[f"compute_saved_vs_{name}"] = 1 - p["gmacs"] / _envelope_gmacs(ladder, p["fid"], None)
                row[f"compute_saved_vs_{name}_ci_low"], row[f"compute_saved_vs_{name}_ci_high"] = bootstrap_ci(
                    row[f"compute_saved_vs_{name}"], saved)
            rows.append(row)
    return pd.DataFrame(rows)


def answer(low: float, high: float) -> str:
    """Does the method beat the envelope? "yes" (CI below 0), "no" (CI above 0), else "not significant"."""
    if math.isnan(low) or math.isnan(high):
        return "not comparable"
    if high < 0:
        return "yes"
    if low > 0:
        return "no"
    return "not significant"


# Published claim -> our budget label at the study's full step count (256-px claims only: 64 tokens).
TOY_ANALOGUES = {
    ("dydit", "lambda=0.7"): "0.70", ("dydit", "lambda=0.5"): "0.50", ("dydit", "lambda=0.6"): "0.60",
    ("dydit", "lambda=0.3"): "0.30",
    ("flexdit", "r in [0.44,0.61]"): "0.44-0.61", ("flexdit", "r in [0.61,0.86]"): "0.61-0.86",
    ("flexidit", "250/250 powerful steps"): "0.00", ("flexidit", "130/130 powerful steps"): "0.50",
    ("flexidit", "70/70 powerful steps"): "0.70", ("flexidit", "30/0 powerful steps"): "0.90-1.00",
}


def claims_ledger(points: pd.DataFrame, comparisons: pd.DataFrame, claims: pd.DataFrame,
                  full_steps: int, noise: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per published claim with a toy analogue in this study, plus one "beats fewer steps?" row per
    method. Columns: method, claim, toy_analogue, estimate, ci_low, ci_high, verdict, basis."""
    rows = []
    for seed, group in points.groupby("seed"):
        base = group[(group["method"] == "dit") & (group["steps"] == full_steps)]
        if base.empty:
            continue
        base = base.iloc[0]
        own = claims[claims["method"] == "dit"].set_index(["model", "resolution"])["fid"]
        for c in claims[claims["method"] != "dit"].itertuples():
            budget = TOY_ANALOGUES.get((c.method, c.setting))
            if int(c.resolution) != 256 or budget is None or (c.model, c.resolution) not in own.index:
                continue
            match = group[(group["method"] == c.method) & (group["budget"] == budget) & (group["steps"] == full_steps)]
            if match.empty:
                continue
            p = match.iloc[0]
            claimed = float(c.fid) / float(own[(c.model, c.resolution)]) - 1
            ratios = p["replicates"] / base["replicates"] - 1
            # the untouched DiT has no fine-tune: only the method's fine-tune spread widens the interval
            estimate = p["fid"] / base["fid"] - 1
            low, high = widen(estimate, *bootstrap_ci(estimate, ratios),
                              _noise_std(noise, c.method, budget) / base["fid"])
            if high <= claimed + CLAIM_TOLERANCE:
                verdict = "supported"
            elif low > claimed + CLAIM_TOLERANCE:
                verdict = "contradicted"
            else:
                verdict = "inconclusive"
            rows.append({
                "method": c.method, "seed": seed,
                "claim": f"{c.setting} ({c.model} {c.resolution}px): FID {float(c.fid):.2f} vs DiT "
                         f"{float(own[(c.model, c.resolution)]):.2f} ({claimed:+.1%}) at {float(c.compute_ratio):.0%} "
                         f"compute",
                "toy_analogue": f"{c.method} {budget} at {full_steps} steps: relative FID change vs the untouched DiT "
                                f"at {full_steps} steps ({p['nominal_compute_ratio']:.0%} nominal compute)",
                "estimate": p["fid"] / base["fid"] - 1, "ci_low": low, "ci_high": high, "verdict": verdict,
                "basis": f"{c.method}/budget~{budget}/steps~{full_steps} vs dit/budget~{full_steps}, seed {seed}; "
                         f"claimed {claimed:+.3f}, tolerance {CLAIM_TOLERANCE}"
                         + (f"; {AUTHORS_NOTE}" if p.get("finetune_source") == OFFICIAL else ""),
            })
        scope = comparisons.reindex(columns=[*comparisons.columns.difference(ENVELOPE_COLUMNS), *ENVELOPE_COLUMNS])
        scope = scope[scope["seed"] == seed]
        for method, sub in scope.groupby("method"):
            # the question is about saving compute: full-compute (parity) points do not answer it
            sub = sub[~(sub["nominal_compute_ratio"] >= 1 - 1e-9)].dropna(subset=["diff_ci_high"])
            if sub.empty:  # no dit-ft ladder around any of its points: say so rather than drop the question
                rows.append({"method": method, "seed": seed, "claim": BEATS_FEWER_STEPS, "verdict": "inconclusive",
                             "toy_analogue": "FID difference from the dit-ft envelope (log-GMACs interpolation)",
                             "basis": f"no dit-ft step ladder (>= 2 step counts) spans its GMACs (seed {seed})"})
                continue
            best = sub.loc[sub["diff_vs_envelope"].idxmin()]
            authors = "finetune_source" in sub and bool((sub["finetune_source"] == OFFICIAL).any())
            if (sub["diff_ci_high"] < 0).any():
                verdict = "supported"
            elif (sub["diff_ci_low"] > 0).all():
                verdict = "contradicted"
            else:
                verdict = "inconclusive"
            rows.append({
                "method": method, "seed": seed,
                "claim": BEATS_FEWER_STEPS,
                "toy_analogue": "FID difference from the dit-ft envelope (log-GMACs interpolation), best point",
                "estimate": best["diff_vs_envelope"], "ci_low": best["diff_ci_low"], "ci_high": best["diff_ci_high"],
                "verdict": verdict,
                "basis": "; ".join(f"{r.budget}@{r.steps}: {r.diff_vs_envelope:+.2f} [{r.diff_ci_low:+.2f}, "
                                   f"{r.diff_ci_high:+.2f}]" for r in sub.itertuples()) + f" (seed {seed})"
                         + (f"; {AUTHORS_NOTE}" if authors else ""),
            })
    columns = ["method", "claim", "toy_analogue", "estimate", "ci_low", "ci_high", "verdict", "basis", "seed"]
    return pd.DataFrame(rows, columns=columns)
