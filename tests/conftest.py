"""Shared fixtures: repository paths, an environment whose PATH has the venv, tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import ditpareto.compat  # noqa: F401
from ditpareto.cli import keep_freed_memory

keep_freed_memory()  # as every command does: the in-process tests run as fast, with the same numbers

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def venv_env() -> dict:
    """Environment for subprocesses: the running interpreter's bin dir first on PATH (as an activated venv)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Random values for every trainable parameter (DiT's init zeroes adaLN and the output layer)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture
def tiny_spec():
    from ditpareto.methods import ModelSpec

    return ModelSpec("dit-micro-2", 16, in_channels=1, num_classes=10)


@pytest.fixture
def tiny_model(tiny_spec):
    from ditpareto.models import build_dit

    torch.manual_seed(0)
    return randomize_(build_dit(tiny_spec.name, tiny_spec.image_size, **tiny_spec.overrides())).eval()


# ------------------------------------------------------------------------------ two-grid-point miniature study
TABLE = "results/tables/metrics.csv"


def snakemake_command(workdir: Path, configfile: Path, *extra) -> list[str]:
    return ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
            "--replace-workflow-config", *extra]


def run_snakemake(env, workdir: Path, configfile: Path, *extra, timeout: float = 1800) -> str:
    """``snakemake -s Snakefile --directory workdir --configfile ...`` in its own session; a run past ``timeout``
    is killed with its process group (a stuck status poll must never hang CI). Returns stdout + stderr."""
    import signal
    import subprocess

    proc = subprocess.Popen(snakemake_command(workdir, configfile, *extra), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"snakemake {' '.join(extra)} timed out after {timeout:.0f} s:\n{stdout[-3000:]}\n{stderr[-5000:]}")
    if proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(extra)} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}")
    return stdout + stderr


@pytest.fixture(scope="session")
def two_point_study(tmp_path_factory) -> Path:
    """config/mini.yaml cut to two grid points that still use every kind of cluster job (data, base, FID model,
    conversion, per-budget fine-tune, sample, merge, evaluate, table): the determinism and SLURM checks' study."""
    import yaml

    config = yaml.safe_load((REPO / "config/mini.yaml").read_text())
    flexdit = {k: v for k, v in config["methods"]["flexdit"].items() if k != "parity"}
    config["methods"] = {"dit": {"budgets": ["2"]}, "flexdit": flexdit}
    config["sampling"]["steps"] = [4]
    path = tmp_path_factory.mktemp("two-point") / "two-point.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def two_point_local_run(venv_env, two_point_study, tmp_path_factory) -> Path:
    """A local run (profiles/default, 2 cores) of the two-point study up to its table."""
    workdir = tmp_path_factory.mktemp("two-point-local")
    run_snakemake(venv_env, workdir, two_point_study, "--cores", "2", TABLE)
    return workdir


# Started first wherever tests/test_slurm.py runs (see its slurm_study_in_background): the SLURM study mostly waits
# on the executor's status polls, so the rest of the suite runs meanwhile.
SLURM_STARTER = "test_the_slurm_study_starts_in_the_background"


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.name != SLURM_STARTER)  # stable: every other test keeps its place


@pytest.fixture(scope="module")
def one_thread():
    """Torch at one thread for a module (restored after): small ops beside the background SLURM study."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
