"""The Snakemake workflow: formatting, lint, dry-runs of every config, and a miniature end-to-end run."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import TABLE, run_snakemake
from ditpareto.results import TIMING_COLUMNS, read_metrics_csv
from ditpareto.spec import FINETUNE_MODES
from ditpareto.study import budget_steps, grid_points

REPO = Path(__file__).resolve().parents[1]
# Paper configs name inputs the user provides: tests/test_paper.py plans them with placeholders.
CONFIGS = sorted(p for p in (REPO / "config").glob("*.yaml") if not p.name.startswith(("paper-", "video")))
VIDEO_CONFIGS = [REPO / "config" / "video.yaml"]  # video-mini.yaml runs for real (tests/test_video.py)
MINI = REPO / "config" / "mini.yaml"


def snakemake(env, *args, cwd=REPO, check=True):
    result = subprocess.run(["snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def run_study(env, workdir: Path, configfile: Path = MINI, *extra, check=True):
    return snakemake(env, "--cores", "2", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
                     "--configfile", str(configfile), "--replace-workflow-config", *extra, check=check)


def test_snakefmt_check(venv_env):
    result = subprocess.run(["snakefmt", "--check", "."], cwd=REPO, env=venv_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_lint(venv_env):
    result = snakemake(venv_env, "--lint", "--configfile", str(MINI), "--replace-workflow-config", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("configfile", CONFIGS, ids=lambda p: p.name)
def test_dry_run(venv_env, tmp_path, configfile):
    result = run_study(venv_env, tmp_path, configfile, "-n")
    assert "sample" in result.stdout and "notebook_pareto" in result.stdout


@pytest.mark.parametrize("configfile", VIDEO_CONFIGS, ids=lambda p: p.name)
def test_video_dry_run(venv_env, tmp_path, configfile):
    """A video config plans the video rules (sample_video, evaluate_video, video_figures) and none of the image
    study's."""
    result = run_study(venv_env, tmp_path, configfile, "-n")
    assert all(rule in result.stdout for rule in ("sample_video", "evaluate_video", "video_figures"))
    assert "notebook_pareto" not in result.stdout


def test_a_budget_without_a_recorded_scale_stops_planning_with_one_line_and_the_ways_forward(venv_env, tmp_path):
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["methods"]["flexidit"]["budgets"].append("0.60")
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(config))
    result = run_study(venv_env, tmp_path / "study", edited, "-n", check=False)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ditpareto:")]
    assert len(lines) == 1 and "no scale for 2 grid point(s): flexidit/0.60/10/1.00" in lines[0]
    assert "either record the missing scales" in lines[0] and "remove sampling.cfg_recorded" in lines[0]
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr


