"""Run records: metrics JSON per grid point -> one tidy table (rules, notebooks and tests share this)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas loads on first use: the sampling and merge jobs do not pay its import
    import pandas as pd

from ditpareto import __version__
from ditpareto.errors import InputError

# Columns that depend on the machine's speed, not on the config; excluded from determinism checks.
TIMING_COLUMNS = ("latency_ms_per_image", "latency_ms_per_image_std", "wall_seconds", "sampling_latency_ms_per_image",
                  "sampling_latency_ms_per_image_std", "latency_ms_min", "latency_ms_max", "latency_ms_batch1",
                  "latency_ms_batch1_min", "latency_ms_batch1_max")
# What a sampling record holds for evaluate and merge-samples (checked before any compute).
SAMPLE_RECORD_KEYS = ("method", "budget", "steps", "cfg_scale", "seed", "gmacs_per_image", "params")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_digest(path: str | os.PathLike, sha256: str | None, what: str) -> str:
    """The file's sha256, checked against ``sha256`` when given (InputError naming ``what`` and the file)."""
    if not Path(path).is_file():
        raise InputError(f"{what} {path} does not exist")
    digest = sha256_of(path)
    if sha256 and digest != sha256.lower():
        raise InputError(f"{what} {path} has sha256 {digest}, expected {sha256}")
    return digest


def git_commit() -> str:
    """The checkout's commit (with ``-dirty`` when modified), or ``unknown`` outside a git checkout."""
    root = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance() -> dict:
    return {"ditpareto_version": __version__, "git_commit": git_commit()}


def study_root(marker: str | os.PathLike = "results/tables/metrics.csv", start: str | os.PathLike | None = None) -> Path:
    """The study directory: ``start`` (the working directory) or its nearest parent holding ``marker`` (a notebook
    opened in notebooks/ finds the repository's results/); an absolute marker's root is ``/``. Raises
    FileNotFoundError naming the marker when no directory up the tree holds it."""
    marker = Path(marker)
    if marker.is_absolute():
        return Path("/")
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / marker).exists():
            return folder
    raise FileNotFoundError(f"{marker} is not in {here} or any folder above it: run the study first "
                            "(snakemake --cores 2) or pass its path")


