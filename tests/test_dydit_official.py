"""The DyDiT authors' released checkpoints (config ``source: official``): stand-ins written in their key layout
(``alibaba-damo-academy/DyDiT``, ``DyDiT/models.py``) import to our DyDiT with the outputs of a by-hand renaming;
bad files fail naming the problem; the study checks, the workflow plan, and the records, table, verdicts and figure
that label the points as the authors'."""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import paper_assets as assets
from ditpareto.cli import main as cli
from ditpareto.config import check_study
from ditpareto.errors import InputError
from ditpareto.methods import ModelSpec, get_method
from ditpareto.models import build_dit, dit_config
from ditpareto.results import sha256_of
from ditpareto.models.dydit import DyDiT

REPO = Path(__file__).resolve().parents[1]
SPEC = ModelSpec("dit-toy-2", 16, in_channels=1, num_classes=10)  # 12 blocks, D 64, 4 heads: token router D/16 = 4
MODEL = ["--model", SPEC.name, "--image-size", str(SPEC.image_size), "--in-channels", "1", "--num-classes", "10"]
MICRO = ModelSpec("dit-micro-2", 16, in_channels=1, num_classes=10)  # 2 blocks: sampling under the MAC counter


def official_stand_in(seed: int = 0, heads_out: int | None = None, groups_out: int | None = None,
                      spec: ModelSpec = SPEC) -> dict:
    """Random weights under the authors' key names, written out from DyDiT/models.py: DiT's keys, plus per block
    ``attn_rate = Router(D, H-1)``, ``mlp_rate = Router(D, H-1)`` (``.router`` is the Linear) and
    ``token_selection = TokenSelect(D)`` (``mlp_head``: Linear(D, D/16), ReLU, Linear(D/16, 1))."""
    config = dit_config(spec.name, spec.image_size, **spec.overrides())
    d, h = config.hidden_size, config.num_heads
    heads_out, groups_out = heads_out or h - 1, groups_out or h - 1
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.05):
        return torch.randn(shape, generator=g) * std

    dit = build_dit(spec.name, spec.image_size, **spec.overrides()).state_dict()  # DiT's official key names
    state = {k: rand(*v.shape) for k, v in dit.items()}
    for i in range(config.depth):
        p = f"blocks.{i}."
        # router biases of both signs: some heads, groups and tokens are off, so slicing does work
        state |= {p + "attn_rate.router.weight": rand(heads_out, d, std=0.3),
                  p + "attn_rate.router.bias": rand(heads_out, std=1.0),
                  p + "mlp_rate.router.weight": rand(groups_out, d, std=0.3),
                  p + "mlp_rate.router.bias": rand(groups_out, std=1.0),
                  p + "token_selection.mlp_head.0.weight": rand(d // 16, d, std=0.3),
                  p + "token_selection.mlp_head.0.bias": rand(d // 16),
                  p + "token_selection.mlp_head.2.weight": rand(1, d // 16, std=0.5),
                  p + "token_selection.mlp_head.2.bias": rand(1, std=0.2)}
    return state


def renamed_by_hand(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        key = key.replace(".attn_rate.router.", ".head_router.").replace(".mlp_rate.router.", ".group_router.")
        out[key.replace(".token_selection.mlp_head.", ".token_router.")] = value
    return out


def save_official(state: dict, path: Path, wrapped: bool = True, args=None) -> Path:
    """As DyDiT/train.py saves ({model, ema, opt, args}; "model" here differs from "ema", which must be the one
    used) or as a bare state dict."""
    if wrapped:
        param = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.AdamW([param])
        param.sum().backward()
        opt.step()
        args = args if args is not None else argparse.Namespace(model="DiT-XL/2", lr=1e-4, ckpt=None, resume=False)
        state = {"model": {k: torch.zeros_like(v) for k, v in state.items()}, "ema": state,
                 "opt": opt.state_dict(), "args": args}
    torch.save(state, path)
    return path


def reference_model(state: dict) -> DyDiT:
    model = DyDiT(dit_config(SPEC.name, SPEC.image_size, **SPEC.overrides()))
    model.load_state_dict(renamed_by_hand(state))
    return model.eval()


def import_official(checkpoint: Path, out: Path, sha256: str | None = None, budget: str = "0.70",
                    spec: ModelSpec = SPEC) -> dict:
    from ditpareto.jobs.checkpoints import import_official as step

    method = get_method("dydit")
    return step(method=method, options=method.parse_options({}), spec=spec, checkpoint=str(checkpoint),
                out=str(out), budget=budget, sha256=sha256)


@pytest.mark.parametrize("wrapped", [True, False], ids=["training-checkpoint", "bare-state-dict"])
def test_released_checkpoint_imports_with_the_outputs_of_renamed_keys(tmp_path, wrapped):
    state = official_stand_in()
    source = save_official(state, tmp_path / "new_dydit0.7.pt", wrapped)
    out = tmp_path / "finetuned.pt"
    cli(["import-official", "--method", "dydit", "--budget", "0.70", *MODEL, "--checkpoint", str(source),
         "--sha256", sha256_of(source), "--out", str(out)])
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["finetune_source"] == "official" and record["budget"] == "0.70"
    assert record["train_gmacs"] is None and record["optimizer_steps"] is None and record["samples_seen"] is None
    assert record["official_sha256"] == sha256_of(source) and record["sha256"] == sha256_of(out)
    assert record["official_entry"] == ("ema" if wrapped else "state dict")
    assert record["official_args"] == ({"model": "DiT-XL/2", "lr": 1e-4, "ckpt": None, "resume": False} if wrapped
                                       else {})
    imported = get_method("dydit").load_model(str(out), SPEC, {})  # our own loader: strict keys and shapes
    reference = reference_model(state)
    for key, value in reference.state_dict().items():
        assert torch.equal(imported.state_dict()[key], value), key
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 1, 16, 16, generator=g), torch.tensor([0, 3, 7, 10])  # 10: the null class
    t = torch.full((4,), 480)
    with torch.no_grad():
        assert torch.equal(imported(x, t, y), reference(x, t, y))  # masked path, hard gates
        masks = reference.width_masks(480)
        assert any(not h.all() for h, _ in masks) and any(not g.all() for _, g in masks)  # units are off
        sliced = imported.forward_sliced(x, t, y, imported.gather_widths(imported.width_masks(480)))
        assert torch.equal(sliced, reference.forward_sliced(x, t, y, reference.gather_widths(masks)))
        assert torch.allclose(sliced, reference(x, t, y), atol=1e-5)  # slicing skips work, not results


def _edit(name):
    """(edit of the stand-in state, expected message) of a bad file."""
    d = 64
    cases = {
        "wrong key": (lambda s: s.update({"blocks.1.attn_rate.gate.weight": s.pop("blocks.1.attn_rate.router.weight")}),
                      "missing keys [blocks.1.attn_rate.router.weight] (1 in all); unexpected keys "
                      "[blocks.1.attn_rate.gate.weight]"),
        "missing router": (lambda s: s.pop("blocks.2.token_selection.mlp_head.2.bias"),
                           "missing keys [blocks.2.token_selection.mlp_head.2.bias]"),
        "bad shape": (lambda s: s.update({"blocks.0.token_selection.mlp_head.0.weight": torch.zeros(5, d)}),
                      "mis-shaped [blocks.0.token_selection.mlp_head.0.weight: (5, 64) (expected (4, 64))]"),
        "nan": (lambda s: s["blocks.3.mlp_rate.router.bias"].__setitem__(0, float("nan")),
                "non-finite values (NaN/Inf) in [blocks.3.mlp_rate.router.bias]"),
    }
    return cases[name]


@pytest.mark.parametrize("case", ["wrong key", "missing router", "bad shape", "nan"])
def test_a_bad_released_file_fails_naming_the_key(tmp_path, case):
    edit, message = _edit(case)
    state = official_stand_in()
    edit(state)
    out = tmp_path / "finetuned.pt"
    with pytest.raises(InputError, match=re.escape(message)):
        import_official(save_official(state, tmp_path / "bad.pt"), out)
    assert not out.exists() and not Path(f"{out}.json").exists()


@pytest.mark.parametrize("case, message", [
    ("plain DiT", "holds a plain DiT: no DyDiT routers"),
    ("groups are not heads", "has 8 MLP groups but 4 heads in block(s) [0, 1, 2, 3, 4, 5] "
                             "(blocks.0.mlp_rate.router: Linear(D, 7), attn_rate.router: Linear(D, 3))"),
    ("H-output routers", "has H-output routers (blocks.0.attn_rate.router: 4 outputs for 4 heads)"),
    ("a pickled object besides Namespace", "holds Python objects besides tensors and containers: refused"),
    ("bad sha256", "has sha256"),
])
def test_a_file_that_is_not_the_released_format_fails_with_a_clear_message(tmp_path, case, message):
    state, args, sha256 = official_stand_in(), None, None
    if case == "plain DiT":
        state = build_dit(SPEC.name, SPEC.image_size, **SPEC.overrides()).state_dict()
    elif case == "groups are not heads":
        state = official_stand_in(groups_out=7)
    elif case == "H-output routers":
        state = official_stand_in(heads_out=4, groups_out=4)
    elif case == "a pickled object besides Namespace":
        args = argparse.Namespace(results_dir=pathlib.PurePosixPath("results"))  # only Namespace is allowed
    else:
        sha256 = "0" * 64
    out = tmp_path / "finetuned.pt"
    with pytest.raises(InputError, match=re.escape(message)):
        import_official(save_official(state, tmp_path / "bad.pt", args=args), out, sha256)
    assert not out.exists()


def test_mlp_groups_other_than_heads_and_a_full_compute_budget_are_refused(tmp_path):
    source = save_official(official_stand_in(), tmp_path / "ok.pt")
    method = get_method("dydit")
    with pytest.raises(InputError, match="one MLP group per head"):
        method.load_official(str(source), SPEC, {"mlp_groups": 2})
    with pytest.raises(InputError, match="not a full@ point"):
        import_official(source, tmp_path / "out.pt", budget="full@0.70")


# ------------------------------------------------------------------------------------------- config and workflow


def paper_config(tmp_path: Path, files: bool = True) -> dict:
    """The 256-px paper config with placeholder inputs and DyDiT at the two released λ from the authors' files."""
    from snakemake.utils import validate

    config = assets.with_placeholders(assets.load_config(REPO / "config/paper-imagenet256.yaml"), tmp_path / "inputs")
    official = {}
    for lam, name in (("0.50", "new_dydit0.5.pt"), ("0.70", "new_dydit0.7.pt")):
        path = tmp_path / "inputs" / "dydit" / name
        if files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(name.encode())
        official[lam] = {"checkpoint": str(path), "sha256": sha256_of(path) if files and lam == "0.70" else None}
    config["methods"]["dydit"] = {"budgets": ["0.50", "0.70"], "parity": "full@0.70", "source": "official",
                                  "official": official}
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def test_paper_config_with_the_released_checkpoints_passes_the_checks(tmp_path):
    check_study(paper_config(tmp_path), tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["methods"]["dydit"]["budgets"].append("0.30"),
     "config methods.dydit.official lacks ['0.30']: with source official every budget needs the authors' checkpoint"),
    (lambda c: c["methods"]["dydit"]["official"].update({"0.3": {"checkpoint": "x.pt"}}),
     "config methods.dydit.official: write '0.3' as '0.30'"),
    (lambda c: c["methods"]["flexdit"].update(source="official"),
     "config methods.flexdit.source: official imports the authors' released checkpoints, which only dydit supports"),
    (lambda c: c["methods"]["dydit"].update(options={"mlp_groups": 4}),
     "config methods.dydit.options.mlp_groups 4: the authors' checkpoints have one MLP group per head (16)"),
    (lambda c: c["finetune"].update(plateau={"multipliers": [0.5], "budgets": {"dydit": "0.70"}}),
     "config finetune.plateau.budgets.dydit: dydit samples the authors' checkpoints"),
])
def test_check_study_names_the_config_key_of_a_bad_official_setting(tmp_path, edit, message):
    config = paper_config(tmp_path)
    edit(config)
    with pytest.raises(InputError, match=re.escape(message)):
        check_study(config, tmp_path)


def test_a_missing_released_file_stops_the_run_at_start(tmp_path):
    config = paper_config(tmp_path, files=False)
    with pytest.raises(InputError) as error:
        check_study(config, tmp_path)
    for lam in ("0.50", "0.70"):
        assert f"methods.dydit.official.{lam}.checkpoint: {config['methods']['dydit']['official'][lam]['checkpoint']}" \
            in str(error.value)


def test_the_workflow_imports_the_released_checkpoints_instead_of_fine_tuning_dydit(venv_env, tmp_path):
    config = paper_config(tmp_path)
    configfile = assets.write_config(config, tmp_path / "paper-official.yaml")
    result = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p", "--configfile", str(configfile),
                             "--replace-workflow-config", "--directory", str(tmp_path / "run")], cwd=REPO,
                            env=venv_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if "python -m ditpareto" in line]
    imports = [line for line in commands if " import-official " in line]
    assert len(imports) == 2
    official = config["methods"]["dydit"]["official"]
    for lam, entry in official.items():
        line = next(line for line in imports if f"--budget {lam} " in line)
        assert f"--checkpoint {shlex.quote(entry['checkpoint'])} " in line and "--method dydit" in line
        assert (f"--sha256 {entry['sha256']}" in line) == bool(entry["sha256"])
        assert f"results/checkpoints/dydit/budget~{lam}/ft~1.00/finetuned.pt" in line
    assert not [line for line in commands if "--method dydit" in line and (" finetune " in line or " convert " in line)]
    assert [line for line in commands if " finetune --method flexdit" in line]  # the others still fine-tune here
    assert not [line for line in commands if " import-finetuned --method dydit" in line]


