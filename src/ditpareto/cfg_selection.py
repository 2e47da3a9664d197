"""Guidance scale chosen on a held-out seed (issue "verdicts with confidence", item 3).

Every (method, budget, steps, ft) is sampled at each candidate scale on the selection seed (``study.selection_points``).
The selected scale is the one of lowest FID there (``choose_scales``); the evaluation FID at that scale is unbiased by
the choice (``score_choices``; a recorded table may hold choices for points a study does not sample: left out).
Picking the scale on the evaluation FID itself is optimistic: ``optimism`` is how much
lower that looks (known only where the evaluation seeds were sampled at every candidate, as in the long config).
The selection's own optimism (the winner's curse of a minimum over candidates) is its selection FID minus the FID of
the first ``selection_samples`` evaluation samples at the selected scale: equal N, so FID's small-sample bias cancels
(``selection_optimism``; the evaluation records' ``fid_head``, metrics.head_samples).

A study too short to run the selection samples the scales a long run recorded (``sampling.cfg_recorded``): the
``choose_scales`` table of that run, shipped sha256-pinned and read back by ``read_choices``.
"""

from __future__ import annotations

import math

import pandas as pd

from ditpareto.study import DEPENDENCY_COLUMNS, TRAIN_GMACS_TOLERANCE

KEYS = ["method", "budget", "steps", "ft"]
CHOICE_COLUMNS = [*KEYS, "cfg_selected", "fid_selection", "selection_samples", "selection_seed", "scales",
                  "cfg_at_edge", *DEPENDENCY_COLUMNS]


def _frame(records: list[dict]) -> pd.DataFrame:
    rows = [{"method": r["method"], "budget": str(r["budget"]), "steps": int(r["steps"]), "ft": str(r["ft"]),
             "cfg": float(r["cfg_scale"]), "seed": int(r["seed"]), "fid": float(r["fid"]),
             "num_samples": int(r["params"]["num_samples"]), "checkpoint_sha256": r.get("checkpoint_sha256"),
             "sampler": r["params"].get("sampler"), "train_gmacs": r.get("train_gmacs"),
             "head_samples": r.get("fid_head", {}).get("samples", math.nan),
             "fid_head": r.get("fid_head", {}).get("fid", math.nan)} for r in records]
    return pd.DataFrame(rows, columns=[*KEYS, "cfg", "seed", "fid", "num_samples", *DEPENDENCY_COLUMNS,
                                       "head_samples", "fid_head"])


def choose_scales(selection: list[dict]) -> pd.DataFrame:
    """One row per (method, budget, steps, ft): the candidate of lowest selection-seed FID (``CHOICE_COLUMNS``),
    whether it is the smallest or largest candidate (``cfg_at_edge``: the optimum may lie outside the candidates)
    and what the choice depends on (the sampled checkpoint's sha256, the sampler, the training GMACs)."""
    chosen = _frame(selection)
    rows = []
    for key, group in chosen.groupby(KEYS, sort=True):
        best = group.loc[group["fid"].idxmin()]
        rows.append({**dict(zip(KEYS, key)), "cfg_selected": best["cfg"], "fid_selection": best["fid"],
                     "selection_samples": int(best["num_samples"]), "selection_seed": int(best["seed"]),
                     "scales": " ".join(f"{v:g}" for v in sorted(group["cfg"])),
                     "cfg_at_edge": bool(best["cfg"] in (group["cfg"].min(), group["cfg"].max())),
                     **{c: best[c] for c in DEPENDENCY_COLUMNS}})
    return pd.DataFrame(rows, columns=CHOICE_COLUMNS)


