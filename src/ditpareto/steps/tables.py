"""The study's table and its figure notebooks.

One pure function per job: typed inputs, files in, files out, a small summary dict back; the CLI
(``ditpareto.commands``) only parses flags into these arguments."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ditpareto.errors import InputError
from ditpareto.results import metrics_table, with_latency

log = logging.getLogger("ditpareto")


def aggregate(*, metrics: list, out: str, latency: str | None = None) -> dict:
    """Collect grid-point metrics into one CSV table (with the latency job's medians when given).

    Example: python -m ditpareto aggregate results/metrics/*/*/*/*/*/seed~0.json --latency latency.csv
    --out results/tables/metrics.csv
    """
    table = metrics_table(metrics)
    if latency:
        table = with_latency(table, latency)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return {"rows": len(table), "out": out}


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
