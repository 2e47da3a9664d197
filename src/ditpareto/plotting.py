"""Figures: pareto frontiers of FID vs compute. Method display names live here and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ditpareto.study import (  # noqa: E402
    OFFICIAL, GridPoint, cfg_label, ft_label, interval_budget, parse_ft, samples_file,
)
from ditpareto.spec import METHOD_COLORS, METHOD_LABELS, STEP_BUDGET_METHODS, split_sampler, with_sampler

# Legend mark of points sampled from the method's authors' released checkpoint (finetune_source "official").
AUTHORS_CHECKPOINT = "authors' checkpoint"


def method_palette() -> dict[str, str]:
    return {METHOD_LABELS[m]: METHOD_COLORS[m] for m in METHOD_LABELS}  # in registry order


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


# plot_pareto's quality axis turns logarithmic when its largest value exceeds the smallest this many times.
LOG_Y_SPAN = 8.0


def _save(fig, out_paths) -> None:
    for path in out_paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight",
                    metadata={"CreationDate": None} if str(path).endswith(".pdf") else None)
    plt.close(fig)


def _methods_in(points: pd.DataFrame) -> list[str]:
    """The series present, in registry order (a method's other-sampler series right after it)."""
    present = set(points["method"])
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    return sorted(present, key=lambda s: (order.get(split_sampler(s)[0], len(order)), s))


def at_cfg(table: pd.DataFrame, cfg: float | None) -> pd.DataFrame:
    """Rows sampled at guidance ``cfg`` (all rows when None or when the table has no cfg_scale column)."""
    if cfg is None or "cfg_scale" not in table:
        return table
    kept = table[(table["cfg_scale"] - cfg).abs() < 1e-9]
    for method in sorted(set(table["method"]) - set(kept["method"])):  # never silently
        scales = ", ".join(f"{v:g}" for v in sorted(table.loc[table["method"] == method, "cfg_scale"].unique()))
        print(f"{method}: left out, no point at CFG {cfg:g} (its scales: {scales}; fixed_cfg=None shows every "
              "point at its own scale)")
    return kept


def full_static(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the untouched static DiT at the full step count (nominal ratio 1), guided at every step: the 100%
    mark."""
    full = table[(table["method"] == "dit") & ((table["nominal_compute_ratio"] - 1).abs() < 1e-9)
                 & ~table["budget"].astype(str).map(interval_budget)]
    if "cfg_scale" in full and (full["cfg_scale"] != 1.0).any():  # guided, not its unguided variant
        full = full[full["cfg_scale"] != 1.0]
    if full.empty:
        raise ValueError("the table has no static DiT point at the full step count (method dit, nominal ratio 1)")
    return full


def log_axis(ax, axis: str = "x") -> None:
    """A log axis (x, or ``axis="y"``) labelled at 1, 2, 3, 5 and 7 times each power of ten in plain numbers: at
    least four labels over the one decade a study usually spans, no crowded minor labels."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


def pareto_frontier(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated by any other (lower-or-equal x with lower y): the frontier, sorted by x."""
    ordered = points.sort_values([x, y])
    best, keep = float("inf"), []
    for index, row in ordered.iterrows():
        if row[y] < best:
            best = row[y]
            keep.append(index)
    return ordered.loc[keep]


def ft_multiple(table: pd.DataFrame) -> pd.Series:
    """Each row's fine-tuning compute multiple (ft "1.00s2" -> 1.0)."""
    return table["ft"].map(lambda label: parse_ft(label)[0])


def ft_repeat(table: pd.DataFrame) -> pd.Series:
    """Whether a row samples a fine-tune seed-noise repeat (ft "1.00s<seed>")."""
    return table["ft"].map(lambda label: parse_ft(label)[1] is not None)


def main_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Rows at the shared fine-tuning compute (ft 1.00) or without a fine-tune (0.00): the plateau check's other
    multiples and the fine-tune seed repeats are left out."""
    if "ft" not in table:
        return table
    return table[ft_multiple(table).isin([0.0, 1.0]) & ~ft_repeat(table)]


def summarize_seeds(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean and std over seeds per (method, budget, steps, ft, cfg_scale)."""
    keys = [k for k in ("method", "budget", "steps", "ft", "cfg_scale") if k in table]
    extra = {c: (c, "first") for c in ("conversion_cost", "parity_gap", "cfg_selected", "finetune_source")
             if c in table}
    extra.update({c: (c, "mean") for c in (f"{y}_ci_low", f"{y}_ci_high") if c in table})
    grouped = table.groupby(keys, as_index=False)
    out = grouped.agg(**{x: (x, "mean"), y: (y, "mean"), f"{y}_std": (y, "std"), "seeds": ("seed", "count"),
                         **extra})
    out[f"{y}_std"] = out[f"{y}_std"].fillna(0.0)
    # a point off the study's sampler ("B+S") is its own series "method+S"
    samplers = out["budget"].astype(str).map(lambda b: split_sampler(b)[1]) if "budget" in out else None
    if samplers is not None and samplers.notna().any():
        out["method"] = [with_sampler(m, s) if isinstance(s, str) else m for m, s in zip(out["method"], samplers)]
    out["label"] = out["method"].map(series_label)
    return out


def series_label(series: str) -> str:
    """A series' legend label: the method's, with the sampler of a "method+S" series."""
    method, sampler = split_sampler(series)
    label = METHOD_LABELS.get(method, method)
    return f"{label}, {SAMPLER_LABELS.get(sampler, sampler)}" if sampler else label


SAMPLER_LABELS = {"ddim": "DDIM", "ddpm": "DDPM", "dpmpp-2m": "DPM-Solver++(2M)"}


def official(points: pd.DataFrame) -> pd.Series:
    """Whether each row samples the authors' released checkpoint (finetune_source "official")."""
    if "finetune_source" not in points:
        return pd.Series(False, index=points.index)
    return points["finetune_source"] == OFFICIAL


def cfg_curves(points: pd.DataFrame, fixed_cfg: float | None, y: str = "fid") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fixed, best): the points at guidance ``fixed_cfg`` (all points when None or without a cfg column), and per
    (method, budget, steps) one scale for methods sampled at more than one: the scale selected on the held-out seed
    when the table has ``cfg_selected`` (select-cfg), else the one of lowest mean ``y`` (FlexiDiT's best-CFG
    protocol, chosen on the evaluation metric itself, as the paper does: optimistic)."""
    if "cfg_scale" not in points:
        return points, points.iloc[0:0]
    fixed = at_cfg(points, fixed_cfg)
    selected = points["cfg_selected"].fillna(False).astype(bool) if "cfg_selected" in points else None
    if selected is not None and fixed_cfg is None:  # every point at its own (recorded or swept) scale: one frontier
        return points, points.iloc[0:0]
    if selected is not None and selected.any():
        return fixed, points[selected]
    swept = points.groupby("method")["cfg_scale"].transform("nunique") > 1
    ranked = points[swept].sort_values([y, "cfg_scale"], kind="stable")
    keys = [k for k in ("method", "budget", "steps") if k in ranked]
    best = ranked.groupby(keys, as_index=False).head(1)
    return fixed, best


STEP_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p"]


def step_markers(points: pd.DataFrame) -> dict:
    """Marker per sampling step count (most steps first)."""
    if "steps" not in points:
        return {}
    return {n: STEP_MARKERS[i % len(STEP_MARKERS)] for i, n in enumerate(sorted(set(points["steps"]), reverse=True))}


def plot_pareto(
    table: pd.DataFrame,
    out_paths: list[str | os.PathLike],
    x: str = "gmacs_per_image",
    y: str = "fid",
    floor: float | None = None,
    title: str | None = None,
    x_label: str = "GMACs per image (whole trajectory, CFG included)",
    fixed_cfg: float | None = None,
    log_y: bool | None = None,
) -> None:
    """Per-method points (bars: paired-bootstrap 95 % CI with one seed, std over seeds otherwise) at the fixed guidance
    scale, marker = sampling step count, with each
    method's pareto frontier over all its budgets and step counts as a solid line; methods sampled at several scales
    add their selected-CFG frontier (held-out seed; else the best CFG on the evaluation FID), dashed. Parity points (a method at full compute) whose FID exceeds
    dit-ft's at full steps by more than the tolerance are labelled "conversion cost". Points of the authors' released
    checkpoints (finetune_source "official") are hollow and their method's legend says "authors' checkpoint".
    ``log_y``: a log quality axis; None: where the plotted values span more than ``LOG_Y_SPAN`` (a collapsed method
    beside the others would flatten them)."""
    set_style()
    points, best = cfg_curves(summarize_seeds(main_grid(table), x, y), fixed_cfg, y)
    selected = "cfg_selected" in best and best["cfg_selected"].fillna(False).astype(bool).all() and not best.empty
    best_label = "CFG selected on a held-out seed" if selected else "best CFG on the evaluation FID"
    palette, markers = method_palette(), step_markers(points)
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    labelled = 0  # conversion-cost labels drawn so far
    for method in _methods_in(points):
        sub = points[points["method"] == method]
        label = sub["label"].iloc[0]
        base, sampler = split_sampler(method)
        color = palette.get(METHOD_LABELS.get(base, base))
        style = ":" if sampler else "-"  # another sampler: the method's colour, dotted
        if official(sub).any():
            label = f"{label} ({AUTHORS_CHECKPOINT})"
        for steps, group in sub.groupby("steps") if "steps" in sub else [(None, sub)]:
            for hollow, part in group.groupby(official(group)):
                ax.errorbar(part[x], part[y], yerr=error_bars(part, y), fmt=markers.get(steps, "o"), color=color,
                            alpha=0.5, capsize=2, markersize=5, markerfacecolor="none" if hollow else color)
        front = pareto_frontier(sub, x, y)
        cfg = f" (CFG {fixed_cfg:g})" if fixed_cfg is not None and not best.empty else ""
        if fixed_cfg is None and "cfg_selected" in sub and sub["cfg_selected"].fillna(False).astype(bool).any():
            cfg = " (each point at its own CFG)"
        ax.plot(front[x], front[y], style, color=color, label=label + cfg)
        if method in set(best["method"]):
            front = pareto_frontier(best[best["method"] == method], x, y)
            ax.plot(front[x], front[y], "--", color=color, label=f"{label} ({best_label})")
        if "conversion_cost" in sub:
            for _, row in sub[sub["conversion_cost"].fillna(False).astype(bool)].iterrows():
                # stacked in the empty upper right (parity points sit at the right edge), a line to each point
                ax.annotate(f"conversion cost (+{row['parity_gap']:.2f})", (row[x], row[y]), fontsize="x-small",
                            color=color, xytext=(0.97, 0.66 - 0.07 * labelled), textcoords="axes fraction",
                            ha="right", arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.6})
                labelled += 1
    for steps, marker in markers.items():
        ax.plot([], [], marker, color="0.3", linestyle="none", label=f"{steps} steps")
    if floor is not None:
        ax.axhline(floor, color="0.4", linestyle="--", linewidth=1, label="real vs real (floor)")
    log_axis(ax)
    values = points[y][points[y] > 0]
    if log_y or (log_y is None and len(values) and values.max() > LOG_Y_SPAN * values.min()):
        log_axis(ax, "y")  # quality spanning orders of magnitude (a collapsed method beside the others)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y.upper() if y == "fid" else y)
    ax.set_title(title or "toy scale (dit-toy-2, 16 px glyphs): FID vs compute", fontsize="medium")
    # below the axes and the x label, at a fixed distance: a long legend never squeezes the plot (the saved figure
    # grows to hold it: bbox_inches="tight")
    ax.legend(frameon=True, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    _save(fig, out_paths)


def error_bars(points: pd.DataFrame, y: str):
    """The paired-bootstrap 95 % CI when the table has it (one seed), else the std over seeds."""
    if f"{y}_ci_low" in points and points[f"{y}_ci_low"].notna().all() and (points["seeds"] == 1).all():
        return [(points[y] - points[f"{y}_ci_low"]).clip(lower=0), (points[f"{y}_ci_high"] - points[y]).clip(lower=0)]
    return points[f"{y}_std"]


def plateau_points(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the plateau check: (method, budget, steps) sampled at more than one fine-tuning compute."""
    if "ft" not in table or "train_gmacs" not in table:
        return table.iloc[0:0]
    tuned = table[(ft_multiple(table) > 0) & ~ft_repeat(table)]
    keys = ["method", "budget", "steps", "cfg_scale", "seed"]
    several = tuned.groupby(keys)["ft"].transform("nunique") > 1
    return tuned[several]


def plot_plateau(table: pd.DataFrame, out_paths, y: str = "fid") -> None:
    """FID against training MACs (the plateau check): one line per method at its checked budget."""
    points = plateau_points(table)
    if points.empty:
        raise ValueError("no plateau points in the table (finetune.plateau): nothing to plot")
    set_style()
    palette = method_palette()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for method in _methods_in(points):
        sub = points[points["method"] == method].sort_values("train_gmacs")
        label = METHOD_LABELS.get(method, method)
        ax.plot(sub["train_gmacs"] / 1e3, sub[y], "-o", color=palette.get(label),
                label=f"{label} {sub['budget'].iloc[0]} ({sub['steps'].iloc[0]} steps)")
        for _, row in sub.iterrows():
            ax.annotate(f"{parse_ft(row['ft'])[0]:g}x", (row["train_gmacs"] / 1e3, row[y]), fontsize="x-small",
                        xytext=(3, 3), textcoords="offset points")
    log_axis(ax)
    ax.set_xlabel("fine-tuning compute, TMACs (forward + backward)")
    ax.set_ylabel(y.upper() if y == "fid" else y)
    ax.set_title("plateau check (toy scale)", fontsize="medium")
    ax.legend(frameon=True, fontsize="x-small")
    fig.tight_layout()
    _save(fig, out_paths)


def with_compute_ratio(table: pd.DataFrame) -> pd.DataFrame:
    """Adds ``measured_compute_ratio``: executed GMACs per image over the static DiT's at the full step count."""
    out = table.copy()
    full = full_static(table)
    # only the unguided point sampled (the selection chose CFG 1): CFG doubles the static DiT's calls
    unguided_only = "cfg_scale" in full and bool((full["cfg_scale"] == 1.0).all())
    gmacs = float(full["gmacs_per_image"].mean()) * (2 if unguided_only else 1)
    out["measured_compute_ratio"] = out["gmacs_per_image"] / gmacs
    return out


def plot_fid_vs_latency(table: pd.DataFrame, out_paths, fixed_cfg: float | None = None, floor: float | None = None):
    """The pareto figure with measured latency on x: the latency job's median ms per image at the sampling batch
    (whole trajectory, CFG included), timed on a machine it held alone."""
    plot_pareto(table, out_paths, x="latency_ms_per_image", floor=floor, fixed_cfg=fixed_cfg,
                x_label="latency, ms per image (median over rounds; whole trajectory, CFG included)",
                title="toy scale: FID vs measured latency (CPU)")


def plot_measured_vs_nominal(table: pd.DataFrame, out_paths, fixed_cfg: float | None = None) -> None:
    """Each budget's executed compute (relative to the full static DiT) against the compute its label intends."""
    set_style()
    points = at_cfg(with_compute_ratio(main_grid(table)), fixed_cfg)
    palette = method_palette()
    fig, ax = plt.subplots(figsize=(7.4, 4.6))
    keys = [k for k in ("budget", "steps", "cfg_scale") if k in points]
    labels = []  # (x, y, text) of the dynamic methods' points, placed after the loop
    for method in _methods_in(points):
        # one point per configuration (budget, step count, guidance): seeds averaged, nothing else
        sub = points[points["method"] == method].groupby(keys, as_index=False)[
            ["nominal_compute_ratio", "measured_compute_ratio"]].mean()
        label = METHOD_LABELS.get(method, method)
        ax.scatter(sub["nominal_compute_ratio"], sub["measured_compute_ratio"], color=palette.get(label),
                   label=label, s=36, zorder=3)
        if method in STEP_BUDGET_METHODS:
            continue  # the step ladders sit on the diagonal (unguided: at half) and need no labels
        for _, row in sub[(sub["nominal_compute_ratio"] - 1).abs() > 1e-9].iterrows():  # parity points: legend
            labels.append((row["nominal_compute_ratio"], row["measured_compute_ratio"],
                           f"{label} {row['budget']}, {row['steps']} steps"))
    # a short number beside each point, its configuration in a key below the axes: no two labels overlap
    labels.sort()
    _place_labels(ax, [(x, y, str(i + 1)) for i, (x, y, _) in enumerate(labels)], near=(0.03, 0.03))
    key = "\n".join(f"{i + 1}: {text}" for i, (_, _, text) in enumerate(labels))
    ax.text(1.03, 1.0, key, transform=ax.transAxes, fontsize="x-small", va="top", ha="left")
    ax.plot([0, 1.05], [0, 1.05], color="0.5", linestyle=":", linewidth=1, label="measured = nominal")
    ax.set_xlabel("nominal compute ratio (the budget's label)")
    ax.set_ylabel("measured compute ratio (executed GMACs / static DiT)")
    ax.legend(frameon=True, fontsize="small", loc="upper left")
    fig.tight_layout()
    _save(fig, out_paths)


# Label offsets (points) tried in turn for a point whose neighbours are close: right-up, right-down, left-up, left-down.
LABEL_OFFSETS = [((4, 3), "left"), ((4, -10), "left"), ((-4, 3), "right"), ((-4, -10), "right")]


def _place_labels(ax, labels: list[tuple[float, float, str]], near: tuple[float, float]) -> None:
    """Annotate each (x, y, text), choosing for a point the first offset no nearby labelled point (closer than
    ``near`` in data units: a label's width and height) has used, so clustered labels do not overlap."""
    placed: list[tuple[float, float, int]] = []
    for x, y, text in sorted(labels):
        used = {k for px, py, k in placed if abs(px - x) < near[0] and abs(py - y) < near[1]}
        k = next((i for i in range(len(LABEL_OFFSETS)) if i not in used), len(placed) % len(LABEL_OFFSETS))
        (dx, dy), ha = LABEL_OFFSETS[k]
        ax.annotate(text, (x, y), fontsize="x-small", xytext=(dx, dy), textcoords="offset points", ha=ha)
        placed.append((x, y, k))


def relative_points(table: pd.DataFrame, claims: pd.DataFrame, fixed_cfg: float | None = None) -> pd.DataFrame:
    """Measured and published points on common axes, each source against its own static DiT at full compute (ours:
    the untouched base at the full step count, guided; papers: their DiT row at the same model and resolution):
    compute ratio and relative FID change in % (the verdicts' measure: FIDs of different extractors compare only
    as ratios). Ours carry their point CI over the base FID (``pct_low``, ``pct_high``; the base held fixed: the
    paired CIs are in verdicts.csv). Columns: method, source, setting, compute_ratio, fid_change_pct, pct_low,
    pct_high."""
    ours = at_cfg(with_compute_ratio(main_grid(table)), fixed_cfg)
    base_fid = float(full_static(ours)["fid"].mean())
    keys = [k for k in ("method", "budget", "steps", "cfg_scale") if k in ours]
    values = [c for c in ("measured_compute_ratio", "fid", "fid_ci_low", "fid_ci_high") if c in ours]
    ours = ours.groupby(keys, as_index=False)[values].mean()
    rows = []
    for r in ours.to_dict("records"):
        low, high = (100 * (r.get(c, float("nan")) / base_fid - 1) for c in ("fid_ci_low", "fid_ci_high"))
        rows.append({"method": r["method"], "source": "measured (toy scale)",
                     "setting": f"{r['budget']}, {r['steps']} steps", "compute_ratio": r["measured_compute_ratio"],
                     "fid_change_pct": 100 * (r["fid"] / base_fid - 1), "pct_low": low, "pct_high": high})
    baselines = claims[claims["method"] == "dit"].set_index(["model", "resolution"])["fid"]
    for r in claims[claims["method"] != "dit"].itertuples():
        if (r.model, r.resolution) in baselines.index:
            base = float(baselines[(r.model, r.resolution)])
            rows.append({"method": r.method, "source": f"paper ({r.model} {r.resolution}px)", "setting": r.setting,
                         "compute_ratio": float(r.compute_ratio), "fid_change_pct": 100 * (float(r.fid) / base - 1),
                         "pct_low": float("nan"), "pct_high": float("nan")})
    return pd.DataFrame(rows)


def _clip_far_points(ax, points: pd.DataFrame, palette: dict, cap: float = 100.0) -> None:
    """Keep the y range on the claims (within ±10 %): at most ``cap`` %; points above it (the fewest steps, +100 %
    and more) sit on the top edge as triangles, their number and maximum said in one note."""
    top = min(max(float(points["fid_change_pct"].max()) * 1.1, 20.0), cap)
    above = points[points["fid_change_pct"] > top]
    if above.empty:
        return
    low = min(float(points["fid_change_pct"].min()), float(points["pct_low"].min(skipna=True)))
    ax.set_ylim(low - 0.06 * (top - low), top)
    for method, sub in above.groupby("method"):
        ax.scatter(sub["compute_ratio"], [top] * len(sub), marker="^", s=42, clip_on=False, zorder=4,
                   color=palette.get(METHOD_LABELS.get(method, method)), edgecolor="white", linewidth=0.4)
    ax.set_title(f"▲ on the top edge: {len(above)} point(s) beyond {top:+.0f} % (the fewest steps), up to "
                 f"{above['fid_change_pct'].max():+.0f} %", loc="left", fontsize="x-small", color="0.3")


def plot_claims(table: pd.DataFrame, claims: pd.DataFrame, out_paths, fixed_cfg: float | None = None) -> None:
    """Our measured points beside the papers' headline numbers, both as relative FID change (%) against their own
    static DiT: one metric space on each axis whatever the extractor."""
    set_style()
    points = relative_points(table, claims, fixed_cfg)
    palette = method_palette()
    markers = {source: m for source, m in zip(sorted(set(points["source"])), "oXPsD^v")}
    fig, ax = plt.subplots(figsize=(6.6, 4.6))
    for (method, source), sub in points.groupby(["method", "source"]):
        label = METHOD_LABELS.get(method, method)
        paper = source.startswith("paper")
        if not paper and sub["pct_low"].notna().any():
            # the basic-bootstrap interval of the population FID may lie below the finite-N point: a segment
            ax.vlines(sub["compute_ratio"], sub["pct_low"], sub["pct_high"], color=palette.get(label),
                      linewidth=0.8, alpha=0.6, zorder=2)
        ax.scatter(sub["compute_ratio"], sub["fid_change_pct"], color=palette.get(label), marker=markers[source],
                   s=44 if paper else 30, label=f"{label}, {source}", zorder=3,
                   edgecolor="black" if paper else None, linewidth=0.5)
    ax.axhline(0, color="0.4", linewidth=1)
    ax.axvline(1, color="0.4", linewidth=1, linestyle=":")
    _clip_far_points(ax, points, palette)
    ax.set_xlabel("compute ratio (GMACs per image / own static DiT at full compute)")
    ax.set_ylabel("FID change vs own static DiT, % (lower is better)")
    ax.legend(frameon=True, fontsize="x-small", ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    _save(fig, out_paths)


def plot_sample_grid(samples: dict[str, str | os.PathLike], out_paths, count: int = 12) -> None:
    """One row per (method, budget) file, the first ``count`` samples: same seeds and labels in every row."""
    import numpy as np

    from ditpareto.npzfiles import load_samples

    rows = {name: load_samples(path) for name, path in samples.items()}
    labels = {name: tuple(d["labels"][:count]) for name, d in rows.items()}
    if len(set(labels.values())) > 1:
        raise ValueError("sample files disagree on labels: a grid needs the same seed and indices in every row")
    set_style()
    fig, axes = plt.subplots(len(rows), 1, figsize=(count * 0.55 + 2.2, 0.62 * len(rows) + 0.4), squeeze=False)
    for ax, (name, data) in zip(axes[:, 0], rows.items()):
        images = data["images"][:count]  # (N, H, W, C) uint8
        strip = np.concatenate(list(images), axis=1)
        ax.imshow(strip.squeeze(-1) if strip.shape[-1] == 1 else strip, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize="small")
    axes[0, 0].set_title("labels: " + " ".join(str(int(v)) for v in next(iter(labels.values()))), fontsize="small")
    fig.tight_layout()
    _save(fig, out_paths)


def sample_grid_files(table: pd.DataFrame, samples_root: str | os.PathLike, cfg: float | None, seed: int) -> dict:
    """Row label -> samples file of every (method, budget) in the table at guidance ``cfg`` and ``seed``, in plot
    order."""
    points = at_cfg(table[table["seed"] == seed], cfg)
    points = main_grid(points)  # plateau points and fine-tune repeats are not in the grid figure
    files = {}
    for method in _methods_in(points):
        sub = points[points["method"] == method].sort_values(["nominal_compute_ratio", "steps"], ascending=False)
        for row in sub.itertuples():
            label = f"{METHOD_LABELS.get(method, method)} {row.budget} ({row.steps} steps, CFG {row.cfg_scale:g})"
            if getattr(row, "finetune_source", None) == OFFICIAL:
                label += f", {AUTHORS_CHECKPOINT}"
            point = GridPoint(method, str(row.budget), int(row.steps), ft_label(parse_ft(row.ft)[0]),
                              cfg_label(row.cfg_scale), seed)
            files[label] = samples_file(samples_root, point)
    return files
