"""The study's table and its figure notebooks.

One pure function per job: typed inputs, files in, files out, a small summary dict back; the CLI
(``ditpareto.commands``) only parses flags into these arguments."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ditpareto.errors import InputError
from ditpareto.results import mark_parity, metrics_table, verified_digest, with_latency

log = logging.getLogger("ditpareto")


def aggregate(*, metrics: list, out: str, latency: str | None = None, cfg_selection: str | None = None) -> dict:
    """Collect grid-point metrics into one CSV table (with the latency job's medians, and the selected guidance
    scales, when given).

    Example: python -m ditpareto aggregate results/metrics/*/*/*/*/*/seed~0.json --latency latency.csv
    --cfg-selection cfg_selection.csv --out results/tables/metrics.csv
    """
    import pandas as pd

    from ditpareto.cfg_selection import mark_selected

    table = metrics_table(metrics)
    if latency:
        table = with_latency(table, latency)
    if cfg_selection:
        try:
            selected = pd.read_csv(cfg_selection, dtype={"budget": str, "ft": str})
        except (OSError, ValueError) as exc:
            raise InputError(f"CFG selection table {cfg_selection} cannot be read ({exc})") from None
        table = mark_parity(mark_selected(table, selected))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return {"rows": len(table), "out": out}


def compare_runs(*, baseline: list, other: list, out: str) -> dict:
    """Paired FID shift of every grid point between two runs of one study (e.g. bf16 against fp32), per point and
    per method, with paired-bootstrap 95 % CIs.

    Example: python -m ditpareto compare-runs --baseline fp32/results/metrics/*/*/*/*/*/seed~0.json
    --other bf16/results/metrics/*/*/*/*/*/seed~0.json --out precision_shift.csv
    """
    from ditpareto.results import read_record
    from ditpareto.shifts import paired_shifts

    table = paired_shifts([read_record(p) for p in baseline], [read_record(p) for p in other])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    methods = table[table["budget"] == "all points"]
    return {"points": int((table["budget"] != "all points").sum()), "out": out,
            "shift_per_method": {r.method: [round(r.fid_shift, 4), round(r.fid_shift_ci_low, 4),
                                            round(r.fid_shift_ci_high, 4)] for r in methods.itertuples()}}


def notebook(*, notebook: str, out: str, parameters: str = "{}", figures: list = ()) -> dict:
    """Execute a figure notebook headless with papermill on a study's results; check it wrote its figures.

    Example: python -m ditpareto notebook --notebook notebooks/pareto.ipynb --out results/notebooks/pareto.ipynb
    --parameters '{"fixed_cfg": 2.0}'
    """
    import papermill

    try:
        values = json.loads(parameters)
    except json.JSONDecodeError as exc:
        raise InputError(f"--parameters is not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise InputError("--parameters must be a JSON object")
    unknown = sorted(set(values) - declared_parameters(notebook))
    if unknown:
        raise InputError(f"--parameters {unknown} are not declared in {notebook}'s parameters cell")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 4):
        try:
            papermill.execute_notebook(notebook, out, parameters=values, kernel_name="python3", progress_bar=False,
                                       cwd=Path.cwd())
            break
        except RuntimeError as exc:  # kernels started at the same moment can race for a TCP port
            if "Kernel died before replying" not in str(exc) or attempt == 3:
                raise
            log.warning("kernel failed to start (attempt %d of 3): %s; retrying", attempt, exc)
    missing = [f for f in figures if not Path(f).is_file()]
    if missing:
        raise InputError(f"{notebook} ran but did not write {missing}")
    return {"notebook": notebook, "out": out, "figures": list(figures)}


def declared_parameters(notebook: str) -> set[str]:
    """The names a notebook's cell tagged "parameters" assigns (papermill injects only these). InputError when the
    file is not a notebook or has no such cell."""
    import ast

    import nbformat

    try:
        cells = nbformat.read(notebook, as_version=4).cells
    except (OSError, ValueError, KeyError, AttributeError, TypeError, nbformat.ValidationError) as exc:
        raise InputError(f"{notebook} is not a readable Jupyter notebook ({type(exc).__name__})") from None
    sources = [c.source for c in cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not sources:
        raise InputError(f"{notebook} has no cell tagged 'parameters'")
    try:
        tree = ast.parse("\n".join(sources))
    except SyntaxError:
        raise InputError(f"{notebook}'s parameters cell is not Python") from None
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def select_cfg(*, out: str, selection: list = (), recorded: str | None = None, sha256: str | None = None,
               evaluation: list = (), extend: str | None = None) -> dict:
    """The guidance scale of lowest FID on the held-out selection seed per (method, budget, steps, ft): chosen here
    from the selection records (optionally extending a table recorded earlier with new candidates), or read from a
    table a long run recorded. With evaluation records, each choice is scored on the evaluation seeds: the selection
    bias and what choosing on the evaluation FID would have given.

    Example: python -m ditpareto select-cfg --selection results/metrics/*/*/*/*/*/seed~4095.json
    --evaluation results/metrics/*/*/*/*/*/seed~0.json --out results/tables/cfg_selection.csv
    """
    from ditpareto.cfg_selection import choose_scales, extend_choices, read_choices, score_choices
    from ditpareto.results import read_record

    if bool(selection) == bool(recorded):
        raise InputError("give the selection records (--selection) or a recorded table (--recorded), not both")
    if extend and not selection:
        raise InputError("--extend adds new selection records (--selection) to a recorded table")
    if recorded and sha256 and Path(recorded).is_file():  # a missing file: read_choices says so
        verified_digest(recorded, sha256, "recorded guidance scale table")
    try:
        choices = read_choices(recorded) if recorded else choose_scales([read_record(p) for p in selection])
        if extend:
            choices = extend_choices(read_choices(extend), choices)
        table = score_choices(choices, [read_record(p) for p in evaluation]) if evaluation else choices
    except ValueError as exc:
        raise InputError(str(exc)) from None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    summary = {"rows": len(table), "out": out}
    if evaluation:
        summary.update(mean_selection_bias=float(table["selection_bias"].mean()),
                       mean_selection_optimism=float(table["selection_optimism"].mean()),
                       mean_optimism=float(table["optimism"].mean()))
    return summary


def verdicts(*, metrics: list, claims: str, out: str, comparisons: str, fixed_cfg: float, full_steps: int,
             finetune_noise: str | None = None, cfg_selection: str | None = None,
             guidance: list = ("fixed",), noise_recorded: str | None = None, noise_sha256: str | None = None,
             plateau_out: str | None = None, plateau_recorded: str | None = None,
             plateau_sha256: str | None = None, dominance: str | None = None) -> dict:
    """Each dynamic-method point against the static envelopes (FID difference at equal GMACs, compute saved at
    matched FID) and the claims ledger (one row per published claim with a toy analogue, one "beats fewer steps?"
    row per method), with paired-bootstrap CIs, and (``dominance``) where each method beats each other; per
    ``guidance`` (column of the same name): every point at the fixed scale, and/or every point at its selected scale
    (the select-cfg table).

    Example: python -m ditpareto verdicts results/metrics/*/*/*/*/*/seed~0.json --claims results/published/claims.csv
    --fixed-cfg 1.5 --full-steps 10 --comparisons comparisons.csv --finetune-noise finetune_noise.csv
    --cfg-selection cfg_selection.csv --guidance fixed selected --out verdicts.csv

    The fine-tune seed spread: measured in this run (finetune.seed_noise; written to ``finetune_noise``), else the
    table a long run recorded (``noise_recorded``, sha256-checked; finetune.noise_recorded).
    The plateau points (fine-tunes at other training computes): this run's (finetune.plateau; written to
    ``plateau_out`` with their replicates, to be recorded), and where this run has none for a point, the ones a long
    run recorded (``plateau_recorded``, sha256-checked; finetune.plateau_recorded).
    """
    import pandas as pd

    from ditpareto.cfg_selection import read_choices
    from ditpareto.results import read_metrics_record, unique_points
    from ditpareto.study import read_noise_table
    from ditpareto.verdicts import (
        SeedNoise, claims_ledger, compare_with_envelopes, finetune_seed_noise, load_plateau, load_points,
        plateau_rows, with_recorded_plateau,
    )
    from ditpareto.verdicts import dominance as dominance_table

    try:
        published = pd.read_csv(claims, dtype={"resolution": int})
    except (OSError, ValueError) as exc:
        raise InputError(f"claims table {claims} cannot be read ({exc})") from None
    if "selected" in guidance and not cfg_selection:
        raise InputError("--guidance selected needs the select-cfg table (--cfg-selection)")
    bases = [(f"fixed {fixed_cfg:g}", None)] if "fixed" in guidance else []
    try:
        if "selected" in guidance:
            chosen = read_choices(cfg_selection)
            bases.append(("selected", {(r.method, str(r.budget), int(r.steps), str(r.ft)): float(r.cfg_selected)
                                       for r in chosen.itertuples()}))
        records = [read_metrics_record(p) for p in metrics]
        unique_points(records, metrics)
        points = {name: load_points(records, fixed_cfg, selected) for name, selected in bases}
        every_sampler = ({name: load_points(records, fixed_cfg, selected, samplers=True) for name, selected in bases}
                         if dominance else {})
        plateaus = {name: load_plateau(records, fixed_cfg, selected) for name, selected in bases}
        if plateau_recorded:
            recorded = _read_recorded_plateau(plateau_recorded, plateau_sha256)
            for name, selected in bases:
                plateaus[name] = with_recorded_plateau(plateaus[name], recorded, points[name], records, fixed_cfg,
                                                       selected)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    noise = finetune_seed_noise(records)
    seed_noise = SeedNoise(noise)
    if noise.empty and noise_recorded:
        verified_digest(noise_recorded, noise_sha256, "recorded fine-tune seed noise table")
        try:
            seed_noise = SeedNoise(pd.DataFrame(read_noise_table(noise_recorded)), recorded=True)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    compared, ledger = [], []
    for name, _ in bases:
        table = compare_with_envelopes(points[name], seed_noise)
        compared.append(table.assign(guidance=name))
        ledger.append(claims_ledger(points[name], table, published, full_steps, seed_noise,
                                    plateaus[name]).assign(guidance=name))
    compared, ledger = pd.concat(compared, ignore_index=True), pd.concat(ledger, ignore_index=True)
    if plateau_out:
        Path(plateau_out).parent.mkdir(parents=True, exist_ok=True)
        Path(plateau_out).write_text(json.dumps({"rows": plateau_rows(records, fixed_cfg, bases[-1][1])}) + "\n")
    tables = [(compared, comparisons), (ledger, out)] + ([(noise, finetune_noise)] if finetune_noise else [])
    if dominance:
        pairs = pd.concat([dominance_table(every_sampler[name], seed_noise).assign(guidance=name)
                           for name, _ in bases], ignore_index=True)
        tables.append((pairs, dominance))
    for table, path in tables:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
    from ditpareto.verdicts import REGIME_CLAIM

    untested = ledger.empty or ledger["claim"].astype(str).str.startswith(REGIME_CLAIM.split(":")[0]).all()
    if untested:
        log.warning("no claims to test: the study samples no dynamic method (FlexDiT, DyDiT, FlexiDiT) against a "
                    "static DiT at full steps; the ledger %s holds at most the guidance regime row", out)
    return {"claims": len(ledger), "comparisons": len(compared), "out": out,
            **({"note": "no claims to test"} if untested else {}),
            "seed_noise": f"{len(seed_noise.table)} {seed_noise.kind} fine-tune spread(s), pooled "
                          f"{seed_noise.pooled_std:.3f} FID ({seed_noise.pooled_df} df)",
            "verdicts": {name: group["verdict"].value_counts().to_dict() for name, group in ledger.groupby("guidance")},
            "verdicts_holm": {name: group["verdict_holm"].value_counts().to_dict()
                              for name, group in ledger.groupby("guidance")}}


def _read_recorded_plateau(path: str, sha256: str | None) -> list[dict]:
    from ditpareto.study import read_plateau_table

    verified_digest(path, sha256, "recorded plateau table")
    return read_plateau_table(path)


def summary(*, verdicts: str, out: str, scale: str, figures: list = (), readme: str | None = None,
            metrics: str | None = None, ledger_html: str | None = None, metrics_html: str | None = None,
            config_json: str | None = None, config_out: str | None = None, answer_html: str | None = None) -> dict:
    """The study's answer on one page (Markdown): the question, the run's scale, the verdict ledger as a table,
    its caveats and the figures; with ``readme``, also that file's generated ledger block rewritten from the same
    table.

    Example: python -m ditpareto summary --verdicts results/tables/verdicts.csv --scale "toy" --figures
    results/figures/pareto_fid_vs_gmacs.png --out results/summary.md
    """
    import pandas as pd

    from ditpareto.summary import (COMPACT_METRICS, answer_html as answer_block, html_table, ledger_markdown,
                                   replace_block, summary_markdown)

    if not Path(verdicts).is_file():
        raise InputError(f"verdict table {verdicts} does not exist")
    table = pd.read_csv(verdicts)
    missing = sorted({"method", "claim", "estimate", "ci_low", "ci_high", "verdict"} - set(table.columns))
    if missing:
        raise InputError(f"verdict table {verdicts} lacks columns {missing}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(summary_markdown(table, list(figures), scale, str(Path(out).parent)))
    if answer_html:
        Path(answer_html).write_text(answer_block(table, scale))
    if ledger_html:
        shown = [c for c in ("method", "claim", "estimate", "ci_low", "ci_high", "verdict", "verdict_holm",
                             "p_value", "p_holm", "executed_compute_ratio", "compute_mismatch", "precision", "recall",
                             "comparator_precision", "comparator_recall", "verdict_by_training", "regime")
                 if c in table]
        Path(ledger_html).write_text(html_table(table[shown], f"Verdicts ({scale})"))
    if metrics_html:
        if not metrics or not Path(metrics).is_file():
            raise InputError("--metrics-html needs the metrics table (--metrics)")
        grid = pd.read_csv(metrics, dtype={"budget": str, "ft": str})
        Path(metrics_html).write_text(html_table(grid[[c for c in COMPACT_METRICS if c in grid]],
                                                 f"Grid points ({scale})"))
    if config_out:
        import yaml

        try:
            run_config = json.loads(config_json or "")
        except json.JSONDecodeError as exc:
            raise InputError(f"--config-json is not JSON: {exc}") from None
        Path(config_out).write_text("# The configuration this run used (config files merged, schema defaults filled)\n"
                                    + yaml.safe_dump(run_config, sort_keys=False))
    if readme:
        try:
            Path(readme).write_text(replace_block(Path(readme).read_text(), ledger_markdown(table)))
        except ValueError as exc:
            raise InputError(f"{readme}: {exc}") from None
    return {"out": out, "rows": len(table), "readme": readme}