# ------------------------------------------------------------------------- records, table, verdicts and figure


def test_sampling_records_carry_the_source_and_unknown_training_compute_into_the_table(tmp_path):
    from ditpareto.results import metrics_table, write_json

    source = save_official(official_stand_in(spec=MICRO), tmp_path / "new_dydit0.7.pt")
    checkpoint = tmp_path / "finetuned.pt"
    import_official(source, checkpoint, spec=MICRO)
    names = []
    for shard in range(2):
        name = tmp_path / f"shard{shard}"
        cli(["sample", "--method", "dydit", "--budget", "0.70", "--seed", "0", "--checkpoint", str(checkpoint),
             "--model", MICRO.name, "--image-size", "16", "--in-channels", "1", "--num-classes", "10",
             "--steps", "2", "--num-samples", "2", "--batch-size", "1", "--shard", str(shard), "--shards", "2",
             "--out", f"{name}.npz", "--record", f"{name}.json"])
        names.append(name)
    merged = tmp_path / "merged.json"
    cli(["merge-samples", "--shards", *[f"{n}.npz" for n in names], "--records", *[f"{n}.json" for n in names],
         "--out", str(tmp_path / "merged.npz"), "--record", str(merged)])
    record = json.loads(merged.read_text())
    assert record["finetune_source"] == "official" and record["train_gmacs"] is None
    base = dict(record)
    write_json({**base, "fid": 3.0}, tmp_path / "dydit.json")
    write_json({**base, "method": "dit-ft", "budget": "2", "fid": 4.0, "finetune_source": "pipeline",
                "train_gmacs": 12.5, "optimizer_steps": 3, "samples_seen": 12}, tmp_path / "ditft.json")
    table = metrics_table([tmp_path / "dydit.json", tmp_path / "ditft.json"]).set_index("method")
    assert math.isnan(table.loc["dydit", "train_gmacs"]) and table.loc["dit-ft", "train_gmacs"] == 12.5
    assert table.loc["dydit", "finetune_source"] == "official"


