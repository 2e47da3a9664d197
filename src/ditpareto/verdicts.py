"""Verdicts that survive a reviewer: each method point against the static envelope, and each published claim's toy
analogue, with paired-bootstrap intervals, fine-tune seed noise, p-values and Holm's adjustment.

Inputs are the grid points' metrics records with their paired-bootstrap FID replicates (``ditpareto.bootstrap``:
replicate b of every point of a seed resamples the same sample indices; every paired point must have the same N).
Intervals are ``ditpareto.intervals``': percentile intervals of paired differences and ratios, widened by the
fine-tune seed noise with the t quantile of its degrees of freedom.

* Static envelope: the lower envelope of a static DiT's ladders (``dit-ft``, or the untouched ``dit``) over step
  counts x guidance variants (unguided, CFG 1; guided at each point's scale; guided inside the guidance interval
  only, "<steps>i" budgets): each variant's ladder interpolated in
  log-GMACs between its measured neighbours only, then the minimum over variants and over every node with no more
  compute (more compute never hurts: fewer steps remain available). No extrapolation: outside the ladder, NaN.
* ``diff_vs_envelope``: a method point's FID minus its comparator's envelope at the same GMACs (< 0: the method
  beats fewer steps). The comparator has the method's training compute (``comparator``): ``dit-ft`` for a method
  that fine-tunes (or trains a router), the untouched ``dit`` for a training-free one.
* ``compute_saved``: 1 - GMACs(point) / GMACs at which the envelope first reaches the point's FID (> 0: the method
  needs less compute than fewer steps for the same FID). A replicate better than the whole ladder saves at least
  1 - GMACs / the ladder's largest ("beyond the ladder": the share is reported, and a bound that rests on such
  replicates reads as one); one worse than the cheapest rung saves at most 1 - GMACs / the smallest.
* Claims: the papers' ratio FID(method) / FID(own DiT) - 1 at a compute ratio, against ours at the matching budget
  (the untouched base at full steps, guided, is our own DiT), with four outcomes (``claim_outcome``) against a
  tolerance tied to the paper's own precision (``claim_tolerance``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ditpareto.intervals import CI_LEVEL, Estimate, holm
from ditpareto.study import OFFICIAL, checkpoint_budget, interval_budget, parse_ft
from ditpareto.spec import FINETUNE_MODES, STEP_BUDGET_METHODS, split_sampler, with_sampler

OUTCOMES = ("reproduced", "better than claimed", "worse than claimed", "inconclusive")
BEATS_FEWER_STEPS = "beats fewer steps: lower FID than the static DiT's step ladder at equal GMACs"


def comparator(method: str) -> str:
    """The static ladder a method's "beats fewer steps" question is asked against: the one with its training compute.
    A training-free method (no fine-tune: ToMe, FORA) against the untouched ``dit``; a method that spends the shared
    fine-tuning compute (a fine-tune, or L2C's router) against ``dit-ft``, the same DiT fine-tuned with it."""
    return "dit" if FINETUNE_MODES.get(method) == "none" else "dit-ft"
ENVELOPE_COLUMNS = ["seed", "nominal_compute_ratio", "executed_compute_ratio", "diff_vs_envelope", "diff_ci_low",
                    "diff_ci_high"]
# One-sided level of every test (a two-sided 95 % interval excludes a bound at p < 0.025).
ALPHA = (1 - CI_LEVEL) / 2
# FID-50k's seed-to-seed noise on ImageNet at DiT-XL/2's level (protocol-and-peers: differences of ~0.05 FID are
# noise) and a claim's compute ratio within this many points of ours counts as the same compute.
FID50K_NOISE = 0.05
COMPUTE_MISMATCH = 0.05
# Said in the basis of a verdict on points sampled from the authors' released checkpoints (finetune_source official).
AUTHORS_NOTE = "authors' released checkpoint: trained by them, not with this study's fine-tuning compute"
UNGUIDED = "unguided"
GUIDED = "guided"
INTERVAL = "interval"  # a "<steps>i" budget: guided only inside the guidance interval
# The regime the paper-scale frontier lives in: guidance must matter. ImageNet DiT-XL/2 (250 DDPM steps): FID 9.62
# unguided, 2.27 at CFG 1.5 (the DiT paper), 4.2x. The toy must reach REGIME_TARGET x at its full step count.
REGIME_TARGET = 1.5
PAPER_REGIME = 9.62 / 2.27
REGIME_CLAIM = "guidance regime: FID(unguided) / FID(guided) of the untouched DiT at full steps"


def load_points(records: list[dict], fixed_cfg: float, selected: dict | None = None,
                samplers: bool = False) -> pd.DataFrame:
    """One row per grid point at the shared fine-tuning compute, with its replicates: at the fixed guidance scale,
    or, given ``selected`` ((method, budget, steps, ft) -> scale, the select-cfg table), at each point's selected
    scale (points without one are left out); points off the study's sampler ("B+S" budgets) are left out too unless
    ``samplers`` (the verdicts compare methods at one sampler; ``dominance`` compares every series). The static
    methods' unguided points (CFG 1) are kept too, as their ``unguided`` variant (column ``variant``: guided,
    unguided, or interval for "<steps>i" budgets; a point guided at scale 1 is unguided).
    Raises ValueError when the points of a seed do not all have the same number of samples and replicates (their
    replicates would not be paired)."""
    rows = []
    for r in records:
        ft = str(r.get("ft", "1.00"))
        if ft not in ("0.00", "1.00") or (split_sampler(r["budget"])[1] and not samplers):
            continue
        scale = fixed_cfg if selected is None else selected.get((r["method"], str(r["budget"]), int(r["steps"]), ft))
        cfg = float(r["cfg_scale"])
        unguided = abs(cfg - 1.0) < 1e-9
        at_scale = scale is not None and abs(cfg - scale) < 1e-9
        if not (at_scale or (unguided and r["method"] in STEP_BUDGET_METHODS)):
            continue
        if "fid_bootstrap" not in r:
            raise ValueError(f"record of {r['method']} {r['budget']} has no bootstrap replicates (fid_bootstrap)")
        rows.append({"method": r["method"], "budget": str(r["budget"]), "steps": int(r["steps"]),
                     "seed": int(r["seed"]), "cfg_scale": cfg,
                     "variant": UNGUIDED if unguided else INTERVAL if interval_budget(r["budget"]) else GUIDED,
                     "gmacs": float(r["gmacs_per_image"]), "fid": float(r["fid"]),
                     "precision": float(r.get("precision", math.nan)), "recall": float(r.get("recall", math.nan)),
                     "num_samples": int(r.get("params", {}).get("num_samples", len(r["fid_bootstrap"]))),
                     "nominal_compute_ratio": float(r["nominal_compute_ratio"]),
                     "finetune_source": r.get("finetune_source"),
                     "replicates": np.asarray(r["fid_bootstrap"], dtype=np.float64)})
    columns = ["method", "budget", "steps", "seed", "cfg_scale", "variant", "gmacs", "fid", "precision", "recall",
               "num_samples", "nominal_compute_ratio", "finetune_source", "replicates"]
    points = pd.DataFrame(rows, columns=columns).drop_duplicates(["method", "budget", "steps", "seed", "variant"])
    check_paired(points)
    return points.reset_index(drop=True)


def _plateau_records(records: list[dict], fixed_cfg: float, selected: dict | None):
    """The plateau records (another multiple of the training compute, the study's fine-tune seed) at the guidance
    their study's own fine-tune takes there: (record, multiple) pairs."""
    for r in records:
        multiple, ft_seed = parse_ft(r.get("ft", "1.00"))
        if ft_seed is not None or multiple in (0.0, 1.0) or "fid_bootstrap" not in r:
            continue
        if _at_study_scale(r, fixed_cfg, selected):
            yield r, multiple


def _at_study_scale(r: dict, fixed_cfg: float, selected: dict | None) -> bool:
    """Whether a plateau record or row is at the guidance its study's own fine-tune (ft 1.00) takes at its key."""
    scale = fixed_cfg if selected is None else selected.get((r["method"], str(r["budget"]), int(r["steps"]), "1.00"))
    return scale is not None and abs(float(r["cfg_scale"]) - scale) <= 1e-9


PLATEAU_COLUMNS = ["method", "budget", "steps", "seed", "multiple", "fid", "replicates", "source"]


def load_plateau(records: list[dict], fixed_cfg: float, selected: dict | None = None) -> pd.DataFrame:
    """The plateau points (finetune.plateau: fine-tunes at another multiple of the training compute, study seed),
    each at the guidance its study's own fine-tune takes there (the fixed scale, or the selected one): columns
    ``PLATEAU_COLUMNS`` (source "this run")."""
    rows = [{"method": r["method"], "budget": str(r["budget"]), "steps": int(r["steps"]), "seed": int(r["seed"]),
             "multiple": multiple, "fid": float(r["fid"]),
             "replicates": np.asarray(r["fid_bootstrap"], dtype=np.float64), "source": "this run"}
            for r, multiple in _plateau_records(records, fixed_cfg, selected)]
    return pd.DataFrame(rows, columns=PLATEAU_COLUMNS)


def plateau_rows(records: list[dict], fixed_cfg: float, selected: dict | None = None) -> list[dict]:
    """The plateau points as a table to record (``study.read_plateau_table`` reads it back): each with its FID
    replicates, what pairs them (sample count, bootstrap seed) and what it depends on: the base it was fine-tuned
    from (the untouched DiT's checkpoint in these records), the sampler and the training GMACs."""
    bases = {r.get("checkpoint_sha256") for r in records if r["method"] == "dit" and r.get("checkpoint_sha256")}
    base = bases.pop() if len(bases) == 1 else None
    return [{"method": r["method"], "budget": str(r["budget"]), "steps": int(r["steps"]), "seed": int(r["seed"]),
             "multiple": multiple, "cfg_scale": float(r["cfg_scale"]), "fid": float(r["fid"]),
             "num_samples": int(r.get("params", {}).get("num_samples", len(r["fid_bootstrap"]))),
             "bootstrap_seed": int(r.get("bootstrap", {}).get("seed", 0)),
             "replicates": [float(v) for v in r["fid_bootstrap"]],
             "checkpoint_sha256": r.get("checkpoint_sha256"), "base_sha256": base,
             "sampler": r.get("params", {}).get("sampler"), "train_gmacs": float(r.get("train_gmacs") or 0.0)}
            for r, multiple in _plateau_records(records, fixed_cfg, selected)]


def recorded_plateau(rows: list[dict], points: pd.DataFrame, bootstrap_seed: int) -> pd.DataFrame:
    """Recorded plateau rows (``plateau_rows``) as plateau points (source "recorded"), each checked to pair with this
    run's points of its seed: the same sample count, replicate count and bootstrap seed (ValueError naming the row
    otherwise); rows of a seed this run does not sample are left out."""
    out = []
    for row in rows:
        if row["bootstrap_seed"] != bootstrap_seed:
            raise ValueError(f"recorded plateau point {row['method']}/{row['budget']}/{row['multiple']:g}x was "
                             f"resampled with bootstrap seed {row['bootstrap_seed']}, this run with {bootstrap_seed}: "
                             "not paired")
        group = points[points["seed"] == row["seed"]]
        if group.empty:
            continue
        n, b = int(group["num_samples"].iloc[0]), len(group["replicates"].iloc[0])
        if row["num_samples"] != n or len(row["replicates"]) != b:
            raise ValueError(f"recorded plateau point {row['method']}/{row['budget']}/{row['multiple']:g}x has N "
                             f"{row['num_samples']} and {len(row['replicates'])} replicates, this run's seed "
                             f"{row['seed']} has N {n} and {b}: not paired")
        out.append({**{k: row[k] for k in ("method", "budget", "steps", "seed", "multiple", "fid")},
                    "replicates": np.asarray(row["replicates"], dtype=np.float64), "source": "recorded"})
    return pd.DataFrame(out, columns=PLATEAU_COLUMNS)


def with_recorded_plateau(own: pd.DataFrame, rows: list[dict], points: pd.DataFrame, records: list[dict],
                          fixed_cfg: float, selected: dict | None) -> pd.DataFrame:
    """This run's plateau points (``load_plateau``), plus the recorded rows at the scale this run samples their key
    at, where this run has no point of that (method, budget, steps, seed, multiple)."""
    seeds = {int(r.get("bootstrap", {}).get("seed", 0)) for r in records if "fid_bootstrap" in r}
    if len(seeds) > 1:
        raise ValueError(f"the metrics records were resampled with several bootstrap seeds {sorted(seeds)}")
    mine = {tuple(k) for k in own[["method", "budget", "steps", "seed", "multiple"]].itertuples(index=False)}
    rows = [r for r in rows if _at_study_scale(r, fixed_cfg, selected)
            and (r["method"], r["budget"], r["steps"], r["seed"], r["multiple"]) not in mine]
    extra = recorded_plateau(rows, points, seeds.pop() if seeds else 0)
    return pd.concat([own, extra], ignore_index=True) if len(own) else extra


def check_paired(points: pd.DataFrame) -> None:
    """Every point of a seed has the same sample count and replicate count (ValueError naming the odd ones)."""
    for seed, group in points.groupby("seed"):
        shapes = {(int(r.num_samples), len(r.replicates)) for r in group.itertuples()}
        if len(shapes) > 1:
            odd = "; ".join(f"{r.method}/{r.budget}/{r.steps}: N {r.num_samples}, {len(r.replicates)} replicates"
                            for r in group.itertuples())
            raise ValueError(f"seed {seed}: paired points must have equal N and replicates ({odd})")


# ----------------------------------------------------------------------------------------- fine-tune seed noise

NOISE_COLUMNS = ["method", "budget", "steps", "finetune_seed_std", "finetune_seeds", "cfg_scale",
                 "checkpoint_sha256", "sampler", "train_gmacs"]


def finetune_seed_noise(records: list[dict]) -> pd.DataFrame:
    """FID spread across fine-tune seeds (finetune.seed_noise): per (method, budget) repeated, the standard deviation
    over the study's own fine-tune ("1.00") and its repeats ("1.00s<seed>") at the guidance scale and the first
    sampling seed that have them all. Columns ``NOISE_COLUMNS``."""
    rows = []
    for r in records:
        multiple, seed = parse_ft(r.get("ft", "1.00"))
        if multiple != 1.0:
            continue
        rows.append({"method": r["method"], "budget": str(r["budget"]), "steps": int(r["steps"]),
                     "cfg": float(r["cfg_scale"]), "seed": int(r["seed"]), "repeat": seed is not None,
                     "fid": float(r["fid"]), "checkpoint_sha256": r.get("checkpoint_sha256"),
                     "sampler": r.get("params", {}).get("sampler"), "train_gmacs": r.get("train_gmacs")})
    table = pd.DataFrame(rows, columns=["method", "budget", "steps", "cfg", "seed", "repeat", "fid",
                                        "checkpoint_sha256", "sampler", "train_gmacs"])
    out = []
    for (method, budget, steps, cfg, _), group in table.groupby(["method", "budget", "steps", "cfg", "seed"]):
        if group["repeat"].any() and len(group) >= 2:
            own = group[~group["repeat"]]
            own = own.iloc[0] if len(own) else group.iloc[0]  # what the recorded spread applies to
            out.append({"method": method, "budget": budget, "steps": steps,
                        "finetune_seed_std": float(group["fid"].std(ddof=1)), "finetune_seeds": len(group),
                        "cfg_scale": cfg, "checkpoint_sha256": own["checkpoint_sha256"], "sampler": own["sampler"],
                        "train_gmacs": own["train_gmacs"]})
    frame = pd.DataFrame(out, columns=NOISE_COLUMNS)
    return frame.drop_duplicates(["method", "budget"])


# A fine-tune's own spread is used from this many seeds on; from fewer (one degree of freedom: a spread that can
# land near 0 by chance, and a t quantile of 12.7) the pooled spread of every measured fine-tune stands in.
MIN_OWN_SEEDS = 3


class SeedNoise:
    """The fine-tune seed spread a point's interval takes: measured for the fine-tune it samples (a shared
    fine-tune's at any budget; a per-budget method's at that budget, "full@B" sampling B's) from at least
    ``MIN_OWN_SEEDS`` seeds, else the pooled spread of every measured fine-tune (variances pooled by degrees of
    freedom), never 0 once anything is measured.
    ``lookup`` returns (std, degrees of freedom, source); (0, None, "none measured") only without any measurement.
    Measured in this run, or recorded by a long run (``recorded``: source "recorded")."""

    def __init__(self, table: pd.DataFrame | None, recorded: bool = False):
        self.table = table if table is not None else pd.DataFrame(columns=NOISE_COLUMNS)
        self.kind = "recorded" if recorded else "measured"
        df = self.table["finetune_seeds"].astype(int) - 1
        self.pooled_df = int(df.sum())
        self.pooled_std = (math.sqrt(float((df * self.table["finetune_seed_std"].astype(float) ** 2).sum())
                                     / self.pooled_df) if self.pooled_df > 0 else 0.0)

    def lookup(self, method: str, budget: str | None = None) -> tuple[float, int | None, str]:
        if FINETUNE_MODES.get(method) == "none":
            return 0.0, None, "no fine-tune"
        rows = self.table[self.table["method"] == method]
        if budget is not None and FINETUNE_MODES.get(method) == "per_budget":
            rows = rows[rows["budget"] == checkpoint_budget(budget)]
        own = int(rows.iloc[0]["finetune_seeds"]) if len(rows) else 0
        if own >= MIN_OWN_SEEDS:
            return float(rows.iloc[0]["finetune_seed_std"]), own - 1, self.kind
        if self.pooled_df > 0:
            note = f"; own: {own} seeds" if own else ""
            return self.pooled_std, self.pooled_df, f"pooled ({self.kind}{note})"
        return 0.0, None, "none measured"

    def combined(self, *parts: tuple[float, int | None, str]) -> tuple[float, int | None, str]:
        """Independent spreads added in quadrature, their degrees of freedom by Welch-Satterthwaite."""
        std = math.sqrt(sum(p[0] ** 2 for p in parts))
        if std == 0:
            return 0.0, None, parts[0][2]
        denominator = sum(p[0] ** 4 / p[1] for p in parts if p[0] > 0 and p[1])
        df = int(std ** 4 / denominator) if denominator > 0 else None
        return std, df, " + ".join(dict.fromkeys(p[2] for p in parts))


# ------------------------------------------------------------------------------------------- the static envelope


def envelope_nodes(ladder: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per guidance variant of a static ladder: (log GMACs sorted, point FIDs, replicates (B, nodes))."""
    out = []
    for _, variant in ladder.groupby("variant"):
        variant = variant.sort_values("gmacs")
        out.append((np.log(variant["gmacs"].to_numpy()), variant["fid"].to_numpy(),
                    np.stack(variant["replicates"].to_list(), axis=1)))
    return out


def envelope_at(nodes, log_gmacs: np.ndarray, replicates: bool) -> np.ndarray:
    """The lower envelope at each log-GMACs (point values (G,), or replicates (B, G)): each variant interpolated
    between its measured neighbours, the minimum over variants and over every node at no more compute; NaN outside
    the ladder's range."""
    log_gmacs = np.atleast_1d(np.asarray(log_gmacs, dtype=np.float64))
    low = min(x[0] for x, _, _ in nodes)
    high = max(x[-1] for x, _, _ in nodes)
    best = None
    for x, fid, reps in nodes:
        y = reps if replicates else fid[None]
        inside = (log_gmacs >= x[0] - 1e-12) & (log_gmacs <= x[-1] + 1e-12)
        interp = np.full((len(y), len(log_gmacs)), np.inf)
        if len(x) == 1:
            interp[:, inside] = y[:, :1]
        else:
            i = np.clip(np.searchsorted(x, log_gmacs, side="right") - 1, 0, len(x) - 2)
            w = np.clip((log_gmacs - x[i]) / (x[i + 1] - x[i]), 0, 1)
            values = y[:, i] * (1 - w) + y[:, i + 1] * w
            interp[:, inside] = values[:, inside]
        # every node at no more compute is also reachable
        running = np.minimum.accumulate(y, axis=1)
        reach = np.searchsorted(x, log_gmacs + 1e-12, side="right") - 1
        step = np.where(reach >= 0, running[:, np.clip(reach, 0, None)], np.inf)
        here = np.minimum(interp, step)
        best = here if best is None else np.minimum(best, here)
    best[:, (log_gmacs < low - 1e-12) | (log_gmacs > high + 1e-12)] = np.nan
    return best if replicates else best[0]


class LadderGrid:
    """A static ladder's lower envelope on a fine log-GMACs grid (the point values, or every replicate), computed once
    per ladder and read by every point's compute saved (2000 replicates x 4001 nodes: 64 MB a ladder)."""

    def __init__(self, nodes, grid: int = 4001):
        self.nodes = nodes
        self.high = max(x[-1] for x, _, _ in nodes)
        self.xs = np.linspace(min(x[0] for x, _, _ in nodes), self.high, grid)
        self._env: dict[bool, np.ndarray] = {}

    def envelope(self, replicates: bool) -> np.ndarray:
        """(1, grid) point values or (B, grid) replicates."""
        if replicates not in self._env:
            env = envelope_at(self.nodes, self.xs, replicates)
            self._env[replicates] = env if replicates else env[None]
        return self._env[replicates]


def _saved(ladder: LadderGrid, gmacs: float, fids: np.ndarray, replicates: bool):
    """Compute saved for each FID (the point's, or one per replicate): (saved, beyond, short) where beyond marks FIDs
    better than the whole ladder (saved is then the lower bound 1 - GMACs / the largest rung) and short FIDs worse
    than the cheapest rung (the upper bound 1 - GMACs / the smallest)."""
    xs, high = ladder.xs, ladder.high
    env = ladder.envelope(replicates)
    fids = np.atleast_1d(fids)
    reached = env <= fids[:, None]
    beyond = ~reached.any(axis=1)
    short = reached[:, 0]
    first = np.argmax(reached, axis=1)
    # refine between grid points: linear in log GMACs
    prev = np.clip(first - 1, 0, None)
    rows = np.arange(len(fids))
    y0, y1 = env[rows, prev], env[rows, first]
    t = np.where((first > 0) & (y0 != y1), (y0 - fids) / np.where(y0 != y1, y0 - y1, 1), 0.0)
    x = np.where(first > 0, xs[prev] + np.clip(t, 0, 1) * (xs[first] - xs[prev]), xs[first])
    x = np.where(beyond, high, x)
    return 1 - gmacs / np.exp(x), beyond, short


def full_static(group: pd.DataFrame, full_steps: int | None = None) -> tuple[pd.Series | None, float]:
    """The untouched DiT at the full step count (the most steps when ``full_steps`` is None) at its own guidance
    (the guided row; the unguided one where the selection chose CFG 1), and the compute of that DiT guided at every
    step, the 100 % of executed compute ratios (twice the unguided compute where only that was sampled: CFG doubles
    the static DiT's calls, and is counted so). (None, nan) when neither was sampled."""
    dit = group[(group["method"] == "dit") & (group["variant"] != INTERVAL)]
    if dit.empty:
        return None, math.nan
    rows = dit[dit["steps"] == (dit["steps"].max() if full_steps is None else full_steps)]
    if rows.empty:
        return None, math.nan
    guided = rows[rows["variant"] == GUIDED]
    if len(guided):
        return guided.iloc[0], float(guided.iloc[0]["gmacs"])
    return rows.iloc[0], 2 * float(rows.iloc[0]["gmacs"])


def compare_with_envelopes(points: pd.DataFrame, noise: pd.DataFrame | SeedNoise | None = None) -> pd.DataFrame:
    """Per dynamic-method point and seed: FID difference from its comparator's envelope at equal GMACs (column
    ``comparator``: ``comparator(method)``; with both sides' fine-tune seed noise, p-value of "below 0" and of "above
    0"), and the compute saved at matched FID against the dit-ft and the dit envelopes, each with its paired-bootstrap
    CI and the share of replicates beyond the ladder."""
    seed_noise = noise if isinstance(noise, SeedNoise) else SeedNoise(noise)
    rows = []
    for seed, group in points.groupby("seed"):
        ladders = {m: group[group["method"] == m] for m in STEP_BUDGET_METHODS}
        nodes = {m: envelope_nodes(ladder) for m, ladder in ladders.items() if len(ladder) >= 2}
        grids = {m: LadderGrid(n) for m, n in nodes.items()}
        _, full = full_static(group)
        for _, p in group[~group["method"].isin(STEP_BUDGET_METHODS)].iterrows():
            row = {"method": p["method"], "budget": p["budget"], "steps": p["steps"], "seed": seed,
                   "cfg_scale": p["cfg_scale"], "gmacs_per_image": p["gmacs"],
                   "nominal_compute_ratio": p["nominal_compute_ratio"],
                   "executed_compute_ratio": p["gmacs"] / full, "fid": p["fid"], "precision": p["precision"],
                   "recall": p["recall"], "finetune_source": p.get("finetune_source")}
            ladder = comparator(p["method"])
            row["comparator"] = ladder
            if ladder in nodes:
                x = math.log(p["gmacs"])
                envelope = float(envelope_at(nodes[ladder], x, False)[0])
                diffs = p["replicates"] - envelope_at(nodes[ladder], x, True)[:, 0]
                std, df, source = seed_noise.combined(seed_noise.lookup(p["method"], p["budget"]),
                                                      seed_noise.lookup(ladder))
                estimate = Estimate(p["fid"] - envelope, diffs, "percentile", std, df)
                row.update(envelope_fid=envelope, diff_vs_envelope=estimate.value, finetune_seed_std=std,
                           finetune_seed_df=df, finetune_seed_source=source)
                row["diff_ci_low"], row["diff_ci_high"] = estimate.interval()
                row["p_below_envelope"], row["p_above_envelope"] = estimate.p_below(0), estimate.p_above(0)
                row["beats_fewer_steps"] = answer(row["diff_ci_low"], row["diff_ci_high"])
            for name, method in (("dit_ft", "dit-ft"), ("dit", "dit")):
                if method not in nodes:
                    continue
                value, beyond_point, _ = _saved(grids[method], p["gmacs"], np.array([p["fid"]]), False)
                saved, beyond, short = _saved(grids[method], p["gmacs"], p["replicates"], True)
                low, high = Estimate(float(value[0]), saved).interval()
                share = float(beyond.mean())
                row[f"compute_saved_vs_{name}"] = float(value[0])
                row[f"compute_saved_vs_{name}_ci_low"], row[f"compute_saved_vs_{name}_ci_high"] = low, high
                row[f"compute_saved_vs_{name}_beyond_ladder"] = share
                row[f"compute_saved_vs_{name}_text"] = saved_text(float(value[0]), bool(beyond_point[0]), low, high,
                                                                  share, float(short.mean()))
            rows.append(row)
    return pd.DataFrame(rows)


DOMINANCE_COLUMNS = ["seed", "series", "budget", "steps", "variant", "gmacs_per_image", "fid", "other_series",
                     "other_budget", "other_steps", "other_variant", "other_gmacs_per_image", "other_fid",
                     "compute_ratio", "diff", "diff_ci_low", "diff_ci_high", "finetune_seed_std", "outcome"]
BEATS = "beats it with no more compute"
LOSES = "worse (the other spends at least as much)"


def dominance(points: pd.DataFrame, noise: pd.DataFrame | SeedNoise | None = None) -> pd.DataFrame:
    """Where each method beats each other: every pair of points of two series (a method; a static DiT ladder on
    another sampler, e.g. ``dit+dpmpp-2m``; the study sampler's static ladders are the envelopes of
    ``compare_with_envelopes`` and are left out) where the first uses no more GMACs than the second (within
    ``COMPUTE_MISMATCH``), with the paired FID difference first - second, its CI (both fine-tunes' seed spreads in
    quadrature) and the outcome: ``BEATS`` (CI below 0), ``LOSES`` (CI above 0) or "not significant"."""
    seed_noise = noise if isinstance(noise, SeedNoise) else SeedNoise(noise)
    rows = []
    for seed, group in points.groupby("seed"):
        # a point off the study's sampler is its own series "method+S", as on the pareto
        series = group.assign(series=[with_sampler(m, split_sampler(b)[1])
                                      for m, b in zip(group["method"], group["budget"])])
        series = series[~series["series"].isin(STEP_BUDGET_METHODS)]
        for _, a in series.iterrows():
            for _, b in series[(series["series"] != a["series"])
                               & (series["gmacs"] >= a["gmacs"] * (1 - COMPUTE_MISMATCH))].iterrows():
                std, df, _ = seed_noise.combined(seed_noise.lookup(a["method"], a["budget"]),
                                                 seed_noise.lookup(b["method"], b["budget"]))
                estimate = Estimate(a["fid"] - b["fid"], a["replicates"] - b["replicates"], "percentile", std, df)
                low, high = estimate.interval()
                rows.append({"seed": seed, "series": a["series"], "budget": a["budget"], "steps": a["steps"],
                             "variant": a["variant"], "gmacs_per_image": a["gmacs"], "fid": a["fid"],
                             "other_series": b["series"], "other_budget": b["budget"], "other_steps": b["steps"],
                             "other_variant": b["variant"], "other_gmacs_per_image": b["gmacs"],
                             "other_fid": b["fid"], "compute_ratio": a["gmacs"] / b["gmacs"], "diff": estimate.value,
                             "diff_ci_low": low, "diff_ci_high": high, "finetune_seed_std": std,
                             "outcome": BEATS if high < 0 else LOSES if low > 0 else "not significant"})
    return pd.DataFrame(rows, columns=DOMINANCE_COLUMNS)


def saved_text(value: float, beyond: bool, low: float, high: float, beyond_share: float, short_share: float) -> str:
    """A compute-saved estimate and CI as read: "≥" where it rests on replicates beyond the ladder, "≤" where on
    replicates worse than its cheapest rung."""
    tail = ALPHA
    lead = "≥ " if beyond else ""
    return (f"{lead}{value:+.0%} [{'≤ ' if short_share > tail else ''}{low:+.0%}, "
            f"{'≥ ' if beyond_share > tail else ''}{high:+.0%}]")


def answer(low: float, high: float) -> str:
    """Does the method beat the envelope? "yes" (CI below 0), "no" (CI above 0), else "not significant"."""
    if math.isnan(low) or math.isnan(high):
        return "not comparable"
    if high < 0:
        return "yes"
    if low > 0:
        return "no"
    return "not significant"


# ------------------------------------------------------------------------------------------------------ claims

# Published claim -> our budget label at the study's full step count (256-px claims only: 64 tokens).
TOY_ANALOGUES = {
    ("dydit", "lambda=0.7"): "0.70", ("dydit", "lambda=0.5"): "0.50", ("dydit", "lambda=0.6"): "0.60",
    ("dydit", "lambda=0.3"): "0.30",
    ("flexdit", "r in [0.44,0.61]"): "0.44-0.61", ("flexdit", "r in [0.61,0.86]"): "0.61-0.86",
    ("flexidit", "250/250 powerful steps"): "0.00", ("flexidit", "130/130 powerful steps"): "0.50",
    ("flexidit", "70/70 powerful steps"): "0.70", ("flexidit", "30/0 powerful steps"): "0.90-1.00",
}


def claim_tolerance(fid: float, own_fid: float, fid_precision: float, own_precision: float) -> float:
    """How far (relative) our estimate may sit from a claimed FID ratio and still reproduce it, from the paper's own
    precision: each reported FID's reading precision (half a unit of the last digit, or a plot's reading) plus
    FID-50k's seed noise on each (``FID50K_NOISE``, in quadrature), relative to the paper's DiT FID."""
    return (math.hypot(FID50K_NOISE, FID50K_NOISE) + fid_precision + own_precision) / own_fid


def claim_outcome(low: float, high: float, claimed: float, tolerance: float) -> str:
    """Four outcomes of a relative-FID claim: "reproduced" (the CI within claimed ± tolerance), "better than claimed"
    (the CI below claimed - tolerance: lower FID), "worse than claimed" (above claimed + tolerance), else
    "inconclusive"."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if high < claimed - tolerance:
        return "better than claimed"
    if low > claimed + tolerance:
        return "worse than claimed"
    if claimed - tolerance <= low and high <= claimed + tolerance:
        return "reproduced"
    return "inconclusive"


def outcome_p(estimate: Estimate, outcome: str, claimed: float, tolerance: float) -> float:
    """The one-sided p-value of an outcome's test: TOST for "reproduced" (the larger of its two), one side for
    "better" or "worse"; for "inconclusive" the smallest of the three."""
    lower, upper = claimed - tolerance, claimed + tolerance
    tests = {"reproduced": max(estimate.p_above(lower), estimate.p_below(upper)),
             "better than claimed": estimate.p_below(lower), "worse than claimed": estimate.p_above(upper)}
    return tests[outcome] if outcome in tests else min(tests.values())


def _precision(claim) -> float:
    """A claim's FID reading precision (claims.csv ``fid_precision``; half a unit of two decimals when absent)."""
    value = getattr(claim, "fid_precision", math.nan)
    return 0.005 if value is None or pd.isna(value) else float(value)


def budget_curve(plateau: pd.DataFrame | None, method: str, budget: str, steps: int, seed, base: pd.Series,
                 outcome_at_1x: str, claimed: float, tolerance: float, noise: tuple) -> str:
    """The claim's outcome at each training compute measured (the plateau fine-tunes at 0.5x, 2x, ... beside the
    study's 1x), e.g. "0.5x: worse than claimed; 1x: reproduced; 2x: reproduced"."""
    parts = {1.0: outcome_at_1x}
    if plateau is not None and len(plateau):
        rows = plateau[(plateau["method"] == method) & (plateau["budget"] == budget) & (plateau["steps"] == steps)
                       & (plateau["seed"] == seed)]
        recorded = rows["source"] == "recorded" if "source" in rows else pd.Series(False, index=rows.index)
        for r in rows.itertuples():
            estimate = Estimate(r.fid / base["fid"] - 1, r.replicates / base["replicates"] - 1, "percentile",
                                noise[0] / base["fid"], noise[1])
            parts[r.multiple] = claim_outcome(*estimate.interval(), claimed, tolerance)
        if len(parts) > 1 and recorded.any():
            return ("; ".join(f"{m:g}x: {o}" for m, o in sorted(parts.items()))
                    + " (the other multiples: the recorded plateau fine-tunes)")
    if len(parts) == 1:
        return f"1x: {outcome_at_1x} (no plateau fine-tunes at this budget: config/cpu-full.yaml runs them)"
    return "; ".join(f"{m:g}x: {o}" for m, o in sorted(parts.items()))


def claims_ledger(points: pd.DataFrame, comparisons: pd.DataFrame, claims: pd.DataFrame,
                  full_steps: int, noise: pd.DataFrame | SeedNoise | None = None,
                  plateau: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per published claim with a toy analogue in this study, plus one "beats fewer steps" row per method,
    per seed. Columns: method, claim, toy_analogue, estimate, ci_low, ci_high, tolerance, verdict, p_value,
    p_holm, verdict_holm, fid, precision, recall, comparator_fid, comparator_precision, comparator_recall,
    executed_compute_ratio, claimed_compute_ratio, compute_mismatch, verdict_by_training, basis, seed.
    ``verdict_holm`` keeps a verdict only where its Holm-adjusted p-value (over the seed's rows) is below ``ALPHA``;
    ``verdict_by_training`` gives a claim's outcome at every training compute the ``plateau`` points measured."""
    seed_noise = noise if isinstance(noise, SeedNoise) else SeedNoise(noise)
    rows = []
    for seed, group in points.groupby("seed"):
        seed_rows = []
        base, full_gmacs = full_static(group, full_steps)
        if base is not None:
            own = claims[claims["method"] == "dit"].set_index(["model", "resolution"])
            for c in claims[claims["method"] != "dit"].itertuples():
                budget = TOY_ANALOGUES.get((c.method, c.setting))
                if int(c.resolution) != 256 or budget is None or (c.model, c.resolution) not in own.index:
                    continue
                match = group[(group["method"] == c.method) & (group["budget"] == budget)
                              & (group["steps"] == full_steps)]
                if match.empty:
                    continue
                p = match.iloc[0]
                own_row = own.loc[(c.model, c.resolution)]
                own_fid = float(own_row["fid"])
                claimed = float(c.fid) / own_fid - 1
                tolerance = claim_tolerance(float(c.fid), own_fid, _precision(c), _precision(own_row))
                std, df, source = seed_noise.lookup(c.method, budget)
                # the untouched DiT has no fine-tune: only the method's fine-tune spread widens the interval
                estimate = Estimate(p["fid"] / base["fid"] - 1, p["replicates"] / base["replicates"] - 1,
                                    "percentile", std / base["fid"], df)
                low, high = estimate.interval()
                outcome = claim_outcome(low, high, claimed, tolerance)
                executed = p["gmacs"] / full_gmacs
                seed_rows.append({
                    "method": c.method, "seed": seed,
                    "claim": f"{c.setting} ({c.model} {c.resolution}px): FID {float(c.fid):.2f} vs DiT "
                             f"{own_fid:.2f} ({claimed:+.1%}) at {float(c.compute_ratio):.0%} compute",
                    "toy_analogue": f"{c.method} {budget} at {full_steps} steps: relative FID change vs the untouched "
                                    f"DiT at {full_steps} steps ({executed:.0%} executed compute)",
                    "estimate": estimate.value, "ci_low": low, "ci_high": high, "tolerance": tolerance,
                    "verdict": outcome, "p_value": outcome_p(estimate, outcome, claimed, tolerance),
                    "fid": p["fid"], "precision": p["precision"], "recall": p["recall"],
                    "comparator_fid": base["fid"], "comparator_precision": base["precision"],
                    "comparator_recall": base["recall"],
                    "executed_compute_ratio": executed, "claimed_compute_ratio": float(c.compute_ratio),
                    "compute_mismatch": abs(executed - float(c.compute_ratio)) > COMPUTE_MISMATCH,
                    "finetune_seed_std": std, "finetune_seed_source": source,
                    "verdict_by_training": budget_curve(plateau, c.method, budget, full_steps, seed, base, outcome,
                                                        claimed, tolerance, (std, df)),
                    "basis": f"{c.method}/budget~{budget}/steps~{full_steps} vs dit/budget~{full_steps} at CFG "
                             f"{base['cfg_scale']:g}, "
                             f"seed {seed}; claimed {claimed:+.3f} ± {tolerance:.3f} (the paper's FID precision "
                             f"{_precision(c):g} and FID-50k noise {FID50K_NOISE:g}); seed noise {source}"
                             + (f"; {AUTHORS_NOTE}" if p.get("finetune_source") == OFFICIAL else ""),
                })
        seed_rows += _beats_rows(comparisons, group, seed)
        if seed_rows:
            with_holm(seed_rows)
            regime = regime_row(group, full_steps, seed)
            for r in seed_rows:
                r["regime"] = regime["regime"]
            rows += seed_rows + [regime]
    columns = ["method", "claim", "toy_analogue", "estimate", "ci_low", "ci_high", "tolerance", "verdict",
               "p_value", "p_holm", "verdict_holm", "fid", "precision", "recall", "comparator_fid",
               "comparator_precision", "comparator_recall", "executed_compute_ratio", "claimed_compute_ratio",
               "compute_mismatch", "finetune_seed_std", "finetune_seed_source", "verdict_by_training", "regime", "basis",
               "seed"]
    return pd.DataFrame(rows, columns=columns)


def with_holm(rows: list[dict]) -> list[dict]:
    """A seed's rows with ``p_holm`` (Holm over their p-values) and ``verdict_holm``: the verdict where its adjusted
    p-value is below ``ALPHA``, else inconclusive."""
    for r, q in zip(rows, holm([r["p_value"] for r in rows])):
        r["p_holm"] = q
        r["verdict_holm"] = r["verdict"] if (q < ALPHA or r["verdict"] == "inconclusive") else "inconclusive"
    return rows


def regime_row(group: pd.DataFrame, full_steps: int, seed) -> dict:
    """The guidance regime figure (not a claim: outside the Holm family): the untouched DiT's unguided FID over its
    guided FID at the full step count, with its paired CI, against ``REGIME_TARGET``. Its ``regime`` text is
    written beside every verdict of the seed: the limit a toy verdict carries when guidance barely matters."""
    base = group[(group["method"] == "dit") & (group["steps"] == full_steps)
                 & (group["variant"] != INTERVAL)].set_index("variant")
    row = {"method": "dit", "seed": seed, "claim": REGIME_CLAIM, "tolerance": 0.0,
           "toy_analogue": f"dit at {full_steps} steps: unguided (CFG 1) over guided at its scale",
           "basis": f"target >= {REGIME_TARGET:g}x (ImageNet DiT-XL/2: 9.62 / 2.27 = {PAPER_REGIME:.1f}x)"}
    if UNGUIDED not in base.index:
        return {**row, "verdict": "inconclusive", "verdict_holm": "not tested (regime figure)",
                "regime": "guidance regime unknown: the unguided base was not sampled (methods.dit.cfg_sweep: [1.0])"}
    if GUIDED not in base.index:  # the guidance selection chose CFG 1 at the full step count
        unguided = base.loc[UNGUIDED]
        return {**row, "estimate": 1.0, "ci_low": math.nan, "ci_high": math.nan, "fid": unguided["fid"],
                "precision": unguided["precision"], "recall": unguided["recall"],
                "verdict": "worse than claimed", "verdict_holm": "not tested (regime figure)",
                "regime": f"guidance regime 1.00x at {full_steps} steps: the held-out selection chose CFG 1, no "
                          f"guided scale beat unguided (FID {unguided['fid']:.2f}; target >= {REGIME_TARGET:g}x, "
                          f"ImageNet {PAPER_REGIME:.1f}x): guidance does not help this toy at full steps, so "
                          "verdicts on guidance-dependent effects may not transfer"}
    unguided, guided = base.loc[UNGUIDED], base.loc[GUIDED]
    estimate = Estimate(unguided["fid"] / guided["fid"], unguided["replicates"] / guided["replicates"])
    low, high = estimate.interval()
    met = low >= REGIME_TARGET
    text = (f"guidance regime {estimate.value:.2f}x [{low:.2f}, {high:.2f}] at {full_steps} steps (unguided FID "
            f"{unguided['fid']:.2f} vs {guided['fid']:.2f} at CFG {guided['cfg_scale']:g}; target >= "
            f"{REGIME_TARGET:g}x, ImageNet {PAPER_REGIME:.1f}x)")
    if not met:
        text += ": guidance barely matters in this toy, so verdicts on guidance-dependent effects may not transfer"
    return {**row, "estimate": estimate.value, "ci_low": low, "ci_high": high, "fid": unguided["fid"],
            "precision": unguided["precision"], "recall": unguided["recall"], "comparator_fid": guided["fid"],
            "comparator_precision": guided["precision"], "comparator_recall": guided["recall"],
            "executed_compute_ratio": unguided["gmacs"] / guided["gmacs"],
            "verdict": "reproduced" if met else ("worse than claimed" if high < REGIME_TARGET else "inconclusive"),
            "verdict_holm": "not tested (regime figure)", "regime": text}


def _beats_rows(comparisons: pd.DataFrame, group: pd.DataFrame, seed) -> list[dict]:
    """The "beats fewer steps" row of each method: reproduced when some point's CI lies below its comparator's
    envelope (``comparator``: dit-ft, or dit for a training-free method; p: the smallest point's, Bonferroni-multiplied
    by the points tried), worse than claimed when every point's lies above (p: the largest), else inconclusive."""
    rows = []
    if comparisons.empty or "seed" not in comparisons:
        return rows
    scope = comparisons.reindex(columns=[*comparisons.columns.difference(ENVELOPE_COLUMNS), *ENVELOPE_COLUMNS])
    scope = scope[scope["seed"] == seed]
    for method, sub in scope.groupby("method"):
        name = comparator(method)
        ladder = group[group["method"] == name]
        # the question is about saving compute: full-compute (parity) points do not answer it
        sub = sub[~(sub["nominal_compute_ratio"] >= 1 - 1e-9)].dropna(subset=["diff_ci_high"])
        if sub.empty:  # no comparator ladder around any of its points: say so rather than drop the question
            rows.append({"method": method, "seed": seed, "claim": BEATS_FEWER_STEPS, "verdict": "inconclusive",
                         "p_value": math.nan,
                         "toy_analogue": f"FID difference from the {name} envelope (log-GMACs interpolation)",
                         "basis": f"no {name} step ladder (>= 2 step counts) spans its GMACs (seed {seed})"})
            continue
        best = sub.loc[sub["diff_vs_envelope"].idxmin()]
        authors = "finetune_source" in sub and bool((sub["finetune_source"] == OFFICIAL).any())
        if (sub["diff_ci_high"] < 0).any():
            verdict, p = "reproduced", min(1.0, len(sub) * float(sub["p_below_envelope"].min()))
        elif (sub["diff_ci_low"] > 0).all():
            verdict, p = "worse than claimed", float(sub["p_above_envelope"].max())
        else:
            verdict, p = "inconclusive", min(1.0, len(sub) * float(sub["p_below_envelope"].min()))
        near = ladder.iloc[(ladder["gmacs"] - best["gmacs_per_image"]).abs().argsort()[:1]] if len(ladder) else None
        rows.append({
            "method": method, "seed": seed, "claim": BEATS_FEWER_STEPS,
            "toy_analogue": f"FID difference from the {name} envelope (lower envelope of its unguided, guided and "
                            "guidance-interval ladders, log-GMACs chords between measured neighbours), best point",
            "estimate": best["diff_vs_envelope"], "ci_low": best["diff_ci_low"], "ci_high": best["diff_ci_high"],
            "tolerance": 0.0, "verdict": verdict, "p_value": p,
            "fid": best["fid"], "precision": best.get("precision"), "recall": best.get("recall"),
            "comparator_fid": best.get("envelope_fid"),
            "comparator_precision": None if near is None or near.empty else float(near["precision"].iloc[0]),
            "comparator_recall": None if near is None or near.empty else float(near["recall"].iloc[0]),
            "executed_compute_ratio": best.get("executed_compute_ratio"),
            "finetune_seed_std": best.get("finetune_seed_std"), "finetune_seed_source": best.get("finetune_seed_source"),
            "basis": "; ".join(f"{r.budget}@{r.steps}: {r.diff_vs_envelope:+.2f} [{r.diff_ci_low:+.2f}, "
                               f"{r.diff_ci_high:+.2f}]" for r in sub.itertuples()) + f" (seed {seed}; p over "
                     f"{len(sub)} points, Bonferroni-multiplied; comparator precision/recall: the {name} rung "
                     f"nearest in GMACs)" + (f"; {AUTHORS_NOTE}" if authors else ""),
        })
    return rows


# ------------------------------------------------------------------------------------------------- video claims

VIDEO_CLAIM_COLUMNS = ("method", "claim", "compute_ratio", "quality_change")


def video_claims_ledger(points: pd.DataFrame, comparisons: pd.DataFrame, claims: pd.DataFrame, full_steps: int,
                        floor: float, metric: str = "FVD-toy") -> pd.DataFrame:
    """The video claims' toy analogues, per seed: a claim "``quality_change`` (0: no significant drop) at
    ``compute_ratio`` of the base's compute" against the method's budget whose executed compute ratio is nearest the
    claimed one, as FVD(point) / FVD(untouched Latte at full steps) - 1 with its paired-bootstrap CI; tolerance: the
    metric's real-vs-real floor relative to the base's FVD (two real draws differ by that much). Plus one "beats
    fewer steps" row per method (FVD difference from the dit-ft envelope). ``points`` hold FVD in ``fid``."""
    rows = []
    for seed, group in points.groupby("seed"):
        seed_rows = []
        base, full_gmacs = full_static(group, full_steps)
        if base is not None:
            tolerance = floor / float(base["fid"])
            for c in claims.itertuples():
                candidates = group[(group["method"] == c.method) & (group["steps"] == full_steps)]
                if candidates.empty:
                    continue
                executed = candidates["gmacs"] / full_gmacs
                p = candidates.loc[(executed - float(c.compute_ratio)).abs().idxmin()]
                ratio = p["gmacs"] / full_gmacs
                estimate = Estimate(p["fid"] / base["fid"] - 1, p["replicates"] / base["replicates"] - 1,
                                    "percentile")
                low, high = estimate.interval()
                claimed = float(c.quality_change)
                outcome = claim_outcome(low, high, claimed, tolerance)
                seed_rows.append({
                    "method": c.method, "seed": seed, "claim": f"{c.claim} ({c.model}; {c.datasets})",
                    "toy_analogue": f"{c.method} {p['budget']} at {full_steps} steps: relative {metric} change vs the "
                                    f"untouched Latte at {full_steps} steps ({ratio:.0%} executed compute)",
                    "estimate": estimate.value, "ci_low": low, "ci_high": high, "tolerance": tolerance,
                    "verdict": outcome, "p_value": outcome_p(estimate, outcome, claimed, tolerance),
                    "fid": p["fid"], "comparator_fid": base["fid"], "executed_compute_ratio": ratio,
                    "claimed_compute_ratio": float(c.compute_ratio),
                    "compute_mismatch": abs(ratio - float(c.compute_ratio)) > COMPUTE_MISMATCH,
                    "basis": f"{c.method}/budget~{p['budget']} vs dit/budget~{full_steps} at CFG "
                             f"{base['cfg_scale']:g}, seed {seed}; claimed {claimed:+.3f} ± {tolerance:.3f} (the "
                             f"{metric} floor {floor:.2f} / the base's {float(base['fid']):.2f}); no fine-tune seed "
                             "noise measured on video",
                })
        seed_rows += _beats_rows(comparisons, group, seed)
        rows += with_holm(seed_rows)
    columns = ["method", "claim", "toy_analogue", "estimate", "ci_low", "ci_high", "tolerance", "verdict", "p_value",
               "p_holm", "verdict_holm", "fid", "comparator_fid", "executed_compute_ratio", "claimed_compute_ratio",
               "compute_mismatch", "basis", "seed"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["toy_analogue"] = frame["toy_analogue"].str.replace("FID difference", f"{metric} difference")
    return frame.rename(columns={"fid": "fvd", "comparator_fid": "comparator_fvd"})
