"""Killing a fine-tune under Snakemake (SIGTERM as SLURM sends it, then SIGKILL) and rerunning Snakemake completes
with no corrupt output and the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET = "results/checkpoints/dit-ft/ft~1.00/trained.pt"
STATE = "results/training/dit-ft/ft~1.00/state.pt"


def kill_config(tmp_path: Path) -> Path:
    """The mini study cut to the dit-ft fine-tune, long enough to be killed twice, with frequent states."""
    config = yaml.safe_load((REPO / "config/mini.yaml").read_text())
    config["methods"] = {"dit-ft": {"budgets": ["2"]}}
    config["finetune"] = {"train_gmacs": None, "steps": 400, "batch_size": 32, "lr": 0.001, "warmup_fraction": 0.05,
                          "schedule": "cosine", "ema_horizon": 0.1, "seed": 0, "checkpoint_every": 50}
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(env, workdir: Path, configfile: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["snakemake", "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
         str(configfile), "--replace-workflow-config", TARGET],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finetune_pid(workdir: Path) -> int | None:
    """The running `python -m ditpareto ... finetune` of this workdir (found through /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"ditpareto" in cmdline and b"finetune" in cmdline and Path(cwd) == workdir:
            return int(entry.name)
    return None


def saved_step(workdir: Path) -> int:
    try:
        return int(torch.load(workdir / STATE, weights_only=True)["step"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return 0


def wait_for(condition, what: str, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(job: subprocess.Popen) -> tuple[int, str]:
    out, _ = job.communicate(timeout=600)
    return job.returncode, out


@pytest.mark.slow
def test_sigterm_then_sigkill_then_rerun_gives_the_uninterrupted_weights(venv_env, tmp_path):
    configfile = kill_config(tmp_path)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    rc, out = finished(snakemake(venv_env, reference, configfile))
    assert rc == 0, out[-3000:]

    job = snakemake(venv_env, killed, configfile)  # 1: SIGTERM mid-run (state saved at that step, exit 143)
    pid = wait_for(lambda: finetune_pid(killed) if (killed / "results/training/dit-ft/ft~1.00/state.loss.csv").exists() else None,
                   "the fine-tune to log its first steps")
    os.kill(pid, signal.SIGTERM)
    rc, out = finished(job)
    assert rc != 0 and not (killed / TARGET).exists(), out[-3000:]
    first = saved_step(killed)
    assert 0 < first < 400

    job = snakemake(venv_env, killed, configfile)  # 2: SIGKILL after the next periodic state
    wait_for(lambda: saved_step(killed) > first, "a periodic state after the resume")
    pid = wait_for(lambda: finetune_pid(killed), "the resumed fine-tune")
    os.kill(pid, signal.SIGKILL)
    rc, out = finished(job)
    assert rc != 0 and not (killed / TARGET).exists(), out[-3000:]
    assert saved_step(killed) > first  # the state on disk is whole (atomic writes)

    rc, out = finished(snakemake(venv_env, killed, configfile))  # 3: resumes and completes
    assert rc == 0, out[-3000:]
    ours = torch.load(killed / TARGET, weights_only=True)
    theirs = torch.load(reference / TARGET, weights_only=True)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
