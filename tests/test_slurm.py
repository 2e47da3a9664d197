"""A miniature study through the SLURM executor on a throwaway local cluster gives the local run's table."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm_cluster import slurm_cluster  # noqa: F401 (fixture)

from ditpareto.results import TIMING_COLUMNS, read_metrics_csv

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "config" / "mini.yaml"
PROFILE = REPO / "profiles" / "slurm-local"
TIMEOUT_S = 1800  # hard limit per run (a stuck status poll must never hang CI); on 2 busy cores it takes ~5-15 min


def snakemake(env, *args, cwd=REPO):
    """Run snakemake in its own session; on timeout kill the whole process group (it may ignore SIGTERM)."""
    proc = subprocess.Popen(["snakemake", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"snakemake {' '.join(args)} timed out after {TIMEOUT_S} s:\n{stdout[-3000:]}\n{stderr[-5000:]}")
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}")
    return stdout + stderr


TABLE = "results/tables/metrics.csv"


def slurm_study(tmp_path: Path) -> Path:
    """The mini study cut to two grid points that still use every kind of cluster job (data, base, FID model,
    conversion, per-budget fine-tune, sample, merge, evaluate, table): each SLURM job pays two Snakemake starts."""
    config = yaml.safe_load(MINI.read_text())
    config["methods"] = {"dit": {"budgets": ["2"]}, "flexdit": config["methods"]["flexdit"]}
    path = tmp_path / "slurm-mini.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_study(env, workdir: Path, configfile: Path, *extra):
    return snakemake(env, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
                     str(configfile), "--replace-workflow-config", *extra, TABLE)


def test_mini_study_through_slurm_matches_local_run(venv_env, slurm_cluster, tmp_path):  # noqa: F811
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    configfile = slurm_study(tmp_path)
    for workdir, extra in [(local, ["--cores", "2"]), (cluster, ["--workflow-profile", str(PROFILE)])]:
        started = time.monotonic()
        output = run_study(venv_env, workdir, configfile, *extra)
        print(f"{workdir.name} run: {time.monotonic() - started:.0f} s")

    # the heavy jobs really went through SLURM, and every one of them completed there
    jobids = re.findall(r"SLURM jobid (\d+)", output)
    assert len(jobids) >= 5, output[-3000:]
    states = slurm_cluster.jobs()
    assert all(states.get(j) == "COMPLETED" for j in jobids), (jobids, states)
    assert list((cluster / ".snakemake" / "slurm_logs").rglob("*.log"))

    first, second = read_metrics_csv(local / TABLE), read_metrics_csv(cluster / TABLE)
    assert len(first) == 2
    # timings differ run to run; git_commit too where HEAD moves between the two runs (minutes apart)
    drop = [c for c in [*TIMING_COLUMNS, "git_commit"] if c in first.columns]
    pd.testing.assert_frame_equal(first.drop(columns=drop), second.drop(columns=drop))
