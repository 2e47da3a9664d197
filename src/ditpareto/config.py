"""Semantic checks of a study config beyond its JSON schema, run by the workflow before any job starts. Torch-free:
the workflow plans (``snakemake -n``) without torch."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from ditpareto.archs import dit_config, latte_config
from ditpareto.errors import InputError
from ditpareto.respacing import space_timesteps
from ditpareto.study import (
    OFFICIAL, SamplingSettings, budget_sampler, checkpoint_budget, guidance_keys, method_steps, read_noise_table,
    read_plateau_table, read_recorded_scales, recorded_selection_seeds, shipped_checkpoint, stale_plateau_rows,
    stale_rows,
)
from ditpareto.spec import FINETUNE_MODES, OFFICIAL_METHODS, STEP_BUDGET_METHODS, split_sampler, with_sampler
from ditpareto.spec import get_spec, get_vocabulary


def resolve_path(path: str, root: str | Path) -> Path:
    """Config paths are relative to the repository root (the Snakefile's folder) unless absolute."""
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def _check_method_steps(config: dict, name: str, entry: dict, options) -> None:
    """methods.<m>.steps: not for a step ladder, unique, realisable; an l2c router samples only the timesteps it
    was trained for (options.sampler, options.sampler_steps) at every budget's sampler."""
    if entry.get("steps"):
        if name in STEP_BUDGET_METHODS:
            raise InputError(f"config methods.{name}.steps: a step ladder's budgets are its step counts")
        _unique(f"methods.{name}.steps", entry["steps"])
        for n in entry["steps"]:
            space_timesteps(1000, config["sampling"]["sampler"], n)
    if name != "l2c":
        return
    trained = space_timesteps(1000, options.sampler, options.sampler_steps)
    for n in method_steps(config, name):
        for text in entry["budgets"]:
            if space_timesteps(1000, budget_sampler(config, text), n) != trained:
                raise InputError(
                    f"config methods.l2c: budget {text} at {n} steps visits other timesteps than the router is "
                    f"trained for ({options.sampler}, {options.sampler_steps} steps): set methods.l2c.steps to "
                    f"[{options.sampler_steps}] or options.sampler_steps to the study's")


def _budget(method, key: str, text: str):
    """The method's parsed budget of a config label (without its "+sampler" qualifier), its label checked."""
    try:
        inner, sampler = split_sampler(text)
        value = method.parse_budget(inner)
    except InputError as exc:
        raise InputError(f"config {key}: {exc}") from None
    label = with_sampler(method.budget_label(value), sampler)
    if label != text:
        raise InputError(f"config {key}: write {text!r} as {label!r} (one label per budget)")
    return value


def _unique(key: str, values: list) -> None:
    if len(set(values)) != len(values):
        raise InputError(f"config {key} has duplicates: {values} (each would be a second row of the same point)")


def _finite(key: str, value) -> None:
    if not math.isfinite(float(value)):
        raise InputError(f"config {key} must be a finite number, got {value}")


# Guidance scales and training-compute multipliers name paths at two decimals (cfg~2.00, ft~0.50): a value must be
# what its label says, within these bounds (a path component stays short).
LABEL_BOUNDS = {"scale": (1.0, 100.0), "multiplier": (0.01, 100.0)}


def _labelled(key: str, values: list, kind: str) -> None:
    """Each value must be its own two-decimal label (2.004 would be sampled as 2.00) within ``LABEL_BOUNDS``, and no
    two values may share a label."""
    low, high = LABEL_BOUNDS[kind]
    for value in values:
        _finite(key, value)
        if not low <= float(value) <= high:
            raise InputError(f"config {key}: {value} is outside [{low:g}, {high:g}]")
        if abs(float(f"{float(value):.2f}") - float(value)) > 1e-9:
            raise InputError(f"config {key}: {value} has more than two decimals; its paths and rows would say "
                             f"{float(value):.2f}")
    _unique(key, [f"{float(v):.2f}" for v in values])


def check_config_files(paths) -> None:
    """Refuse a config file that names one key twice in a mapping (YAML keeps the last value silently): InputError
    naming the file, the key and its line."""
    import yaml

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise InputError(f"config file {path} names {key!r} twice in one mapping (line "
                                 f"{key_node.start_mark.line + 1}): YAML would keep only the last")
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in paths:
        try:
            yaml.load(Path(path).read_text(), Loader=Strict)
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"config file {path} cannot be read ({type(exc).__name__})") from None