def extend_choices(earlier: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """An earlier selection extended by new candidates on the same selection seed, sample count, checkpoint, sampler
    and training compute: per key the lower selection FID of the two choices (sampling is deterministic, so this is
    the choice over the union of candidates), the union of the candidates and the edge flag over it. Raises
    ValueError when a shared key was selected under other conditions or shares a candidate."""
    columns = ["selection_seed", "selection_samples", "checkpoint_sha256", "sampler"]
    rows = {tuple(r[k] for k in KEYS): r for r in earlier.to_dict("records")}
    for r in new.to_dict("records"):
        key = tuple(r[k] for k in KEYS)
        old = rows.get(key)
        if old is None:
            rows[key] = r
            continue
        differs = [c for c in columns if str(old[c]) != str(r[c])]
        gmacs = [float(v or 0) for v in (old["train_gmacs"], r["train_gmacs"])]
        if differs or abs(gmacs[0] - gmacs[1]) > TRAIN_GMACS_TOLERANCE * max(gmacs):
            raise ValueError(f"{'/'.join(map(str, key))}: the earlier selection differs in {differs or ['train_gmacs']}"
                             ": not the same selection, select again over every candidate")
        old_scales, new_scales = ({float(v) for v in str(t["scales"]).split()} for t in (old, r))
        if old_scales & new_scales:
            raise ValueError(f"{'/'.join(map(str, key))}: candidates {sorted(old_scales & new_scales)} were selected "
                             "on before; extend with new candidates only")
        best = r if float(r["fid_selection"]) < float(old["fid_selection"]) else old
        scales = sorted(old_scales | new_scales)
        rows[key] = {**best, "scales": " ".join(f"{v:g}" for v in scales),
                     "cfg_at_edge": float(best["cfg_selected"]) in (scales[0], scales[-1])}
    table = pd.DataFrame(list(rows.values()), columns=CHOICE_COLUMNS)
    return table.sort_values(KEYS, kind="stable").reset_index(drop=True)


def score_choices(choices: pd.DataFrame, evaluation: list[dict]) -> pd.DataFrame:
    """The choices with their evaluation FID (mean over evaluation seeds at the selected scale), the selection bias
    (selection-seed FID minus evaluation FID) and, where every candidate was evaluated, the scale and FID a choice on
    the evaluation FID would give and its optimism; choices for points without evaluation records are left out.
    Raises ValueError when a selection seed is an evaluation seed or a sampled point lacks its selected scale."""
    scored = _frame(evaluation)
    shared = set(choices["selection_seed"].astype(int)) & set(scored["seed"])
    if shared:
        raise ValueError(f"selection seed(s) {sorted(shared)} are also evaluation seeds")
    scored = scored.groupby([*KEYS, "cfg"], as_index=False).agg(
        fid=("fid", "mean"), seeds=("seed", "nunique"), head_samples=("head_samples", "min"),
        fid_head=("fid_head", "mean"))
    rows = []
    for choice in choices.itertuples(index=False):
        key = tuple(getattr(choice, k) for k in KEYS)
        candidates = scored[(scored["method"] == choice.method) & (scored["budget"] == str(choice.budget))
                            & (scored["steps"] == int(choice.steps)) & (scored["ft"] == str(choice.ft))]
        if candidates.empty:  # a recorded choice for a point this study does not sample
            continue
        at_selected = candidates[(candidates["cfg"] - float(choice.cfg_selected)).abs() < 1e-9]
        if at_selected.empty:
            raise ValueError(f"{'/'.join(map(str, key))}: no evaluation point at the selected scale "
                             f"{float(choice.cfg_selected):g}")
        at_selected = at_selected.iloc[0]
        wanted = {float(s) for s in str(choice.scales).split()}
        every = wanted <= {float(c) for c in candidates["cfg"]}
        pool = candidates[candidates["cfg"].isin(wanted)]
        oracle = pool.loc[pool["fid"].idxmin()] if every else None
        rows.append({**choice._asdict(), "fid_evaluation": at_selected["fid"],
                     "evaluation_seeds": int(at_selected["seeds"]),
                     "selection_bias": float(choice.fid_selection) - at_selected["fid"],
                     **_equal_n_optimism(choice, at_selected),
                     "cfg_best_on_evaluation": oracle["cfg"] if every else math.nan,
                     "fid_best_on_evaluation": oracle["fid"] if every else math.nan,
                     "optimism": at_selected["fid"] - oracle["fid"] if every else math.nan})
    return pd.DataFrame(rows)


def _equal_n_optimism(choice, at_selected) -> dict:
    """The selection FID minus the evaluation FID of the first ``selection_samples`` samples (mean over evaluation
    seeds) at the selected scale; NaN where the evaluation records hold no FID at that N."""
    same_n = at_selected["head_samples"] == int(choice.selection_samples)
    head = float(at_selected["fid_head"]) if same_n else math.nan
    return {"fid_evaluation_head": head, "selection_optimism": float(choice.fid_selection) - head}


def read_choices(path: str) -> pd.DataFrame:
    """A recorded ``choose_scales`` table, checked (``study.read_recorded_scales``: columns, one row per key, finite
    scales >= 1; and every ``CHOICE_COLUMNS``). Raises ValueError naming what is wrong."""
    from ditpareto.study import read_recorded_scales

    read_recorded_scales(path)
    table = pd.read_csv(path, dtype={"budget": str, "ft": str, "scales": str})
    missing = sorted(set(CHOICE_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"recorded guidance scales {path} lack columns {missing}")
    return table[CHOICE_COLUMNS]


def mark_selected(table: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """``cfg_selected``: whether a metrics-table row is at its (method, budget, steps, ft)'s selected scale."""
    table = table.copy()
    chosen = {(r.method, str(r.budget), int(r.steps), str(r.ft)): float(r.cfg_selected)
              for r in selection.itertuples()}
    table["cfg_selected"] = [
        abs(chosen.get((r.method, str(r.budget), int(r.steps), str(r.ft)), float("nan")) - float(r.cfg_scale))
        < 1e-9 for r in table.itertuples()]
    return table
