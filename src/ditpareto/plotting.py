"""Figures: pareto frontiers of FID vs compute. Method display names live here and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

METHOD_LABELS = {
    "dit": "DiT (fewer steps)",
    "dit-ft": "DiT fine-tuned (fewer steps)",
    "flexidit": "FlexiDiT",
    "dydit": "DyDiT",
    "flexdit": "FlexDiT",
}
METHOD_ORDER = list(METHOD_LABELS)


def method_palette() -> dict[str, tuple]:
    colors = sns.color_palette("colorblind", len(METHOD_ORDER))
    return {label: colors[i] for i, label in enumerate(METHOD_LABELS.values())}


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def pareto_frontier(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated by any other (lower-or-equal x with lower y): the frontier, sorted by x."""
    ordered = points.sort_values([x, y])
    best, keep = float("inf"), []
    for index, row in ordered.iterrows():
        if row[y] < best:
            best = row[y]
            keep.append(index)
    return ordered.loc[keep]


def summarize_seeds(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean and std over seeds per (method, budget, cfg_scale)."""
    keys = [k for k in ("method", "budget", "cfg_scale") if k in table]
    grouped = table.groupby(keys, as_index=False)
    out = grouped.agg(**{x: (x, "mean"), y: (y, "mean"), f"{y}_std": (y, "std"), "seeds": ("seed", "count")})
    out[f"{y}_std"] = out[f"{y}_std"].fillna(0.0)
    out["label"] = out["method"].map(lambda m: METHOD_LABELS.get(m, m))
    return out


def cfg_curves(points: pd.DataFrame, fixed_cfg: float | None, y: str = "fid") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fixed, best): the points at guidance ``fixed_cfg`` (all points when None or without a cfg column), and per
    (method, budget) the scale with the lowest mean ``y``, for methods sampled at more than one scale (FlexiDiT's
    best-CFG-per-budget protocol; the scale is chosen on the evaluation metric itself, as the paper does)."""
    if "cfg_scale" not in points:
        return points, points.iloc[0:0]
    fixed = points if fixed_cfg is None else points[(points["cfg_scale"] - fixed_cfg).abs() < 1e-9]
    swept = points.groupby("method")["cfg_scale"].transform("nunique") > 1
    ranked = points[swept].sort_values([y, "cfg_scale"], kind="stable")
    best = ranked.groupby(["method", "budget"], as_index=False).head(1)
    return fixed, best


def plot_pareto(
    table: pd.DataFrame,
    out_paths: list[str | os.PathLike],
    x: str = "gmacs_per_image",
    y: str = "fid",
    floor: float | None = None,
    title: str | None = None,
    x_label: str = "GMACs per image (whole trajectory, CFG included)",
    fixed_cfg: float | None = None,
) -> None:
    """Per-method points (mean ± std over seeds) at the fixed guidance scale with each method's pareto frontier as
    a solid line; methods sampled at several scales add their best-CFG-per-budget frontier, dashed."""
    set_style()
    points, best = cfg_curves(summarize_seeds(table, x, y), fixed_cfg, y)
    palette = method_palette()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in [m for m in METHOD_ORDER if m in set(points["method"])] + sorted(
        set(points["method"]) - set(METHOD_ORDER)
    ):
        sub = points[points["method"] == method]
        label = sub["label"].iloc[0]
        color = palette.get(label)
        ax.errorbar(sub[x], sub[y], yerr=sub[f"{y}_std"], fmt="o", color=color, alpha=0.45, capsize=2)
        front = pareto_frontier(sub, x, y)
        cfg = f" (CFG {fixed_cfg:g})" if fixed_cfg is not None and not best.empty else ""
        ax.plot(front[x], front[y], "-o", color=color, label=label + cfg)
        if method in set(best["method"]):
            front = pareto_frontier(best[best["method"] == method], x, y)
            ax.plot(front[x], front[y], "--s", color=color, markerfacecolor="none", label=f"{label} (best CFG)")
    if floor is not None:
        ax.axhline(floor, color="0.4", linestyle="--", linewidth=1, label="real vs real (floor)")
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y.upper() if y == "fid" else y)
    if title:
        ax.set_title(title)
    ax.legend(frameon=True, fontsize="small")
    fig.tight_layout()
    for path in out_paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, metadata={"CreationDate": None} if str(path).endswith(".pdf") else None)
    plt.close(fig)