def check_study(config: dict, root: str | Path) -> None:
    """Raise InputError naming the first problem: unknown method, budget out of range, duplicate or non-finite
    value, a shape a method cannot take, missing file, ..."""
    base, sampling = config["base"], config["sampling"]
    _check_pixel_dataset(config)
    model = dit_config(base["model"], config["dataset"]["image_size"], in_channels=base["in_channels"],
                       num_classes=base["num_classes"])
    if model.input_size % model.patch_size:
        raise InputError(f"config dataset.image_size {config['dataset']['image_size']}: the model input side "
                         f"{model.input_size} is not divisible by {base['model']}'s patch size {model.patch_size}")
    steps = sampling["steps"]
    _unique("sampling.steps", steps)
    _unique("sampling.seeds", sampling["seeds"])
    _labelled("sampling.cfg_scale", [sampling["cfg_scale"]], "scale")
    selection = sampling.get("cfg_selection", {})
    if selection.get("scales"):
        _labelled("sampling.cfg_selection.scales", selection["scales"], "scale")
        if selection["seed"] in sampling["seeds"]:
            raise InputError(f"config sampling.cfg_selection.seed {selection['seed']} is an evaluation seed "
                             f"(sampling.seeds {sampling['seeds']}): the scale must be chosen on held-out samples")
        if sampling["shards"] > selection["num_samples"]:
            raise InputError(f"config sampling.shards ({sampling['shards']}) exceeds "
                             f"sampling.cfg_selection.num_samples")
    if (sampling.get("cfg_recorded") or {}).get("table"):
        if selection.get("scales"):
            raise InputError("config sets both sampling.cfg_recorded and sampling.cfg_selection.scales: a study "
                             "either selects its guidance scales or samples the ones a long run recorded")
        _check_recorded(config, root)
    if (config.get("finetune", {}).get("noise_recorded") or {}).get("table"):
        _check_recorded_noise(config, root)
    if (config.get("finetune", {}).get("plateau_recorded") or {}).get("table"):
        _check_recorded_plateau(config, root)
    for section, keys in (("finetune", ("train_gmacs", "lr")), ("base.pretrain", ("lr",))):
        values = config.get("finetune", {}) if section == "finetune" else base.get("pretrain", {})
        for key in keys:
            if values.get(key) is not None:
                _finite(f"{section}.{key}", values[key])
    for n in steps:
        space_timesteps(1000, sampling["sampler"], n)
    settings = SamplingSettings(sampler=sampling["sampler"], steps=steps[0])
    plateau = config.get("finetune", {}).get("plateau", {})
    _labelled("finetune.plateau.multipliers", [*plateau.get("multipliers", []), 1.0], "multiplier")
    noise = config.get("finetune", {}).get("seed_noise", {})
    if noise.get("seeds"):
        _unique("finetune.seed_noise.seeds", noise["seeds"])
        own = config.get("finetune", {}).get("seed", 0)
        if own in noise["seeds"]:
            raise InputError(f"config finetune.seed_noise.seeds {noise['seeds']} repeats finetune.seed {own} "
                             "(the study's own fine-tune is already one of the seeds)")
    for name, entry in config["methods"].items():
        method = get_vocabulary(name)
        try:
            options = method.parse_options(entry.get("options", {}))
        except InputError as exc:
            raise InputError(f"config methods.{name}.options: {exc}") from None
        _labelled(f"methods.{name}.cfg_sweep", entry.get("cfg_sweep", []), "scale")
        _check_method_steps(config, name, entry, options)
        if name == "flexidit":
            weak = options.weak_patch_size or 2 * model.patch_size
            if model.input_size % weak:
                raise InputError(f"config methods.flexidit: the model input side {model.input_size} is not divisible "
                                 f"by the weak patch size {weak} (options.weak_patch_size)")
        labels = entry["budgets"]
        for text in labels:
            value = _budget(method, f"methods.{name}.budgets", text)
            if name in STEP_BUDGET_METHODS:  # dit and dit-ft: the budget is a step count
                space_timesteps(1000, budget_sampler(config, text), value.steps)
            method.nominal_compute_ratio(value, settings)
        if len(set(labels)) != len(labels):
            raise InputError(f"config methods.{name}.budgets has duplicates: {labels}")
        if entry.get("parity"):
            _budget(method, f"methods.{name}.parity", entry["parity"])
            if checkpoint_budget(entry["parity"]) not in labels and FINETUNE_MODES[name] == "per_budget":
                raise InputError(f"config methods.{name}.parity {entry['parity']!r} samples the fine-tune of "
                                 f"budget {checkpoint_budget(entry['parity'])!r}, which is not in its budgets {labels}")
        if name in plateau.get("budgets", {}):
            _budget(method, f"finetune.plateau.budgets.{name}", plateau["budgets"][name])
        if name in noise.get("budgets", {}):
            _budget(method, f"finetune.seed_noise.budgets.{name}", noise["budgets"][name])
            if FINETUNE_MODES[name] == "none":
                raise InputError(f"config finetune.seed_noise.budgets.{name}: {name} does not fine-tune")
        _check_source(name, entry, labels)
        if entry.get("source") == OFFICIAL:
            _check_official(config, name, method, options, model.num_heads)
    if sampling["shards"] > sampling["num_samples"]:
        raise InputError(f"config sampling.shards ({sampling['shards']}) exceeds sampling.num_samples")
    _check_dataset(config)
    _check_latent_setting(config)
    missing = [f"{key}: {path}" for key, path, kind in required_paths(config, root) if not _exists(path, kind)]
    if missing:
        raise InputError("config names paths that do not exist (nothing is downloaded; provide them locally):\n  "
                         + "\n  ".join(missing))


