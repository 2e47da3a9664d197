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
    if sampling["shards"] > sampling["num_samples"]:
        raise InputError(f"config sampling.shards ({sampling['shards']}) exceeds sampling.num_samples")
    _check_latent_setting(config)
    missing = [f"{key}: {path}" for key, path, kind in required_paths(config, root) if not _exists(path, kind)]
    if missing:
        raise InputError("config names paths that do not exist (nothing is downloaded; provide them locally):\n  "
                         + "\n  ".join(missing))


def _check_latent_setting(config: dict) -> None:
    dataset, latents, base = config["dataset"], config.get("latents", {}), config["base"]
    if dataset["name"] != "imagefolder":
        return
    for key, value in (("dataset.path", dataset.get("path")), ("latents.vae", latents.get("vae")),
                       ("metrics.reference_batch", config["metrics"].get("reference_batch"))):
        if not value:
            raise InputError(f"config {key} is required when dataset.name is 'imagefolder'")
    if base["in_channels"] != 4:
        raise InputError(f"config base.in_channels must be 4 (SD-VAE latents) for imagefolder, got {base['in_channels']}")


def required_paths(config: dict, root: str | Path) -> list[tuple[str, Path, str]]:
    """(config key, resolved path, "file" | "dir" | "vae") of every local input the study reads."""
    paths = []
    base, metrics, dataset = config["base"], config["metrics"], config["dataset"]
    if base["source"] == "checkpoint":
        if not base.get("checkpoint"):
            raise InputError("config base.checkpoint is required when base.source is 'checkpoint'")
        paths.append(("base.checkpoint", resolve_path(base["checkpoint"], root), "file"))
    if metrics["feature_extractor"] == "inception-v3-compat":
        if not metrics.get("inception_weights"):
            raise InputError("config metrics.inception_weights is required for inception-v3-compat")
        paths.append(("metrics.inception_weights", resolve_path(metrics["inception_weights"], root), "file"))
    if metrics.get("reference_batch"):
        paths.append(("metrics.reference_batch", resolve_path(metrics["reference_batch"], root), "file"))
    if dataset["name"] == "imagefolder":
        paths.append(("dataset.path", resolve_path(dataset["path"], root), "dir"))
    if config.get("latents", {}).get("vae"):
        paths.append(("latents.vae", resolve_path(config["latents"]["vae"], root), "vae"))
    return paths


def _exists(path: Path, kind: str) -> bool:
    if kind == "file":
        return path.is_file()
    if kind == "vae":
        return (path / "config.json").is_file()
    return path.is_dir()
