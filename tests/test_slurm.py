"""A miniature study through the SLURM executor on a throwaway local cluster gives the local run's table."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TABLE, run_snakemake
from slurm_cluster import slurm_cluster  # noqa: F401 (fixture)

from ditpareto.results import TIMING_COLUMNS, read_metrics_csv

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm-local"


def test_mini_study_through_slurm_matches_local_run(venv_env, slurm_cluster, two_point_study,  # noqa: F811
                                                     two_point_local_run, tmp_path):
    started = time.monotonic()
    output = run_snakemake(venv_env, tmp_path, two_point_study, "--workflow-profile", str(PROFILE), TABLE)
    print(f"SLURM run: {time.monotonic() - started:.0f} s")

    # the heavy jobs really went through SLURM, and every one of them completed there
    jobids = re.findall(r"SLURM jobid (\d+)", output)
    assert len(jobids) >= 5, output[-3000:]
    states = slurm_cluster.jobs()
    assert all(states.get(j) == "COMPLETED" for j in jobids), (jobids, states)
    assert list((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))

    first, second = read_metrics_csv(two_point_local_run / TABLE), read_metrics_csv(tmp_path / TABLE)
    assert len(first) == 2
    # timings differ run to run; git_commit too where HEAD moves between the two runs (minutes apart); the base each
    # run pretrains differs in the last bits (SLURM jobs get other thread counts: max |dw| ~1e-7), so the checkpoint
    # files' sha256 differ while the uint8 samples and every metric agree
    drop = [c for c in [*TIMING_COLUMNS, "git_commit", "checkpoint_sha256"] if c in first.columns]
    pd.testing.assert_frame_equal(first.drop(columns=drop), second.drop(columns=drop))