def test_a_config_file_naming_a_key_twice_stops_planning_with_one_line(venv_env, tmp_path):
    text = (REPO / "config/config.yaml").read_text().replace("device: cpu\n", "device: cpu\ndevice: cuda\n", 1)
    edited = tmp_path / "twice.yaml"
    edited.write_text(text)
    result = run_study(venv_env, tmp_path / "study", edited, "-n", check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ditpareto:")]
    assert result.returncode != 0 and len(lines) == 1, result.stderr[-2000:]
    assert f"config file {edited} names 'device' twice in one mapping (line" in lines[0]


def test_cpu_full_plans_cfg_selection_on_a_held_out_seed_and_fine_tune_seed_repeats(venv_env, tmp_path):
    full = yaml.safe_load((REPO / "config/cpu-full.yaml").read_text())
    config, noise = full["sampling"], full["finetune"]["seed_noise"]
    selection = config["cfg_selection"]
    result = run_study(venv_env, tmp_path, REPO / "config/cpu-full.yaml", "-n", "-p")
    tunes = [line for line in result.stdout.splitlines() if "python -m ditpareto" in line and " finetune " in line]
    for method, budget in noise["budgets"].items():
        for seed in noise["seeds"]:
            run = [t for t in tunes if f"--method {method} " in t and f"ft~1.00s{seed}/" in t]
            assert len(run) == 1 and f" --seed {seed} " in run[0], (method, budget, seed)
    assert "select_cfg" in result.stdout
    commands = [line for line in result.stdout.splitlines() if "python -m ditpareto" in line and " sample " in line]
    held_out = [c for c in commands if f"--seed {selection['seed']} " in c]
    assert held_out and all(f"--num-samples {selection['num_samples']} " in c for c in held_out)
    assert all(f"--num-samples {config['num_samples']} " in c for c in commands if c not in held_out)
    assert {f"--cfg-scale {s:.2f}" for s in selection["scales"]} <= {
        c[c.index("--cfg-scale"):].split(" --")[0] for c in held_out}
    latency = next(line for line in result.stdout.splitlines() if " latency --points " in line)
    timed = json.loads(shlex.split(latency[latency.index(" --points ") + 1:])[1])
    assert timed and {p["ft"] for p in timed} <= {"0.00", "1.00"}  # plateau and seed repeats: same work, not timed


def test_recorded_scales_plan_each_point_at_its_own_scale_and_the_selected_verdicts(venv_env, tmp_path):
    """sampling.cfg_recorded (the default's guidance): every sample job at its point's recorded scale, select-cfg
    scores the recorded table, the verdicts and figures read the selected scales."""
    import hashlib

    from ditpareto.study import guidance_keys, point_dependencies

    config = yaml.safe_load(MINI.read_text())
    config["sampling"].pop("cfg_selection", None)
    scales = {key: 1.25 + 0.25 * (i % 3) for i, key in enumerate(guidance_keys(config))}
    table = tmp_path / "recorded.csv"
    table.write_text("method,budget,steps,ft,cfg_selected,fid_selection,selection_samples,selection_seed,scales,"
                     "cfg_at_edge,checkpoint_sha256,sampler,train_gmacs\n" +
                     "".join(f"{m},{b},{n},{ft},{s},5.0,500,4095,1.25 1.5 1.75,False,,"
                             f"{point_dependencies(config, m, b)['sampler']},"
                             f"{point_dependencies(config, m, b)['train_gmacs']}\n"
                             for (m, b, n, ft), s in scales.items()))
    config["sampling"]["cfg_recorded"] = {"table": str(table), "sha256": hashlib.sha256(table.read_bytes()).hexdigest()}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = run_study(venv_env, tmp_path / "study", configfile, "-n", "-p")
    lines = [line for line in result.stdout.splitlines() if "python -m ditpareto" in line]
    planned = set()
    for line in (x for x in lines if " sample " in x):
        words = shlex.split(line[line.index("python -m ditpareto"):])
        flag = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
        budget = flag.get("--budget", flag["--steps"])
        planned.add(((words[words.index("--method") + 1], budget, int(flag["--steps"]), flag["--ft"]),
                     float(flag["--cfg-scale"])))
    assert set(scales.items()) <= planned
    for (method, budget, steps, ft), scale in planned - set(scales.items()):
        # a cfg_sweep scale, or a plateau fine-tune at the scale of the study's own fine-tune there
        own = scales[(method, budget, steps, "1.00")]
        assert scale in config["methods"][method].get("cfg_sweep", []) or (ft != "1.00" and scale == own)
    select = next(x for x in lines if " select-cfg " in x)
    assert f"--recorded {table}" in select and "--sha256" in select
    assert "--guidance selected" in next(x for x in lines if " verdicts " in x)


STUB_CONDA = """#!/bin/sh
# conda's answers to what Snakemake asks before it creates environments (no conda on the test machines)
case "$*" in
  "info --json") echo '{"conda_prefix": "%(prefix)s", "platform": "linux-64", "envs_dirs": ["%(prefix)s/envs"]}' ;;
  "--version") echo "conda 24.11.3" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}' ;;
  *) echo "stub conda was asked: $*" >&2; exit 1 ;;
esac
"""


def test_conda_deployment_plans_every_rule_with_the_environment_file(venv_env, tmp_path):
    """`--sdm conda`: every rule's `conda:` names envs/ditpareto.yaml, which parses; jobs import ditpareto from the
    checkout (the workflow's shell prefix puts src/ on PYTHONPATH), so the environment needs only third-party
    packages. Creating the environment needs conda and the network: not tested here."""
    stub = tmp_path / "bin" / "conda"
    stub.parent.mkdir()
    stub.write_text(STUB_CONDA % {"prefix": tmp_path / "conda"})
    stub.chmod(0o755)
    env = {**venv_env, "PATH": f"{stub.parent}:{venv_env['PATH']}"}
    result = run_study(env, tmp_path / "study", MINI, "-n", "--sdm", "conda")
    assert "envs/ditpareto.yaml will be created" in result.stdout + result.stderr
    assert "sample" in result.stdout
    environment = yaml.safe_load((REPO / "envs/ditpareto.yaml").read_text())
    assert "pytorch =2.13.0" in environment["dependencies"]


def test_the_conda_environment_holds_every_runtime_dependency_at_the_tested_version():
    """envs/ditpareto.yaml (the jobs' environment under --sdm conda) lists every runtime dependency of the library
    (pyproject.toml, unpinned) at the version envs/constraints.txt pins (what ./setup.sh installs and CI tests)."""
    import tomllib

    def name(text):
        return re.split(r"[=<>! ]", text.strip(), maxsplit=1)[0].lower().replace("_", "-")

    pins = {name(line): line.split("==")[1].strip() for line in (REPO / "envs/constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    conda = {}
    for entry in yaml.safe_load((REPO / "envs/ditpareto.yaml").read_text())["dependencies"]:
        for item in entry["pip"] if isinstance(entry, dict) else [entry]:
            if "=" in item:
                conda[{"pytorch": "torch"}.get(name(item), name(item))] = re.split(r"==?", item)[-1].strip()
    runtime = {name(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert runtime - set(conda) == set(), "missing from envs/ditpareto.yaml"
    assert {k: v for k, v in conda.items() if k in pins and pins[k] != v} == {}, "versions differ from constraints"
    assert "snakemake" not in runtime and "torchvision" in conda


@pytest.mark.parametrize("entry", [[], ["-s", "workflow/Snakefile"]], ids=["root Snakefile", "workflow/Snakefile"])
def test_the_test_directory_plans_the_miniature_study(venv_env, entry):
    """The catalog convention: from the repository root, `snakemake --directory .test` reads
    `.test/config/config.yaml` (the miniature study) and plans into `.test/`, started from either Snakefile."""
    assert (REPO / ".test/config/config.yaml").read_text() == MINI.read_text()
    code = [line for line in (REPO / "Snakefile").read_text().splitlines() if line and not line.startswith("#")]
    assert code == ['workflow.include("workflow/Snakefile", overwrite_default_target=True)']  # an entry, no more
    result = snakemake(venv_env, *entry, "-n", "--cores", "2", "--directory", ".test")
    assert "sample" in result.stdout and "notebook_pareto" in result.stdout
    assert "profiles/default" in result.stdout + result.stderr  # the workflow profile applies either way


@pytest.fixture(scope="module")
def mini_run(venv_env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mini")
    run_study(venv_env, workdir)
    return workdir


def mini_grid():
    from test_config import with_defaults

    config = with_defaults(yaml.safe_load(MINI.read_text()))
    return sorted((p.method, p.budget, p.steps, p.ft, float(p.cfg), p.seed) for p in grid_points(config))


def test_mini_run_writes_table_and_figure(mini_run):
    table = read_metrics_csv(mini_run / "results/tables/metrics.csv")
    keys = zip(table["method"], table["budget"], table["steps"], table["ft"], table["cfg_scale"], table["seed"])
    assert sorted(keys) == mini_grid()
    assert {"full@0.50", "full@0.61-0.86", "0.00"} <= set(table["budget"])  # parity points
    assert set(table["ft"]) == {"0.00", "0.50", "1.00"}  # untouched base, plateau and shared fine-tunes
    assert table["cfg_scale"].nunique() > 1  # the mini config sweeps guidance for one method
    metric_cols = ["fid", "kid_mean", "inception_score_mean", "precision", "recall", "gmacs_per_call",
                   "gmacs_per_image"]
    assert np.isfinite(table[metric_cols].to_numpy(dtype=float)).all()
    # the latency job times the study's own fine-tunes once per compute, at the fixed scale; a swept guided scale
    # does the same work and takes that timing; a plateau fine-tune does the same work and is not timed again
    plateau = table["ft"] == "0.50"
    swept = (table["method"] == "flexidit") & (table["cfg_scale"] == 3.0)
    assert np.isfinite(table.loc[~plateau, "latency_ms_per_image"].to_numpy(dtype=float)).all()
    assert table.loc[plateau, "latency_ms_per_image"].isna().all() and swept.any()
    neighbour = table[(table["method"] == "flexidit") & (table["cfg_scale"] == 2.0) & ~plateau]
    assert set(table.loc[swept & ~plateau, "latency_ms_per_image"]) <= set(neighbour["latency_ms_per_image"])
    # executed FLOPs scale with the step count; per-call cost is the same network
    by_budget = table[table["method"] == "dit"].set_index("budget")
    assert (by_budget["steps"] == [budget_steps(b) for b in by_budget.index]).all()  # dit's budget: its step count
    assert by_budget.loc["4", "gmacs_per_image"] == pytest.approx(2 * by_budget.loc["2", "gmacs_per_image"])
    # the sampler axis: the same network calls with DPM-Solver++(2M), other samples
    assert by_budget.loc["4+dpmpp-2m", "gmacs_per_image"] == by_budget.loc["4", "gmacs_per_image"]
    assert by_budget.loc["4+dpmpp-2m", "fid"] != by_budget.loc["4", "fid"]
    assert by_budget.loc["4", "gmacs_per_call"] == pytest.approx(by_budget.loc["2", "gmacs_per_call"])
    assert (mini_run / "results/figures/pareto_fid_vs_gmacs.pdf").stat().st_size > 1000
    frozen = table["method"].map(FINETUNE_MODES) == "none"  # dit and the training-free baselines
    assert (table.loc[~frozen, "train_gmacs"] > 0).all() and (table.loc[frozen, "train_gmacs"] == 0).all()
    assert {"tome", "fora", "l2c"} <= set(table["method"])  # the baselines on the same grid
    pairs = pd.read_csv(mini_run / "results/tables/dominance.csv")  # where each beats each, other samplers too
    assert {"tome", "fora", "l2c", "dit+dpmpp-2m"} <= set(pairs["series"]) | set(pairs["other_series"])
    comparator = pd.read_csv(mini_run / "results/tables/comparisons.csv").groupby("method")["comparator"].first()
    assert comparator["fora"] == "dit" and comparator["l2c"] == "dit-ft"
    for rule in ["sample", "evaluate", "pretrain", "train_extractor", "calibrate", "reference",
                 "finetune"]:
        assert list((mini_run / "results/benchmarks" / rule).rglob("*.tsv")), rule
    assert all(log.stat().st_size >= 0 for log in (mini_run / "logs").rglob("*.log"))


def test_a_notebook_opened_in_notebooks_finds_the_study_with_its_defaults(mini_run, tmp_path):
    """Jupyter starts in notebooks/: the pareto notebook run there with its own defaults finds the study above."""
    import shutil

    import papermill

    for name in ("results/tables/metrics.csv", "results/metrics/reference.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mini_run / name, tmp_path / name)
    (tmp_path / "notebooks").mkdir()
    papermill.execute_notebook(str(REPO / "notebooks/pareto.ipynb"), str(tmp_path / "executed.ipynb"),
                               kernel_name="python3", progress_bar=False, cwd=str(tmp_path / "notebooks"))
    assert (tmp_path / "results/figures/pareto_fid_vs_gmacs.png").stat().st_size > 1000


FIGURES = ["pareto_fid_vs_gmacs.png", "plateau_fid_vs_train_gmacs.png", "fid_vs_latency.png", "measured_vs_nominal_compute.png",
           "claims_relative.png", "sample_grid.png"]


def test_notebooks_ran_headless_and_wrote_nonblank_figures(mini_run):
    for name in ["pareto", "latency", "claims", "samples"]:
        executed = nbformat.read(mini_run / "results/notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, (name, errors)
        tracked = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        assert all(not c.get("outputs") for c in tracked.cells if c.cell_type == "code"), f"{name}: outputs in git"
    for figure in FIGURES:
        pixels = np.asarray(Image.open(mini_run / "results/figures" / figure).convert("L"), dtype=float)
        assert pixels.shape[0] > 100 and pixels.std() > 5, figure  # not blank


def test_html_report_has_every_figure_and_the_table(venv_env, mini_run):
    report = mini_run / "report.html"
    run_study(venv_env, mini_run, MINI, "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000
    for name in [*FIGURES, "metrics.csv"]:
        assert name in html, name
    # the verdict ledger is embedded as an HTML table, shown inline, under the first category
    import base64
    import re

    embedded = re.search(r"data:text/html;charset=utf8;filename=verdicts\.html;base64,([A-Za-z0-9+/=]+)", html)
    assert embedded, "verdicts.html is not embedded"
    table = base64.b64decode(embedded.group(1)).decode()
    assert "<table" in table and "beats fewer steps" in table
    assert "1. The answer" in html
    # the landing page itself holds the answer in three lines and the ledger as a table (results/answer.html)
    assert "ditpareto-answer" in html and "Beats the static DiT with fewer steps" in html
    assert "class='ditpareto-ledger'" in html and "not here yet" not in html


def test_rerun_does_no_work(venv_env, mini_run):
    result = run_study(venv_env, mini_run, MINI, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.parametrize("profile", ["default", "slurm", "slurm-local"])
def test_every_profile_redoes_jobs_cut_off_by_a_killed_snakemake(profile):
    """Without it a rerun after `kill -9` of Snakemake stops with IncompleteFilesException (README: "Interrupted,
    forced and concurrent runs")."""
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert settings["rerun-incomplete"] is True
    assert {"mtime", "params", "input", "code"} <= set(settings["rerun-triggers"])


def test_shipped_fine_tunes_regenerate_and_import_as_trained(venv_env, mini_run, tmp_path):
    """The miniature of the shipping path: the mini study's own fine-tunes (its `finetune` rule at the shared budget,
    and per budget) are collected as a shipped folder, sha256-pinned in the config, and a study with `source:
    checkpoint` imports them and reproduces their rows of the table bit for bit, training nothing."""
    import shutil

    from ditpareto.results import sha256_of
    from ditpareto.study import shipped_checkpoint
    from ditpareto.spec import FINETUNE_MODES
    from test_config import with_defaults

    config = with_defaults(yaml.safe_load(MINI.read_text()))
    config["finetune"]["plateau"] = {}
    # one shared fine-tune (dit-ft) and one per budget (dydit): both import paths, half the resampling
    config["methods"] = {m: config["methods"][m] for m in ("dit-ft", "dydit")}
    config["finetune"].pop("seed_noise", None)
    shipped = tmp_path / "shipped"
    config["finetune"]["shipped_dir"] = str(shipped)
    for method, entry in config["methods"].items():
        if FINETUNE_MODES[method] == "none":
            continue
        entry.update(source="checkpoint", sha256={})
        for budget in entry["budgets"]:
            path, key = shipped_checkpoint(method, budget, str(shipped))
            run = f"budget~{budget}/ft~1.00" if key == budget else "ft~1.00"
            trained = mini_run / "results/checkpoints" / method / run / "trained.pt"
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trained, path)
            shutil.copyfile(f"{trained}.json", f"{path}.json")
            entry["sha256"][key] = sha256_of(path)
    configfile = tmp_path / "shipped.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    shutil.copytree(mini_run / "resources", workdir / "resources")  # same data, base and extractor
    result = run_study(venv_env, workdir, configfile, TABLE)
    out = result.stdout + result.stderr
    assert "rule finetune" not in out and "import_finetuned" in out
    first = read_metrics_csv(mini_run / TABLE)
    # the plateau points are not shipped
    first = first[(first["ft"] != "0.50") & first["method"].isin(config["methods"])].reset_index(drop=True)
    first = first.dropna(axis=1, how="all")  # columns only the other methods' rows fill (and empty ones)
    second = read_metrics_csv(workdir / TABLE).dropna(axis=1, how="all")
    assert set(second.columns) == set(first.columns)
    drop = [c for c in (*TIMING_COLUMNS, "git_commit") if c in first.columns]
    pd.testing.assert_frame_equal(first.drop(columns=drop), second[first.columns].drop(columns=drop))
    bad = dict(config)
    bad["methods"]["dit-ft"]["sha256"]["shared"] = "0" * 64
    configfile.write_text(yaml.safe_dump(bad))
    result = run_study(venv_env, tmp_path / "bad", configfile, TABLE, check=False)
    assert result.returncode != 0 and "sha256" in result.stdout + result.stderr


def test_two_clean_runs_give_identical_tables(venv_env, two_point_local_run, two_point_study, tmp_path):
    run_snakemake(venv_env, tmp_path, two_point_study, "--cores", "2", TABLE)
    first = read_metrics_csv(two_point_local_run / TABLE)
    second = read_metrics_csv(tmp_path / TABLE)
    assert len(first) == 2
    drop = [c for c in TIMING_COLUMNS if c in first.columns]
    pd.testing.assert_frame_equal(first.drop(columns=drop), second.drop(columns=drop))


def test_a_checkout_path_with_spaces_and_shell_metacharacters(venv_env, tmp_path, two_point_study):
    """Every path reaches the shell quoted: a checkout (Snakefile, notebooks, shipped inputs) under a directory
    named with a space, a semicolon and a command substitution runs, and runs nothing else."""
    import shutil

    from ditpareto.data import ImageSet
    from ditpareto.glyph_extractor import save_glyph_cnn, train_glyph_cnn
    from ditpareto.glyphs import draw_glyphs
    from ditpareto.models import build_dit
    from ditpareto.models.checkpoint import atomic_save
    from ditpareto.results import sha256_of

    weird = tmp_path / "check out; touch PWNED $(touch PWNED2) `touch PWNED3`"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if name.startswith(("Snakefile", "workflow/", "notebooks/", "profiles/", "envs/", "results/published/",
                            "src/")):
            (weird / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, weird / name)
    inputs = weird / "inputs $HOME"
    inputs.mkdir()
    import torch

    torch.manual_seed(0)
    atomic_save(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10).state_dict(), inputs / "base.pt")
    draw = draw_glyphs("extractor", 64)
    model, _ = train_glyph_cnn(ImageSet(draw.images, draw.labels), draw.attributes,
                               ImageSet(draw.images, draw.labels), draw.attributes, steps=2)
    save_glyph_cnn(model, inputs / "cnn.pt")
    config = yaml.safe_load(two_point_study.read_text())
    # relative to the checkout, like the shipped assets
    config["base"].update(source="checkpoint", checkpoint="inputs $HOME/base.pt", sha256=sha256_of(inputs / "base.pt"))
    config["metrics"]["extractor"] = {"source": "checkpoint", "checkpoint": "inputs $HOME/cnn.pt",
                                      "sha256": sha256_of(inputs / "cnn.pt")}
    config["methods"] = {"dit": {"budgets": ["2"]}}
    configfile = weird / "config" / "odd 'name'.yaml"
    configfile.parent.mkdir(parents=True, exist_ok=True)
    configfile.write_text(yaml.safe_dump(config))
    workdir = weird / "run dir"

    def plan(checkout, *extra):
        return subprocess.run(["snakemake", "--cores", "2", "-s", str(checkout / "Snakefile"), "--directory",
                               str(checkout / "run dir"), "--configfile", str(checkout / configfile.relative_to(weird)),
                               "--replace-workflow-config", TABLE, "results/notebooks/pareto.ipynb", *extra],
                              cwd=tmp_path, env=venv_env, capture_output=True, text=True)

    result = plan(weird)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert (workdir / TABLE).exists() and (workdir / "results/figures/pareto_fid_vs_gmacs.png").exists()
    assert not [p for p in tmp_path.rglob("PWNED*")] and not list(Path.cwd().glob("PWNED*"))
    # relocatable: the finished study moved with its checkout plans no job
    moved = tmp_path / "moved checkout"
    weird.rename(moved)
    result = plan(moved, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]
    # a version bump alone reruns nothing; an edit to the sampler reruns sampling and what reads its samples only
    init = moved / "src/ditpareto/__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.'))
    result = plan(moved, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]
    sampler = moved / "src/ditpareto/sampling.py"
    sampler.write_text(sampler.read_text() + "\n# an edit\n")
    result = plan(moved, "-n")
    planned = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout, re.MULTILINE))
    assert {"sample", "merge_samples", "evaluate", "aggregate"} <= planned, result.stdout[-3000:]
    assert not planned & {"prepare_data", "import_base", "import_extractor"}, planned


def test_planning_needs_no_torch(venv_env, tmp_path):
    """The workflow plans (config validation, semantic checks, the grid) with the torch-free study layer alone:
    a login node or a SLURM job's Snakemake start imports no GPU stack."""
    fake = tmp_path / "notorch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("torch is not importable in this test")\n')
    env = {**venv_env, "PYTHONPATH": str(fake.parent)}
    for configfile in (REPO / "config/config.yaml", MINI):
        result = snakemake(env, "-n", "--configfile", str(configfile), "--replace-workflow-config", "--directory",
                           str(tmp_path / configfile.stem))
        assert "sample" in result.stdout
