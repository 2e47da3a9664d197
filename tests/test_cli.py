"""Bad input fails before any compute, with one message naming the problem, and writes nothing."""

import inspect
import os
import subprocess
import sys

import pytest
import torch

from ditpareto import cli
from ditpareto.models import build_dit

MODEL = ["--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ditpareto", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def good_checkpoint(tmp_path):
    path = tmp_path / "good.pt"
    torch.save(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10).state_dict(), path)
    return path


def _sample_args(tmp_path, checkpoint, method="dit", budget="4"):
    return ["sample", "--method", method, "--budget", budget, "--seed", "0", "--checkpoint", str(checkpoint),
            *MODEL, "--num-samples", "4", "--batch-size", "4", "--steps", "4",
            "--out", str(tmp_path / "s.npz"), "--record", str(tmp_path / "s.json")]


def _bad_checkpoints(tmp_path, good):
    state = torch.load(good, weights_only=True)
    cases = {}
    missing = dict(state)
    missing.pop("blocks.1.attn.qkv.weight")
    cases["missing keys [blocks.1.attn.qkv.weight]"] = missing
    misshaped = dict(state)
    misshaped["final_layer.linear.weight"] = torch.zeros(3, 32)
    cases["mis-shaped [final_layer.linear.weight"] = misshaped
    extra = dict(state, **{"blocks.9.mlp.fc1.weight": torch.zeros(1)})
    cases["unexpected keys [blocks.9.mlp.fc1.weight]"] = extra
    cases["holds a list, not a state dict"] = [torch.zeros(1)]
    paths = {}
    for i, (message, obj) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.pt"
        torch.save(obj, path)
        paths[message] = path
    truncated = tmp_path / "truncated.pt"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    paths["cannot be read"] = truncated
    return paths


def test_bad_checkpoints_fail_with_one_message(tmp_path, good_checkpoint):
    for message, path in _bad_checkpoints(tmp_path, good_checkpoint).items():
        result = run_cli(*_sample_args(tmp_path, path))
        assert result.returncode == 2, (message, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (message, result.stderr)
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize(
    "method, budget, message",
    [("dit", "0", "out of range"), ("dit", "1001", "out of range"), ("dit", "x", "integer step count"),
     ("flexo", "4", "invalid choice: 'flexo'"), ("dit", "4+euler", "names sampler 'euler'")],
)
def test_bad_method_or_budget(tmp_path, good_checkpoint, method, budget, message):
    result = run_cli(*_sample_args(tmp_path, good_checkpoint, method, budget))
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "s.npz").exists()


def test_missing_checkpoint_names_path(tmp_path):
    result = run_cli(*_sample_args(tmp_path, tmp_path / "nope.pt"))
    assert result.returncode == 2 and "nope.pt does not exist" in result.stderr


def test_import_base_checks_sha256(tmp_path, good_checkpoint):
    out = tmp_path / "base.pt"
    result = run_cli("import-base", *MODEL, "--checkpoint", str(good_checkpoint), "--sha256", "0" * 64,
                     "--out", str(out))
    assert result.returncode == 2 and "has sha256" in result.stderr and not out.exists()
    from ditpareto.results import sha256_of

    result = run_cli("import-base", *MODEL, "--checkpoint", str(good_checkpoint), "--sha256",
                     sha256_of(good_checkpoint), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == good_checkpoint.read_bytes()


def test_every_command_has_help(capsys):
    from ditpareto.cli import build_parser
    from ditpareto.commands import commands

    result = run_cli("--help")  # the entry point itself, once
    assert result.returncode == 0 and all(command.name in result.stdout for command in commands())
    parser = build_parser()
    for command in commands():
        with pytest.raises(SystemExit) as done:
            parser.parse_args([command.name, "--help"])
        assert done.value.code == 0 and "example:" in capsys.readouterr().out, command.name
        # the whole first sentence, never cut at a line break
        first = " ".join(inspect.getdoc(command.step).split("\n\n")[0].split())
        assert command.help.endswith(".") and first.startswith(command.help), command.name


def test_finetuned_static_dit_trains_in_official_layout_and_resumes_only_same_run(tmp_path, good_checkpoint):
    data = tmp_path / "digits.npz"
    assert run_cli("prepare-data", "--dataset", "digits", "--image-size", "16", "--out", str(data)).returncode == 0

    def finetune(out, lr):
        args = ["finetune", "--method", "dit-ft", "--checkpoint", str(good_checkpoint), "--data", str(data), *MODEL,
                "--steps", "3", "--batch-size", "8", "--lr", lr, "--state", str(tmp_path / "state.pt"),
                "--log-csv", str(tmp_path / "loss.csv"), "--out", str(tmp_path / out)]
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        return torch.load(tmp_path / out, weights_only=True), result.stderr

    base = torch.load(good_checkpoint, weights_only=True)
    first, _ = finetune("a.pt", "0.001")
    assert first.keys() == base.keys()  # loads as a plain DiT: the sampling stage is the static baseline's
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], base["blocks.0.attn.qkv.weight"])
    # a rerun with another learning rate must not reuse the finished state of the first run: it was retired
    assert not (tmp_path / "state.pt").exists() and (tmp_path / "state.pt.done").exists()
    second, log = finetune("b.pt", "0.0001")
    assert "resumed from" not in log
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], second["blocks.0.attn.qkv.weight"])


