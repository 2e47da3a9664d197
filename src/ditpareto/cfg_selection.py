"""Guidance scale chosen on a held-out seed (issue "verdicts with confidence", item 3).

Every (method, budget, steps, ft) is sampled at each candidate scale on the selection seed (``study.selection_points``)
and on the evaluation seeds (``study.method_cfgs``). The selected scale is the one of lowest FID on the selection
seed; the evaluation FID at that scale is unbiased by the choice. Picking the scale on the evaluation FID itself is
optimistic: ``optimism`` is how much lower that looks.
"""

from __future__ import annotations

import pandas as pd

KEYS = ["method", "budget", "steps", "ft"]


def _frame(records: list[dict]) -> pd.DataFrame:
    rows = [{"method": r["method"], "budget": str(r["budget"]), "steps": int(r["steps"]), "ft": str(r["ft"]),
             "cfg": float(r["cfg_scale"]), "seed": int(r["seed"]), "fid": float(r["fid"]),
             "num_samples": int(r["params"]["num_samples"])} for r in records]
    return pd.DataFrame(rows, columns=[*KEYS, "cfg", "seed", "fid", "num_samples"])


def select_scales(selection: list[dict], evaluation: list[dict]) -> pd.DataFrame:
    """One row per (method, budget, steps, ft): the selected scale, its selection-seed FID, its evaluation FID (mean
    over evaluation seeds), the bias between them, and the scale and FID a choice on the evaluation FID would give.
    Raises ValueError when a selection seed equals an evaluation seed or a candidate lacks its evaluation point."""
    chosen, scored = _frame(selection), _frame(evaluation)
    shared = set(chosen["seed"]) & set(scored["seed"])
    if shared:
        raise ValueError(f"selection seed(s) {sorted(shared)} are also evaluation seeds")
    scored = scored.groupby([*KEYS, "cfg"], as_index=False).agg(fid=("fid", "mean"), seeds=("seed", "nunique"))
    rows = []
    for key, group in chosen.groupby(KEYS, sort=True):
        best = group.loc[group["fid"].idxmin()]
        candidates = scored.merge(group[[*KEYS, "cfg"]], on=[*KEYS, "cfg"])
        if len(candidates) != len(group):
            raise ValueError(f"{'/'.join(map(str, key))}: evaluation points missing for scales "
                             f"{sorted(set(group['cfg']) - set(candidates['cfg']))}")
        at_selected = candidates[candidates["cfg"] == best["cfg"]].iloc[0]
        oracle = candidates.loc[candidates["fid"].idxmin()]
        rows.append({**dict(zip(KEYS, key)), "cfg_selected": best["cfg"],
                     "fid_selection": best["fid"], "selection_samples": int(best["num_samples"]),
                     "selection_seed": int(best["seed"]), "fid_evaluation": at_selected["fid"],
                     "evaluation_seeds": int(at_selected["seeds"]),
                     "selection_bias": best["fid"] - at_selected["fid"],
                     "cfg_best_on_evaluation": oracle["cfg"], "fid_best_on_evaluation": oracle["fid"],
                     "optimism": at_selected["fid"] - oracle["fid"],
                     "scales": " ".join(f"{v:g}" for v in sorted(group["cfg"]))})
    return pd.DataFrame(rows)


def mark_selected(table: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """``cfg_selected``: whether a metrics-table row is at its (method, budget, steps, ft)'s selected scale."""
    table = table.copy()
    chosen = {(r.method, str(r.budget), int(r.steps), str(r.ft)): float(r.cfg_selected)
              for r in selection.itertuples()}
    table["cfg_selected"] = [
        abs(chosen.get((r.method, str(r.budget), int(r.steps), str(r.ft)), float("nan")) - float(r.cfg_scale))
        < 1e-9 for r in table.itertuples()]
    return table
