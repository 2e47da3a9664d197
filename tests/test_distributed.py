"""Data-parallel training: ``--nproc 2`` runs torchrun with two gloo processes on the CPU."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ditpareto.data import digits_draw, save_draw
from ditpareto.models import build_dit

MODEL = ["--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]
STEPS = 60


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A digits dataset and a converted dit-ft checkpoint (a plain DiT state dict)."""
    root = tmp_path_factory.mktemp("inputs")
    save_draw(digits_draw("train"), root / "digits.npz")
    torch.manual_seed(0)
    torch.save(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10).state_dict(), root / "converted.pt")
    return root


def finetune_cmd(inputs, run, nproc=2):
    return [sys.executable, "-m", "ditpareto", "--nproc", str(nproc), "--threads", "1", "finetune",
            "--method", "dit-ft", "--checkpoint", str(inputs / "converted.pt"), "--data", str(inputs / "digits.npz"), *MODEL,
            "--steps", str(STEPS), "--batch-size", "8", "--checkpoint-every", "10", "--state", str(run / "state.pt"),
            "--log-csv", str(run / "loss.csv"), "--out", str(run / "out.pt")]


def finetune(inputs, run):
    result = subprocess.run(finetune_cmd(inputs, run), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return torch.load(run / "out.pt", weights_only=True), result


def in_process(cmd):
    """Run a ``python -m ditpareto`` command line in this process (its --threads undone afterwards)."""
    from ditpareto.cli import main

    threads = torch.get_num_threads()
    try:
        main(cmd[3:])
    finally:
        torch.set_num_threads(threads)


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """One uninterrupted 2-process fine-tune: (run folder, weights, completed process)."""
    run = tmp_path_factory.mktemp("reference")
    weights, result = finetune(inputs, run)
    return run, weights, result


def test_two_processes_train_write_once_and_a_rerun_trains_again(inputs, reference):
    run, weights, result = reference
    assert "data-parallel in 2 processes" in result.stderr
    assert result.stdout.count('"out":') == 1  # only rank 0 reports (and writes)
    assert not list(run.glob("*.tmp"))
    base = torch.load(inputs / "converted.pt", weights_only=True)
    assert weights.keys() == base.keys() and not same(weights, base)
    assert not (run / "state.pt").exists()  # retired once the outputs are written
    state = torch.load(run / "state.pt.done", weights_only=True)
    assert state["step"] == STEPS and state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["cpu"], state["rng"][1]["cpu"])  # each rank has its own stream
    steps = [int(line.split(",")[0]) for line in (run / "loss.csv").read_text().splitlines()[1:]]
    assert steps == [50, STEPS]

    again, result = finetune(inputs, run)  # a forced rerun trains again (never "resumes" a finished run)
    assert "resumed from" not in result.stderr
    assert same(again, weights)  # deterministic


def test_sigterm_to_the_job_saves_state_and_a_rerun_ends_with_the_uninterrupted_weights(
        inputs, reference, tmp_path):
    job = subprocess.Popen(finetune_cmd(inputs, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    state = tmp_path / "state.pt"
    while job.poll() is None and not state.exists():
        time.sleep(0.02)  # until the first periodic checkpoint (step 10): training is under way
    os.killpg(job.pid, signal.SIGTERM)  # the job's process group (torchrun, which the command became), as SLURM
    _, err = job.communicate(timeout=120)
    assert job.returncode == 1, err  # torchrun's status for a failed or stopped worker
    assert "state saved at step" in err and not (tmp_path / "out.pt").exists()
    saved = torch.load(state, weights_only=True)["step"]
    assert 10 <= saved < STEPS
    weights, _ = finetune(inputs, tmp_path)  # the rerun resumes
    assert same(weights, reference[1])  # and equals another launch's uninterrupted run: deterministic, too
    steps = [int(line.split(",")[0]) for line in (tmp_path / "loss.csv").read_text().splitlines()[1:]]
    assert steps == [50, STEPS]


def test_a_state_from_another_process_count_is_set_aside(inputs, reference, tmp_path):
    run, weights, _ = reference
    state = torch.load(run / "state.pt.done", weights_only=True)
    torch.save(state, tmp_path / "state.pt")  # a finished 2-process state, rerun with one process
    in_process(finetune_cmd(inputs, tmp_path, nproc=1))
    # set aside, trained from step 0, and the set-aside state pruned once the run completed
    assert not (tmp_path / "state.pt.stale").exists()
    assert torch.load(tmp_path / "state.pt.done", weights_only=True)["world_size"] == 1
    assert not same(torch.load(tmp_path / "out.pt", weights_only=True), weights)


def test_only_rank_0_writes(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    cmd = finetune_cmd(inputs, tmp_path, nproc=1)
    cmd[cmd.index("--steps") + 1] = "2"
    in_process(cmd)
    assert not list(tmp_path.iterdir())  # no weights, state or loss curve
    assert capsys.readouterr().out == ""


def test_batch_size_must_divide_over_the_processes(inputs, tmp_path, monkeypatch):
    from ditpareto.errors import InputError
    from ditpareto.train import TrainConfig, run_training

    monkeypatch.setenv("WORLD_SIZE", "3")
    model = build_dit("dit-micro-2", 16, in_channels=1, num_classes=10)
    with pytest.raises(InputError, match="batch size 8 is not divisible by the 3 processes"):
        run_training(model, torch.zeros(4, 1, 16, 16), torch.zeros(4, dtype=torch.long), TrainConfig(batch_size=8),
                     tmp_path / "s.pt", tmp_path / "l.csv")


def test_a_method_with_routers_trains_data_parallel_deterministically(inputs, tmp_path):
    """DyDiT's loss runs the sliced forward and leaves parameters unused on some steps and ranks: the
    DistributedDataParallel loss wrapper averages what each rank used, and two launches give the same weights."""
    converted = tmp_path / "dydit.pt"
    subprocess.run([sys.executable, "-m", "ditpareto", "convert", "--method", "dydit", "--base",
                    str(inputs / "converted.pt"), *MODEL, "--out", str(converted)], check=True, capture_output=True)
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        cmd = [sys.executable, "-m", "ditpareto", "--nproc", "2", "--threads", "1", "finetune", "--method", "dydit",
               "--budget", "0.50", "--options", '{"mlp_groups": 2, "hold_steps": 0, "ramp_steps": 4}',
               "--checkpoint", str(converted), "--data", str(inputs / "digits.npz"), *MODEL, "--steps", "12",
               "--batch-size", "8", "--state", str(run / "state.pt"), "--log-csv", str(run / "loss.csv"),
               "--out", str(run / "out.pt")]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(torch.load(run / "out.pt", weights_only=True))
    start = torch.load(converted, weights_only=True)
    assert same(runs[0], runs[1])
    routers = [k for k in runs[0] if "router" in k]
    assert routers and any(not torch.equal(runs[0][k], start[k]) for k in routers)