def write_json(obj: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from a file (InputError naming the file when it is unreadable or not an object)."""
    return read_record(path)


# What a grid point's metrics record must hold, and of what kind, before any table or verdict reads it.
POINT_KEYS = ("method", "budget", "steps", "ft", "cfg_scale", "seed")


def read_metrics_record(path: str | os.PathLike) -> dict:
    """A grid point's metrics record (``evaluate``'s JSON), checked: its key fields (a method name, budget and ft
    labels, an integer step count >= 1 and seed >= 0, a finite guidance scale >= 1), a finite FID >= 0, finite
    GMACs > 0, and finite FID replicates where it has them (a video point: FVD-toy in FID's place). InputError
    naming the file and the field."""
    import math

    from ditpareto.errors import InputError

    record = read_record(path, required=(*POINT_KEYS, "gmacs_per_image"))
    # a video point's quality is its FVD (paper scale) or FVD-toy
    quality = next((q for q in ("fvd", "fvd_toy") if q in record), "fid")
    if quality not in record:
        raise InputError(f"metrics record {path} lacks fid (or fvd / fvd_toy for clips)")

    def bad(field: str, wanted: str):
        return InputError(f"metrics record {path}: {field} is {record.get(field)!r}, expected {wanted}")

    def number(value) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    for field in ("method", "budget", "ft"):
        if not isinstance(record[field], str) or not record[field]:
            raise bad(field, "a non-empty string")
    for field, low in (("steps", 1), ("seed", 0)):
        if isinstance(record[field], bool) or not isinstance(record[field], int) or record[field] < low:
            raise bad(field, f"an integer >= {low}")
    name = {"fid": "FID", "fvd": "FVD", "fvd_toy": "FVD-toy"}[quality]
    checks = (("cfg_scale", lambda v: v >= 1, "a finite number >= 1"),
              (quality, lambda v: v >= 0, f"a finite {name} >= 0"), ("gmacs_per_image", lambda v: v > 0, "finite GMACs > 0"))
    for field, ok, wanted in checks:
        value = number(record[field])
        if value is None or not math.isfinite(value) or not ok(value):
            raise bad(field, wanted)
    replicates = record.get(f"{quality}_bootstrap")
    if replicates is not None:
        values = [number(v) for v in replicates] if isinstance(replicates, list) else [None]
        if not values or any(v is None or not math.isfinite(v) for v in values):
            raise InputError(f"metrics record {path}: {quality}_bootstrap is not a list of finite numbers")
    return record


def unique_points(records: list[dict], paths: list) -> None:
    """Refuse two records of one grid point (the same method, budget, steps, ft, guidance scale and seed): InputError
    naming both files."""
    from ditpareto.errors import InputError

    seen: dict[tuple, str] = {}
    for record, path in zip(records, paths):
        key = tuple(record[k] for k in POINT_KEYS)
        if key in seen:
            raise InputError(f"metrics records {seen[key]} and {path} are the same grid point "
                             f"({'/'.join(map(str, key))})")
        seen[key] = str(path)


def read_record(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict:
    """A JSON record (an object) with the ``required`` keys; InputError naming the file and the problem."""
    from ditpareto.errors import InputError

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"record {path} cannot be read as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict):
        raise InputError(f"record {path} holds a {type(record).__name__}, not a JSON object")
    missing = [k for k in required if k not in record]
    if missing:
        raise InputError(f"record {path} lacks {missing}")
    return record


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested dicts -> dotted columns (``params.cfg_scale``)."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def metrics_table(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per grid point, sorted by method, nominal compute and seed."""
    import pandas as pd

    if not paths:
        raise ValueError("no metrics files given")
    # bootstrap replicates stay in the JSON records (verdicts read them there); the table keeps their CI
    records = [read_metrics_record(p) for p in paths]
    unique_points(records, paths)
    rows = [{k: v for k, v in flatten(r).items() if not k.endswith("_bootstrap")} for r in records]
    table = pd.DataFrame(rows)
    order = [c for c in ("method", "budget", "steps", "ft", "cfg_scale", "seed", "nominal_compute_ratio",
                         "gmacs_per_image", "fid", "fvd", "fvd_toy", "frame_fid", "train_gmacs", "optimizer_steps",
                         "samples_seen")
             if c in table]
    table = table[order + [c for c in table.columns if c not in order]]
    keys = [c for c in ("method", "nominal_compute_ratio", "steps", "ft", "cfg_scale", "seed") if c in table]
    return mark_parity(table.sort_values(keys, kind="stable").reset_index(drop=True))


def with_latency(table: pd.DataFrame, latency_csv: str | os.PathLike) -> pd.DataFrame:
    """The latency job's medians (ms per image) joined on (method, budget, steps, ft, guided or not; the job times each
    compute once, at the fixed scale, and any guided scale does the same work): ``latency_ms_per_image`` and
    its min/max at the largest batch timed (the sampling batch), ``latency_ms_batch1*`` at batch 1. The sampling
    jobs' in-process timing stays as ``sampling_latency_ms_per_image``; the job's device and precision become
    ``latency_device`` and ``latency_precision``."""
    import pandas as pd

    from ditpareto.errors import InputError

    try:
        latency = pd.read_csv(latency_csv, dtype={"budget": str, "ft": str})
    except (OSError, ValueError) as exc:
        raise InputError(f"latency table {latency_csv} cannot be read ({exc})") from None
    needed = {"method", "budget", "steps", "ft", "batch_size", "latency_ms_per_image", "latency_ms_min",
              "latency_ms_max"}
    if not needed <= set(latency.columns):
        raise InputError(f"latency table {latency_csv} lacks {sorted(needed - set(latency.columns))}")
    # guided or not: an unguided point (one call a step) is not timed as its guided neighbour
    keys = ["method", "budget", "steps", "ft"]
    if {"cfg_scale"} <= set(latency) & set(table):
        keys.append("guided_")
        latency = latency.assign(guided_=(latency["cfg_scale"].astype(float) - 1).abs() > 1e-9)
        table = table.assign(guided_=(table["cfg_scale"].astype(float) - 1).abs() > 1e-9)
    table = table.rename(columns={"latency_ms_per_image": "sampling_latency_ms_per_image",
                                  "latency_ms_per_image_std": "sampling_latency_ms_per_image_std"})
    latency = latency.rename(columns={"device": "latency_device", "precision": "latency_precision"})
    columns = ["latency_ms_per_image", "latency_ms_min", "latency_ms_max"]
    columns += [c for c in ("latency_device", "latency_precision") if c in latency.columns]
    large = latency[latency["batch_size"] == latency["batch_size"].max()][keys + columns]
    small = latency[latency["batch_size"] == latency["batch_size"].min()][keys + columns[:3]].rename(
        columns={"latency_ms_per_image": "latency_ms_batch1", "latency_ms_min": "latency_ms_batch1_min",
                 "latency_ms_max": "latency_ms_batch1_max"})
    for part in (large, small):
        part["steps"] = part["steps"].astype(int)
        part = part.drop_duplicates(keys)
        table = table.merge(part, on=keys, how="left")
    return table.drop(columns=["guided_"], errors="ignore")


def mark_parity(table: pd.DataFrame) -> pd.DataFrame:
    """``parity_gap``: a dynamic method's FID at full compute (nominal ratio 1: FlexiDiT 0.00, DyDiT with routers
    bypassed, FlexDiT at the full grid) minus dit-ft's at the same steps, sampler, guidance, seed and fine-tuning
    compute (or, for rows at their selected scale without such a pair, dit-ft's at its own selected scale);
    ``conversion_cost``: the gap exceeds ``study.PARITY_TOLERANCE`` (empty on other rows)."""
    import pandas as pd

    from ditpareto.study import PARITY_TOLERANCE, interval_budget
    from ditpareto.spec import STEP_BUDGET_METHODS, split_sampler

    table = table.copy()
    table["parity_gap"] = float("nan")
    table["conversion_cost"] = pd.Series([pd.NA] * len(table), dtype="boolean")
    needed = {"method", "nominal_compute_ratio", "steps", "ft", "cfg_scale", "seed", "fid"}
    if not needed <= set(table.columns):
        return table
    full = ((table["nominal_compute_ratio"] - 1).abs() < 1e-9) & ~table["budget"].astype(str).map(interval_budget)
    # keyed by the sampler too: a point on DPM-Solver++ is compared with dit-ft on DPM-Solver++
    keyed = table.assign(sampler_=table["budget"].astype(str).map(lambda b: split_sampler(b)[1] or ""))
    passes = [(["steps", "ft", "cfg_scale", "seed"], full)]
    if "cfg_selected" in table:  # then each at its own selected scale, where no same-scale pair exists
        passes.append((["steps", "ft", "seed"], full & table["cfg_selected"].fillna(False).astype(bool)))
    for keys, rows in passes:
        keys = [*keys, "sampler_"]
        reference = keyed[rows & (table["method"] == "dit-ft")].set_index(keys)["fid"]
        for index, row in keyed[rows & ~table["method"].isin(STEP_BUDGET_METHODS)].iterrows():
            key = tuple(row[k] for k in keys)
            if key in reference.index and pd.isna(table.loc[index, "parity_gap"]):
                gap = float(row["fid"]) - float(reference.loc[key])
                table.loc[index, "parity_gap"] = gap
                table.loc[index, "conversion_cost"] = gap > PARITY_TOLERANCE
    return table


def read_metrics_csv(path: str | os.PathLike) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(path, dtype={"budget": str, "ft": str})