def test_threads_hold_every_blas_pool(monkeypatch):
    """--threads N holds numpy's and scipy's BLAS to N too: their default of one thread per core made two
    one-thread jobs side by side oversubscribe the cores."""
    import scipy.linalg  # noqa: F401  (its own OpenBLAS)
    from threadpoolctl import threadpool_info

    from ditpareto.cli import limit_threads
    from ditpareto.latency import machine

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        with limit_threads(1):
            pools = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
            assert len(pools) >= 2 and set(pools) == {1}  # numpy's and scipy's
            assert machine()["blas_threads"] == 1 and torch.get_num_threads() == 1
            assert all(os.environ[name] == "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    finally:
        torch.set_num_threads(before)


def test_table_commands_never_load_torch_and_torch_loaded_later_keeps_the_thread_limit(tmp_path):
    """Every job pays its imports (torch: ~1.3 s): the merge and table jobs load none of torch, and a step that
    imports torch after ``--threads`` was applied still runs on that many threads."""
    import subprocess
    import sys

    table_command = ("import sys\nfrom ditpareto.cli import main\ntry:\n    main(['--threads', '1', 'summary', "
                     f"'--verdicts', {str(tmp_path / 'none.csv')!r}, '--out', 'x.md', '--scale', 'toy'])\n"
                     "except SystemExit as exc:\n    assert exc.code == 2\n"
                     "print(sorted(m for m in ('torch', 'torchvision', 'torch_fidelity') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", table_command], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]
    late_torch = ("from ditpareto.cli import limit_threads\nwith limit_threads(1):\n    import torch\n"
                  "    print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", late_torch], capture_output=True, text=True, env=env)
    assert result.stdout.strip() == "1", result.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("kept", [False, True])
def test_every_command_keeps_freed_memory_for_reuse(kept):
    """A freed 16 MiB block goes back to the kernel by default (the next tensor of that size is faulted in again,
    page by page); every command sets glibc to keep it."""
    probe = ("import ctypes, sys\nfrom ditpareto.cli import keep_freed_memory\n"
             f"assert keep_freed_memory() if {kept} else True\n"
             "libc = ctypes.CDLL('libc.so.6')\nlibc.malloc.restype = ctypes.c_void_p\n"
             "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096\n"
             "block = libc.malloc(16 << 20)\nctypes.memset(block, 1, 16 << 20)\nbefore = rss()\n"
             "libc.free(ctypes.c_void_p(block))\nprint(before - rss() > 8 << 20)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == str(not kept), result.stderr[-2000:]
    assert "keep_freed_memory()" in inspect.getsource(cli.main)


def test_a_sample_record_names_its_blas_threads(tmp_path, good_checkpoint):
    import json

    done = run_cli("--threads", "1", *_sample_args(tmp_path, good_checkpoint))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "s.json").read_text())["machine"]["blas_threads"] == 1