def _record(method, budget, gmacs, fid, ratio, source, ft="1.00", train=None):
    b = np.linspace(-0.1, 0.1, 20)
    return {"method": method, "budget": budget, "steps": 10, "seed": 0, "cfg_scale": 2.0, "ft": ft,
            "gmacs_per_image": gmacs, "fid": fid, "nominal_compute_ratio": ratio, "fid_bootstrap": list(fid + b),
            "finetune_source": source, "train_gmacs": train}


def test_verdicts_and_the_pareto_figure_label_the_authors_points(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import pandas as pd

    from ditpareto import plotting
    from ditpareto.verdicts import AUTHORS_NOTE, claims_ledger, compare_with_envelopes, load_points

    records = [_record("dit", "10", 1.0, 5.0, 1.0, "none", ft="0.00", train=0.0),
               _record("dit-ft", "10", 1.0, 4.0, 1.0, "pipeline", train=9.0),
               _record("dit-ft", "5", 0.5, 5.0, 0.5, "pipeline", train=9.0),
               _record("dydit", "0.50", 0.7, 4.2, 0.5, "official"),
               _record("flexdit", "0.61-0.86", 0.7, 5.5, 0.6, "pipeline", train=9.0)]
    points = load_points(records, fixed_cfg=2.0)
    claims = pd.DataFrame([
        {"method": "dit", "model": "DiT-XL/2", "resolution": 256, "setting": "250", "fid": 2.27, "compute_ratio": 1},
        {"method": "dydit", "model": "DiT-XL/2", "resolution": 256, "setting": "lambda=0.5", "fid": 2.07,
         "compute_ratio": 0.488}])
    ledger = claims_ledger(points, compare_with_envelopes(points), claims, full_steps=10)
    dydit = ledger[ledger["method"] == "dydit"]
    assert len(dydit) == 2 and dydit["basis"].str.contains(AUTHORS_NOTE, regex=False).all()
    assert not ledger[ledger["method"] == "flexdit"]["basis"].str.contains(AUTHORS_NOTE, regex=False).any()

    table = pd.DataFrame([{k: v for k, v in r.items() if k != "fid_bootstrap"} for r in records])
    figures = []
    monkeypatch.setattr(plotting, "_save", lambda fig, paths: figures.append(fig))
    plotting.plot_pareto(table, [tmp_path / "pareto.png"], fixed_cfg=2.0)
    (ax,) = figures[0].axes
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "DyDiT (authors' checkpoint)" in legend and "FlexDiT" in legend
    hollow = [line for line in ax.lines if line.get_markerfacecolor() == "none"]
    assert [tuple(line.get_xdata()) for line in hollow] == [(0.7,)]  # the dydit point only
    plt.close(figures[0])


def test_the_paper_configs_commented_example_is_a_valid_official_setting(tmp_path):
    """The commented `source: official` lines of config/paper-imagenet256.yaml, uncommented, pass the schema and the
    start checks (their relative paths resolved against the checkout)."""
    from snakemake.utils import validate

    text = (REPO / "config/paper-imagenet256.yaml").read_text()
    example = re.search(r'    # budgets: \["0\.50", "0\.70"\]\n(    # .*\n)+', text)[0]
    uncommented = "".join(line.replace("    # ", "    ", 1) for line in example.splitlines(True))
    path = tmp_path / "paper.yaml"
    path.write_text(text.replace(example, uncommented))  # the second `budgets:` replaces the first
    config = assets.with_placeholders(assets.load_config(path), tmp_path / "inputs")
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    dydit = config["methods"]["dydit"]
    assert dydit["source"] == "official" and dydit["budgets"] == ["0.50", "0.70"]
    for entry in dydit["official"].values():
        (tmp_path / entry["checkpoint"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / entry["checkpoint"]).touch()
    check_study(config, tmp_path)