def _pinned_table(recorded: dict, root: str | Path, key: str) -> Path:
    """A recorded table's path (config ``key``: table, sha256), checked to exist and to have the pinned sha256."""
    path = resolve_path(recorded["table"], root)
    if not path.is_file():
        raise InputError(f"config {key}.table {path} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != recorded["sha256"].lower():
        raise InputError(f"config {key}.table {path} has sha256 {digest}, config says {recorded['sha256']}")
    return path


def _check_recorded(config: dict, root: str | Path) -> None:
    """sampling.cfg_recorded: the table exists, has the pinned sha256, parses, was selected on a seed that is not an
    evaluation seed and has a scale for every (method, budget, steps) the grid guides."""
    recorded, seeds = config["sampling"]["cfg_recorded"], config["sampling"]["seeds"]
    path = _pinned_table(recorded, root, "sampling.cfg_recorded")
    try:
        scales = read_recorded_scales(path)
    except ValueError as exc:
        raise InputError(f"config sampling.cfg_recorded: {exc}") from None
    shared = sorted(recorded_selection_seeds(path) & set(seeds))
    if shared:
        raise InputError(f"config sampling.cfg_recorded.table {path} was selected on seed(s) {shared}, which are "
                         f"evaluation seeds (sampling.seeds {seeds})")
    missing = ["/".join(map(str, key)) for key in guidance_keys(config) if key not in scales]
    if missing:
        raise InputError(f"config sampling.cfg_recorded.table {path} has no scale for {len(missing)} grid "
                         f"point(s): {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}: stale; "
                         f"{RERECORD_CFG}")
    try:
        stale_rows(path, config, guidance_keys(config), "config sampling.cfg_recorded.table", RERECORD_CFG)
    except ValueError as exc:
        raise InputError(str(exc)) from None


RERECORD_CFG = ("either record the missing scales (the points in config/cpu-full.yaml, its CFG selection, then "
                "`select-cfg --extend` the table and pin its new sha256: assets/README.md) or sample at the fixed "
                "sampling.cfg_scale (remove sampling.cfg_recorded)")
RERECORD_NOISE = ("either re-record it (config/cpu-full.yaml's fine-tune seed noise, its "
                  "results/tables/finetune_noise.csv, then pin the new sha256: assets/README.md) or measure the noise "
                  "in this study (finetune.seed_noise) instead of finetune.noise_recorded")


def _check_recorded_noise(config: dict, root: str | Path) -> None:
    """finetune.noise_recorded: the table exists, has the pinned sha256, its columns, and every row was recorded
    with the checkpoint, sampler and training compute the study uses."""
    path = _pinned_table(config["finetune"]["noise_recorded"], root, "finetune.noise_recorded")
    try:
        rows = read_noise_table(path)
        stale_rows(path, config, [(r["method"], r["budget"], r["steps"]) for r in rows
                                  if r["method"] in config["methods"]],
                   "config finetune.noise_recorded.table", RERECORD_NOISE)
    except ValueError as exc:
        raise InputError(str(exc)) from None


RERECORD_PLATEAU = ("either re-record it (config/cpu-full.yaml's plateau fine-tunes, its "
                    "results/tables/plateau_points.json, then pin the new sha256: assets/README.md) or run the plateau "
                    "in this study (finetune.plateau) instead of finetune.plateau_recorded")


def _check_recorded_plateau(config: dict, root: str | Path) -> None:
    """finetune.plateau_recorded: the table exists, has the pinned sha256, parses, and every row of a method the
    study runs was made from its base, sampler and a multiple of its training compute."""
    path = _pinned_table(config["finetune"]["plateau_recorded"], root, "finetune.plateau_recorded")
    try:
        stale_plateau_rows(path, read_plateau_table(path), config, RERECORD_PLATEAU)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _check_source(name: str, entry: dict, labels: list[str]) -> None:
    if entry.get("source") == OFFICIAL and name not in OFFICIAL_METHODS:
        raise InputError(f"config methods.{name}.source: official imports the authors' released checkpoints, which "
                         f"only {', '.join(OFFICIAL_METHODS)} supports")
    if entry.get("source", "train") != "checkpoint":
        return
    if FINETUNE_MODES[name] == "none":
        raise InputError(f"config methods.{name}.source: {name} does not fine-tune (remove `source`)")
    keys = {shipped_checkpoint(name, b)[1] for b in labels}
    missing = sorted(keys - set(entry.get("sha256", {})))
    if missing:
        raise InputError(f"config methods.{name}.sha256 lacks {missing}: a shipped fine-tune is imported only "
                         "by its sha256 (or set source: train)")


def _check_official(config: dict, name: str, method, options, heads: int) -> None:
    """source: official: the authors' checkpoint of every budget is named (methods.<name>.official.<budget>), in
    the budget's own label; one MLP group per head, as theirs; no plateau or seed-noise fine-tunes to repeat."""
    entry = config["methods"][name]
    official = entry.get("official") or {}
    for label in official:
        _budget(method, f"methods.{name}.official", label)
    missing = [b for b in entry["budgets"] if b not in official]
    if missing:
        raise InputError(f"config methods.{name}.official lacks {missing}: with source official every budget needs "
                         f"the authors' checkpoint (methods.{name}.official.<budget>.checkpoint), or set source: train")
    if getattr(options, "mlp_groups", None) not in (None, heads):
        raise InputError(f"config methods.{name}.options.mlp_groups {options.mlp_groups}: the authors' checkpoints "
                         f"have one MLP group per head ({heads}); leave it null with source official")
    for section in ("plateau", "seed_noise"):
        if name in config.get("finetune", {}).get(section, {}).get("budgets", {}):
            raise InputError(f"config finetune.{section}.budgets.{name}: {name} samples the authors' checkpoints "
                             "(source: official), there is no fine-tune of this study to repeat")


# What the generated pixel datasets provide: grey images of the ten digits.
PIXEL_DATASETS = {"glyphs": {"in_channels": 1, "num_classes": 10}, "digits": {"in_channels": 1, "num_classes": 10}}


def _check_pixel_dataset(config: dict) -> None:
    dataset = config["dataset"]
    for key, value in PIXEL_DATASETS.get(dataset["name"], {}).items():
        if config["base"][key] != value:
            raise InputError(f"config base.{key} is {config['base'][key]}, but dataset {dataset['name']} provides "
                             f"{value} ({'grey images' if key == 'in_channels' else 'the ten digits'})")


def _check_dataset(config: dict) -> None:
    dataset, metrics, sampling = config["dataset"], config["metrics"], config["sampling"]
    if dataset["name"] == "glyphs":
        need = metrics["calibration"]["replicates"] * sampling["num_samples"]
        if metrics["feature_extractor"] == "glyph-cnn" and dataset["draws"]["floor"] < need:
            raise InputError(f"config dataset.draws.floor ({dataset['draws']['floor']}) must hold "
                             f"calibration.replicates x sampling.num_samples = {need} images")
        if dataset["draws"]["floor"] < sampling["num_samples"]:
            raise InputError(f"config dataset.draws.floor must be >= sampling.num_samples ({sampling['num_samples']})")
    if metrics["feature_extractor"] == "glyph-cnn" and dataset["name"] != "glyphs":
        raise InputError("config metrics.feature_extractor glyph-cnn needs dataset.name glyphs (its heads are the "
                         "glyph attributes); use digits-classifier for digits")


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
    extractor = metrics.get("extractor", {})
    if metrics["feature_extractor"] != "inception-v3-compat" and extractor.get("source") == "checkpoint":
        if not extractor.get("checkpoint"):
            raise InputError("config metrics.extractor.checkpoint is required when its source is 'checkpoint'")
        paths.append(("metrics.extractor.checkpoint", resolve_path(extractor["checkpoint"], root), "file"))
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
    for name, entry in config["methods"].items():
        if entry.get("source", "train") == "checkpoint" and FINETUNE_MODES[name] != "none":
            for budget in entry["budgets"]:
                path, key = shipped_checkpoint(name, budget, config["finetune"]["shipped_dir"])
                paths.append((f"methods.{name} shipped fine-tune {key}", resolve_path(path, root), "file"))
        if entry.get("source") == OFFICIAL:
            for budget in entry["budgets"]:
                if budget in (entry.get("official") or {}):
                    paths.append((f"methods.{name}.official.{budget}.checkpoint",
                                  resolve_path(entry["official"][budget]["checkpoint"], root), "file"))
    return list(dict.fromkeys(paths))


def _exists(path: Path, kind: str) -> bool:
    if kind == "file":
        return path.is_file()
    if kind == "vae":
        return (path / "config.json").is_file()
    return path.is_dir()


def check_video_study(video: dict, root: str | Path) -> None:
    """The toy video study's config (section ``video``, schema-validated): registered shapes that fit together,
    the static step ladders' budgets, draws large enough for the metrics, and every local input present. Raise
    InputError naming the first problem."""
    from ditpareto.archs import DIT_ARCHS, LATTE_ARCHS, LATTE_IMAGE_BASE

    base, paper = video["base"], "dataset" in video
    if base["model"] not in LATTE_ARCHS:
        raise InputError(f"config video.base.model {base['model']!r} is not a Latte model; choose one of "
                         f"{sorted(LATTE_ARCHS)}")
    if paper:
        _check_paper_video(video, root)
    elif (image := video["image_base"]["model"]) not in DIT_ARCHS or image != LATTE_IMAGE_BASE[base["model"]]:
        raise InputError(f"config video.image_base.model {image!r}: {base['model']}'s spatial blocks come from "
                         f"{LATTE_IMAGE_BASE[base['model']]} (same width, half the depth)")
    latte_config(base["model"], base.get("image_size", 16), in_channels=base["in_channels"],
                 num_classes=base["num_classes"])
    for name, entry in video["methods"].items():
        if not get_spec(name).video:
            raise InputError(f"config video.methods.{name}: {name} runs on image DiTs only (not on a Latte base)")
        get_vocabulary(name).parse_options(entry.get("options", {}))
        if FINETUNE_MODES[name] != "none" and not video.get("finetune", {}).get("train_gmacs"):
            raise InputError(f"config video.methods.{name} fine-tunes: set video.finetune.train_gmacs (the shared "
                             "training compute)")
        _unique(f"video.methods.{name}.budgets", entry["budgets"])
        for budget in entry["budgets"]:
            _budget(get_vocabulary(name), f"video.methods.{name}.budgets", budget)
        if entry.get("source", "train") == "checkpoint":
            if FINETUNE_MODES[name] == "none":
                raise InputError(f"config video.methods.{name}.source: {name} does not fine-tune")
            shipped_dir = video.get("finetune", {}).get("shipped_dir", "assets/video/finetuned")
            for budget in entry["budgets"]:
                path, _ = shipped_checkpoint(name, budget, shipped_dir)
                if not resolve_path(path, root).is_file():
                    raise InputError(f"config video.methods.{name}.source is checkpoint: {resolve_path(path, root)} "
                                     "does not exist (source: train fine-tunes here)")
    sampling = video["sampling"]
    _unique("video.sampling.seeds", sampling["seeds"])
    if paper:
        return
    draws = video["draws"]
    if (base["in_channels"], base["num_classes"]) != (1, 10):
        raise InputError("config video.base: the toy study's clips are grey (in_channels 1) with ten digit classes "
                         "(num_classes 10)")
    if draws["reference"] < sampling["num_samples"] or draws["floor"] < sampling["num_samples"]:
        raise InputError(f"config video.draws.reference and floor must hold sampling.num_samples "
                         f"({sampling['num_samples']}) clips each")
    paths = [("video.frame_extractor.checkpoint", video["frame_extractor"]["checkpoint"])]
    if base["source"] == "pretrain" and not base.get("pretrain"):
        raise InputError("config video.base.pretrain is required when video.base.source is 'pretrain'")
    if base["source"] == "checkpoint":
        if not base.get("checkpoint"):
            raise InputError("config video.base.checkpoint is required when video.base.source is 'checkpoint'")
        paths.append(("video.base.checkpoint", base["checkpoint"]))
    elif base.get("init"):
        paths.append(("video.base.init.checkpoint", base["init"]["checkpoint"]))
    for key, path in paths:
        if not resolve_path(path, root).is_file():
            raise InputError(f"config {key}: {resolve_path(path, root)} does not exist")


def _check_paper_video(video: dict, root: str | Path) -> None:
    """The paper video setting: a shipped (official) Latte base and every local input present, all missing ones
    named in one line."""
    base, dataset = video["base"], video["dataset"]
    if base["source"] != "checkpoint" or not base.get("checkpoint"):
        raise InputError("config video.base: the paper setting starts from a Latte checkpoint (source: checkpoint "
                         "and its path), e.g. the official Latte-XL/2 of the dataset")
    if base["in_channels"] != 4:
        raise InputError("config video.base.in_channels must be 4: the paper setting runs in SD-VAE latents")
    conditional = dataset["layout"] == "ucf101"
    if conditional != (base["num_classes"] > 0):
        raise InputError(f"config video.base.num_classes {base['num_classes']}: {dataset['layout']} is "
                         f"{'class-conditional (UCF101: 101)' if conditional else 'unconditional (0)'}")
    if not conditional and video["sampling"].get("cfg_scale", 1.5) != 1:
        raise InputError(f"config video.sampling.cfg_scale must be 1 for the unconditional {dataset['layout']}")
    inputs = [("video.dataset.path", dataset["path"], "dir"), ("video.latents.vae", video["latents"]["vae"], "dir"),
              ("video.fvd.i3d", video["fvd"]["i3d"], "file"), ("video.base.checkpoint", base["checkpoint"], "file")]
    missing = [f"{key} ({resolve_path(path, root)})" for key, path, kind in inputs
               if not (resolve_path(path, root).is_dir() if kind == "dir" else resolve_path(path, root).is_file())]
    if missing:
        raise InputError(f"missing inputs (nothing is downloaded; see the config's header): {'; '.join(missing)}")