def test_a_command_imports_only_its_own_step():
    """A job pays for its own step's imports: merge-samples and sample build without torch-fidelity and
    torchvision (a second per job); a misspelt command still lists every command."""
    for command in ("merge-samples", "sample"):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ditpareto", command, "--help"],
                              capture_output=True, text=True)
        assert done.returncode == 0 and "example:" in done.stdout, done.stderr[-500:]
        assert "torch_fidelity" not in done.stderr and "ditpareto.jobs.metrics" not in done.stderr, command
    typo = run_cli("merge-sample")
    assert typo.returncode == 2 and "merge-samples" in typo.stderr and "evaluate" in typo.stderr


def test_the_cli_table_in_the_docs_names_every_command():
    from pathlib import Path

    from ditpareto.commands import commands

    text = (Path(__file__).resolve().parents[1] / "docs/usage.md").read_text()
    named = {name.strip("`") for line in text.splitlines() if line.startswith("| `")
             for name in line.split("|")[1].strip().split(" / ")}
    assert {c.name for c in commands()} <= named


def test_every_flag_default_is_its_steps_default_and_its_help_says_it():
    """A default is declared by the step's signature; a flag that repeats it must agree (train-extractor --steps once
    said 600 while the step and the schema said 1500). No help text types a default: the formatter appends each
    flag's own, so a help line cannot drift from it."""
    import argparse
    import inspect

    from ditpareto.cli import DefaultsFormatter
    from ditpareto.commands import commands

    drift, typed, shown = [], [], 0
    for command in commands():
        parser = argparse.ArgumentParser(formatter_class=DefaultsFormatter)
        command.add_args(parser)
        formatter = parser._get_formatter()
        params = inspect.signature(command.step).parameters
        for action in parser._actions:
            default = action.default
            declared = params[action.dest].default if action.dest in params else inspect.Parameter.empty
            if declared is not inspect.Parameter.empty and not action.required:
                same = (list(default) if isinstance(default, tuple) else default) == \
                    (list(declared) if isinstance(declared, tuple) else declared)
                if not same and not (default is None and declared in ((), [])):
                    drift.append(f"{command.name} --{action.dest}: flag {default!r}, step {declared!r}")
            if "(default" in (action.help or ""):
                typed.append(f"{command.name} --{action.dest}")
            if action.option_strings and not action.required and default not in (None, False, [], "==SUPPRESS=="):
                text = formatter._get_help_string(action) % {"default": default}
                value = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
                assert text.endswith(f"(default: {value})"), (command.name, action.dest, text)
                shown += 1
    assert not drift, drift
    assert not typed, typed
    assert shown > 40


@pytest.mark.parametrize("command, settings", [("pretrain", "TrainConfig"), ("finetune", "FinetuneRecipe"),
                                               ("sample", "SamplingSettings"), ("latency", "SamplingSettings"),
                                               ("evaluate", "MetricFields"), ("calibrate", "MetricFields")])
def test_settings_flags_are_generated_from_their_dataclass(command, settings):
    """The training, fine-tuning, sampling and metric flags are the settings dataclasses' fields: same default, same
    help, same choices (one declaration each; a field's ``flag`` names its flag where it differs)."""
    import argparse
    import dataclasses

    from ditpareto import study
    from ditpareto.commands import commands

    parser = argparse.ArgumentParser()
    next(c for c in commands() if c.name == command).add_args(parser)
    actions = {a.dest: a for a in parser._actions}
    dest = {f.name: f.metadata.get("flag", f.name).replace("-", "_") for f in dataclasses.fields(getattr(study, settings))}
    fields = [f for f in dataclasses.fields(getattr(study, settings)) if "help" in f.metadata and dest[f.name] in actions]
    assert len(fields) >= 2
    for f in fields:
        action = actions[dest[f.name]]
        assert action.help == f.metadata["help"], f.name
        assert action.required if f.metadata.get("required") else action.default == f.default, f.name
        assert action.choices is None or list(action.choices) == list(f.metadata["choices"])
