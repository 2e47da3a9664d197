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
    """Mean and std over seeds per (method, budget)."""
    grouped = table.groupby(["method", "budget"], as_index=False)
    out = grouped.agg(**{x: (x, "mean"), y: (y, "mean"), f"{y}_std": (y, "std"), "seeds": ("seed", "count")})
    out[f"{y}_std"] = out[f"{y}_std"].fillna(0.0)
    out["label"] = out["method"].map(lambda m: METHOD_LABELS.get(m, m))
    return out


def plot_pareto(
    table: pd.DataFrame,
    out_paths: list[str | os.PathLike],
    x: str = "gmacs_per_image",
    y: str = "fid",
    floor: float | None = None,
    title: str | None = None,
    x_label: str = "GMACs per image (whole trajectory, CFG included)",
) -> None:
    """Per-method points (mean ± std over seeds) with each method's pareto frontier as a line."""
    set_style()
    points = summarize_seeds(table, x, y)
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
        ax.plot(front[x], front[y], "-o", color=color, label=label)
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
