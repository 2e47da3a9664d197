"""A miniature study through the SLURM executor on a throwaway local cluster gives the local run's table."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, TABLE, snakemake_command
from slurm_cluster import slurm_cluster  # noqa: F401 (fixture)

from ditpareto.results import TIMING_COLUMNS, read_metrics_csv

pytestmark = pytest.mark.slow

PROFILE = REPO / "profiles" / "slurm-local"


@pytest.fixture(scope="session")
def slurm_study_in_background(venv_env, slurm_cluster, two_point_study, tmp_path_factory):  # noqa: F811
    """The two-point study through the SLURM executor, started once and left running (its output in files: a full
    pipe would stall it); conftest orders the starter test first, so the ~20 s status-poll waves of its jobs overlap
    the rest of the suite. Killed with its process group at the end of the session if still running."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    log = (workdir.parent / "slurm-run.out").open("w")
    proc = subprocess.Popen(snakemake_command(workdir, two_point_study, "--workflow-profile", str(PROFILE), TABLE),
                            cwd=REPO, env=venv_env, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        yield proc, workdir, Path(log.name)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_the_slurm_study_starts_in_the_background(slurm_study_in_background):
    proc, _, _ = slurm_study_in_background
    assert proc.poll() in (None, 0)


def test_mini_study_through_slurm_matches_local_run(slurm_cluster, slurm_study_in_background,  # noqa: F811
                                                     two_point_local_run):
    proc, tmp_path, log = slurm_study_in_background
    try:
        rc = proc.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the SLURM study timed out:\n{log.read_text()[-3000:]}")
    output = log.read_text()
    assert rc == 0, output[-5000:]

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
