"""The method registry (``ditpareto.spec``) is the one home of a method's name, budgets, options, fine-tune mode,
label, colour and MAC formula: every other per-method table agrees with it, and a new method is one spec, one model
and one method registered."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from ditpareto import cli, plotting, spec, study
from ditpareto.methods import METHODS, get_method, register_method
from ditpareto.methods.dit import StaticDiT
from ditpareto.spec import SPECS, MethodSpec
from ditpareto.spec.dit import StepsVocabulary


def _method_choices(command: str) -> list[str]:
    parser = cli.build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(next(a for a in sub.choices[command]._actions if a.dest == "method").choices)


def test_every_registry_agrees_with_the_spec_registry(repo):
    names = list(SPECS)
    assert names == ["dit", "dit-ft", "flexidit", "dydit", "flexdit", "tome", "fora", "l2c"]  # figure order
    # the torch side: one method per spec, implementing that spec's vocabulary and options
    assert sorted(METHODS) == sorted(names)
    for name, method_spec in SPECS.items():
        method = get_method(name)
        assert isinstance(method, type(method_spec.vocabulary)) and method.options_type is method_spec.options_type
        assert method_spec.options_type.method in (name, "dit")  # dit-ft shares dit's options
    # the config schema
    schema = yaml.safe_load((repo / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["methods"]["propertyNames"]["enum"] == names
    # the CLI
    assert _method_choices("sample") == sorted(names) and _method_choices("finetune") == sorted(names)
    assert _method_choices("import-official") == spec.OFFICIAL_METHODS == ["dydit"]
    # the figures: one label and one distinct colour per method, in registry order
    assert list(plotting.method_palette()) == [SPECS[n].label for n in names]
    assert len(set(plotting.method_palette().values())) == len(names)
    assert {plotting.METHOD_LABELS[n] for n in names} == set(plotting.method_palette())
    # the study layer reads the same tables
    assert study.FINETUNE_MODES is spec.FINETUNE_MODES and study.STEP_BUDGET_METHODS is spec.STEP_BUDGET_METHODS
    assert spec.STEP_BUDGET_METHODS == ["dit", "dit-ft"]
    # every dynamic method has its documented spec (the code map of docs/methods/<name>.md)
    assert all((repo / "docs/methods" / f"{n}.md").is_file() for n in names if not SPECS[n].step_budget)
    assert all(callable(s.macs_per_call) for s in SPECS.values())
    # the README's method table: one row per method, in registry order, with its fine-tune mode
    rows = [line.split("|") for line in (repo / "README.md").read_text().splitlines() if line.startswith("| `")]
    table = {row[1].strip().strip("`"): row[4].strip() for row in rows if row[1].strip().strip("`") in SPECS}
    assert list(table) == names
    shown = {"none": {"none"}, "shared": {"shared"}, "per_budget": {"one per λ", "one per budget"}}
    assert all(table[n] in shown[SPECS[n].finetune_mode] for n in names), table


@pytest.mark.parametrize("change, message", [
    ({"name": "Bad Name"}, "not path-safe"),
    ({"finetune_mode": "twice"}, "fine-tune mode"),
    ({"vocabulary": StepsVocabulary("other")}, "vocabulary is named"),
])
def test_a_spec_that_would_break_the_path_scheme_or_the_registries_is_refused(change, message):
    fields = {"name": "stub", "label": "Stub", "color": "#CC79A7", "vocabulary": StepsVocabulary("stub"),
              "finetune_mode": "none"}
    with pytest.raises(ValueError, match=message):
        MethodSpec(**{**fields, **change})


def test_a_new_method_is_one_spec_and_one_method_registered(repo):
    """A stub method (the static DiT under another name): registering its spec and its method is all it takes for
    the config check, the grid, the CLI, the figures and the verdicts' tables to know it."""
    from ditpareto.config import check_study
    from test_config import with_defaults

    class StubMethod(StaticDiT):
        name = "stub"

    stub = MethodSpec("stub", "Stub (fewer steps)", "#CC79A7", StepsVocabulary("stub"), "none", step_budget=True)
    tables = (spec.SPECS, spec.FINETUNE_MODES, spec.METHOD_LABELS, spec.METHOD_COLORS, METHODS)
    try:
        spec.register(stub)
        register_method(StubMethod())
        assert "stub" in _method_choices("sample") and plotting.method_palette()["Stub (fewer steps)"] == "#CC79A7"
        assert study.FINETUNE_MODES["stub"] == "none" and "stub" in study.STEP_BUDGET_METHODS
        assert get_method("stub").budget_label("10i") == "10i"
        config = with_defaults(yaml.safe_load((repo / "config/mini.yaml").read_text()))
        config["methods"] = {"stub": {"budgets": ["4", "2"], "cfg_sweep": [1.0]}}
        check_study(config, repo)
        points = {(p.method, p.budget, p.steps) for p in study.grid_points(config)}
        assert {("stub", "4", 4), ("stub", "2", 2)} <= points
        with pytest.raises(ValueError, match="registered already"):
            spec.register(dataclasses.replace(stub, color="#000001"))
    finally:
        for table in tables:
            table.pop("stub", None)
        for names in (spec.STEP_BUDGET_METHODS, spec.OFFICIAL_METHODS):
            if "stub" in names:
                names.remove("stub")
    assert "stub" not in _method_choices("sample")


def test_the_spec_registry_loads_no_torch():
    """The study layer plans a workflow from the specs alone: importing them loads neither torch nor the study."""
    import subprocess
    import sys

    probe = ("import sys, ditpareto.spec\n"
             "print(sorted(m for m in ('torch', 'ditpareto.study', 'ditpareto.methods') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]
