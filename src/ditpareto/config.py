"""Semantic checks of a study config beyond its JSON schema, run by the workflow before any job starts."""

from __future__ import annotations

from pathlib import Path

from ditpareto.diffusion import space_timesteps
from ditpareto.errors import InputError
from ditpareto.methods import get_method
from ditpareto.methods.base import SamplingSettings
from ditpareto.methods.dit import StaticDiT
from ditpareto.models import dit_config


def resolve_path(path: str, root: str | Path) -> Path:
    """Config paths are relative to the repository root (the Snakefile's folder) unless absolute."""
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def check_study(config: dict, root: str | Path) -> None:
    """Raise InputError naming the first problem: unknown method, budget out of range, missing file, ..."""
    base = config["base"]
    dit_config(base["model"], config["dataset"]["image_size"], in_channels=base["in_channels"],
               num_classes=base["num_classes"])
    sampling = config["sampling"]
    space_timesteps(1000, sampling["sampler"], sampling["steps"])
    settings = SamplingSettings(sampler=sampling["sampler"], steps=sampling["steps"])
    for name, entry in config["methods"].items():
        method = get_method(name)
        try:
            method.parse_options(entry.get("options", {}))
        except InputError as exc:
            raise InputError(f"config methods.{name}.options: {exc}") from None
        labels = []
        for text in entry["budgets"]:
            try:
                value = method.parse_budget(text)
            except InputError as exc:
                raise InputError(f"config methods.{name}.budgets: {exc}") from None
            if method.budget_label(value) != text:
                raise InputError(
                    f"config methods.{name}.budgets: write {text!r} as {method.budget_label(value)!r} (one label per budget)"
                )
            if isinstance(method, StaticDiT):  # dit and dit-ft: the budget is a step count
                space_timesteps(1000, sampling["sampler"], value)
            labels.append(text)
        if len(set(labels)) != len(labels):
            raise InputError(f"config methods.{name}.budgets has duplicates: {labels}")
        method.nominal_compute_ratio(method.parse_budget(labels[0]), settings)
    if base["source"] == "checkpoint":
        if not base.get("checkpoint"):
            raise InputError("config base.checkpoint is required when base.source is 'checkpoint'")
        path = resolve_path(base["checkpoint"], root)
        if not path.is_file():
            raise InputError(f"config base.checkpoint: {path} does not exist")
    metrics = config["metrics"]
    if metrics["feature_extractor"] == "inception-v3-compat":
        if not metrics.get("inception_weights"):
            raise InputError("config metrics.inception_weights is required for inception-v3-compat")
        path = resolve_path(metrics["inception_weights"], root)
        if not path.is_file():
            raise InputError(f"config metrics.inception_weights: {path} does not exist")
