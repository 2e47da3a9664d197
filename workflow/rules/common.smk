# Plumbing only: config validation, wildcard constraints and input/param helpers. No rules here.

import dataclasses
import json
import shlex
import sys

from ditpareto import study
from ditpareto.spec import FINETUNE_MODES
from ditpareto.config import check_config_files, check_study
from ditpareto.errors import InputError
from snakemake.utils import validate


include: "plumbing.smk"


try:
    check_config_files(workflow.configfiles)
    validate(config, schema="../schemas/config.schema.yaml")
    check_study(config, REPO_ROOT)
except InputError as exc:  # one line, no traceback: what is wrong and the ways forward
    sys.exit(f"ditpareto: {exc}")


# Guidance scales a long run recorded (sampling.cfg_recorded; checked above): sampled instead of the fixed scale.
RECORDED_CFG = (config["sampling"].get("cfg_recorded") or {}).get("table")
RECORDED_CFG = repo_file(RECORDED_CFG) if RECORDED_CFG else None
RECORDED_SCALES = study.read_recorded_scales(RECORDED_CFG) if RECORDED_CFG else None


wildcard_constraints:
    method="|".join(config["methods"]),
    budget=study.BUDGET_PATTERN,
    steps=r"\d+",
    ft=r"\d+\.\d\d(s\d+)?",
    run=r"(budget~[0-9][0-9.\-]*/)?ft~\d+\.\d\d(s\d+)?",
    cfg=r"\d+\.\d\d",
    seed=r"\d+",
    shard=r"\d+",
    shards=r"\d+",
    draw="|".join(study.DRAWS),


def q(value):
    """A value as one shell word."""
    return shlex.quote(str(value))


def model_flags():
    base = config["base"]
    values = {**base, "image_size": config["dataset"]["image_size"]}
    return study.argv(values, ["model", "image_size", "in_channels", "num_classes"])


def sampling_flags(wildcards):
    s = config["sampling"]
    values = {
        **s,
        "reference_steps": s["steps"][0],
        "num_samples": study.num_samples(config, int(wildcards.seed)),
    }
    return study.argv(
        values,
        [
            "sampler",
            "guidance_channels",
            "num_samples",
            "batch_size",
            "reference_steps",
            "precision",
        ],
    )


def device_flag():
    """--device: where every job that runs a network computes (config `device`; never a silent CPU fallback)."""
    return study.argv(config, ["device"])


def pretrain_flags():
    return study.argv({**config["base"]["pretrain"], "device": config["device"]})


def get_base_source(wildcards):
    if config["base"]["source"] == "pretrain":
        return "resources/pretrained/pretrained_here.pt"
    return repo_file(config["base"]["checkpoint"])


def sha256_flag():
    shipped = config["base"]["source"] == "checkpoint"
    return study.argv({"sha256": config["base"].get("sha256") if shipped else None})


def external(key_path):
    """A local input named by config (dotted key), resolved against the repository root."""
    section, key = key_path.split(".")
    return repo_file(config[section][key])


def latent_flags():
    """--vae/--latent-scale for latent (paper) studies; empty in pixel space."""
    latents = config.get("latents", {})
    if not latents.get("vae"):
        return ""
    return study.argv({"vae": external("latents.vae"), "latent_scale": latents["scale_factor"]})


def dataset_flags(wildcards):
    d = {**config["dataset"], "dataset": config["dataset"]["name"]}
    if d["name"] == "glyphs":
        return study.argv(
            {**d, "num": d["draws"][wildcards.draw]}, ["dataset", "image_size", "seed", "num"]
        )
    if d["name"] == "digits":
        return study.argv(d, ["dataset", "image_size", "heldout_fraction", "split_seed"])
    values = {
        **d,
        "path": external("dataset.path"),
        "encode_seed": config["latents"]["encode_seed"],
    }
    keys = ["dataset", "image_size", "path", "encode_batch_size", "encode_seed", "max_per_class"]
    return f"{study.argv(values, keys)} {latent_flags()} {device_flag()}"


def get_dataset_inputs(wildcards):
    """The VAE's config for latent studies (the image folder is checked at start, not tracked file by file)."""
    if config["dataset"]["name"] != "imagefolder":
        return []
    return [f"{external('latents.vae')}/config.json"]


def reference_batch():
    return bool(config["metrics"].get("reference_batch"))


def get_metric_reference(wildcards):
    """What FID compares against: the ADM reference batch (paper) or the reference draw."""
    if reference_batch():
        return external("metrics.reference_batch")
    return "resources/data/reference.npz"


def get_recorded_noise(wildcards):
    """The fine-tune seed spreads a long run recorded (finetune.noise_recorded; checked at start), if any."""
    table = (config.get("finetune", {}).get("noise_recorded") or {}).get("table")
    return [repo_file(table)] if table else []


def recorded_noise_flags(input):
    if not input.noise_recorded:
        return ""
    sha = config["finetune"]["noise_recorded"]["sha256"]
    return study.argv({"noise_recorded": input.noise_recorded[0], "noise_sha256": sha})


def get_recorded_plateau(wildcards):
    """The plateau points a long run recorded (finetune.plateau_recorded; checked at start), if any."""
    table = (config.get("finetune", {}).get("plateau_recorded") or {}).get("table")
    return [repo_file(table)] if table else []


def recorded_plateau_flags(input):
    if not input.plateau_recorded:
        return ""
    sha = config["finetune"]["plateau_recorded"]["sha256"]
    return study.argv({"plateau_recorded": input.plateau_recorded[0], "plateau_sha256": sha})


def get_reference_stats(wildcards):
    """The reference draw's features, k-NN radii and resampled statistics, shared by every evaluate job (none for
    a reference batch)."""
    if reference_batch():
        return []
    return ["resources/fid/reference_stats.npz"]


def flag_of(flag, paths):
    """``flag 'path'`` for a one-element input list, nothing for an empty one."""
    return f"{flag} {q(paths[0])}" if len(paths) else ""


def reference_flag():
    return "--reference-batch" if reference_batch() else "--reference"


def get_floor(wildcards):
    return [] if reference_batch() else ["resources/data/floor.npz"]


def floor_flags(input):
    if reference_batch():
        return ""
    return study.argv({"floor": input.floor, "floor_samples": config["sampling"]["num_samples"]})


def shard_count():
    return config["sampling"]["shards"]


def get_shards(wildcards):
    """The grid point's sample shards and their records (shard~I-of-K, I = 0..K-1)."""
    point = study.GridPoint(
        wildcards.method,
        wildcards.budget,
        int(wildcards.steps),
        wildcards.ft,
        wildcards.cfg,
        int(wildcards.seed),
    )
    names = [
        study.shard_stem("results/samples", point, i, shard_count()) for i in range(shard_count())
    ]
    return {"shards": [f"{n}.npz" for n in names], "records": [f"{n}.record.json" for n in names]}


def trained_extractor():
    return config["metrics"]["feature_extractor"] != "inception-v3-compat"


def get_extractor_weights(wildcards):
    if trained_extractor():
        return "resources/fid/extractor.pt"
    return repo_file(config["metrics"]["inception_weights"])


def get_extractor_source(wildcards):
    e = config["metrics"]["extractor"]
    if e["source"] == "train":
        return "resources/fid/extractor_here.pt"
    return repo_file(e["checkpoint"])


def extractor_sha256_flag():
    e = config["metrics"]["extractor"]
    return study.argv({"sha256": e.get("sha256") if e["source"] == "checkpoint" else None})


def metric_flags():
    m = config["metrics"]
    values = {
        **m,
        "extractor": m["feature_extractor"],
        "bootstrap_replicates": m["bootstrap"]["replicates"],
        "bootstrap_seed": m["bootstrap"]["seed"],
        "device": config["device"],
    }
    keys = [
        "extractor",
        "kid_subset_size",
        "bootstrap_replicates",
        "bootstrap_seed",
        "head_samples",
        "device",
    ]
    return study.argv(values, keys)


def get_method_checkpoint(wildcards):
    """The checkpoint a grid point samples (the base for dit)."""
    if FINETUNE_MODES[wildcards.method] == "none":
        return "resources/pretrained/base.pt"
    return study.finetuned_checkpoint(wildcards.method, wildcards.budget, wildcards.ft)


def run_budget(wildcards):
    """The budget a fine-tune run trains for ("" for a shared fine-tune)."""
    head = wildcards.run.split("/")[0]
    return head[len("budget~") :] if head.startswith("budget~") else ""


def run_ft(wildcards):
    return wildcards.run.split("ft~")[-1]


def official_checkpoint(wildcards):
    """The authors' checkpoint of the run's budget (source: official; checked at start), else None."""
    entry = config["methods"][wildcards.method]
    if entry.get("source") != study.OFFICIAL or run_ft(wildcards) != study.UNIT_FINETUNE:
        return None
    return entry["official"][run_budget(wildcards)]


def import_command(wildcards):
    """import-official converts the authors' checkpoint; import-finetuned checks a fine-tune with its record."""
    return "import-official" if official_checkpoint(wildcards) else "import-finetuned"


def get_finetuned_source(wildcards):
    """The authors' checkpoint (source: official), a shipped fine-tune (source: checkpoint, shared compute) or the
    one trained here."""
    entry, budget = config["methods"][wildcards.method], run_budget(wildcards)
    official = official_checkpoint(wildcards)
    if official:
        return {"weights": repo_file(official["checkpoint"])}
    if entry.get("source", "train") == "checkpoint" and run_ft(wildcards) == study.UNIT_FINETUNE:
        path, _ = study.shipped_checkpoint(
            wildcards.method, budget, config["finetune"]["shipped_dir"]
        )
        path = repo_file(path)
    else:
        path = f"results/checkpoints/{wildcards.method}/{wildcards.run}/trained.pt"
    return {"weights": path, "record": f"{path}.json"}


def finetuned_sha256_flag(wildcards):
    entry, official = config["methods"][wildcards.method], official_checkpoint(wildcards)
    if official:
        return study.argv({"sha256": official.get("sha256")})
    if entry.get("source", "train") != "checkpoint" or run_ft(wildcards) != study.UNIT_FINETUNE:
        return ""
    _, key = study.shipped_checkpoint(wildcards.method, run_budget(wildcards))
    return study.argv(
        {
            "sha256": entry.get("sha256", {}).get(key),
            "record_sha256": entry.get("record_sha256", {}).get(key),
        }
    )


def record_gmacs_flag(wildcards):
    """import-finetuned checks the record's training GMACs against the run's target (finetune.train_gmacs x its
    multiple); the authors' checkpoints state none."""
    gmacs = config["finetune"].get("train_gmacs")
    if official_checkpoint(wildcards) or not gmacs:
        return ""
    return study.argv({"train_gmacs": f"{gmacs * study.parse_ft(run_ft(wildcards))[0]:g}"})


def budget_flag(wildcards):
    return study.argv({"budget": run_budget(wildcards) or None})


def options_flag(wildcards):
    """Method options as one shell-quoted JSON argument."""
    options = config["methods"][wildcards.method].get("options", {})
    return study.argv({"options": json.dumps(options, sort_keys=True)})


def finetune_flags(wildcards):
    """The shared recipe; the compute (train_gmacs, else steps) scaled by the run's multiple ft, and its own seed
    for a seed-noise repeat (ft~1.00s<seed>)."""
    f = config["finetune"]
    scale, seed = study.parse_ft(run_ft(wildcards))
    values = {
        **f,
        "seed": f["seed"] if seed is None else seed,
        "train_gmacs": f["train_gmacs"] * scale if f.get("train_gmacs") else None,
        "steps": None if f.get("train_gmacs") else max(1, round(f["steps"] * scale)),
    }
    # the recipe's fields are the finetune command's flags (commands.add_flags)
    return study.argv(values, [f.name for f in dataclasses.fields(study.FinetuneRecipe)])


def grid_points():
    return study.grid_points(config, RECORDED_SCALES)


def get_all_metrics(wildcards):
    return [str(study.metrics_file("results/metrics", p)) for p in grid_points()]


def get_selection_metrics(wildcards):
    return [str(study.metrics_file("results/metrics", p)) for p in study.selection_points(config)]


def get_cfg_selection_table(wildcards):
    """The select-cfg table when the study selects guidance scales on a held-out seed or samples recorded ones."""
    return (
        ["results/tables/cfg_selection.csv"]
        if study.selection_points(config) or RECORDED_CFG
        else []
    )


def get_recorded_cfg(wildcards):
    return [RECORDED_CFG] if RECORDED_CFG else []


def select_cfg_source(input):
    """select-cfg's choices: the selection seed's records, or the recorded table (sha256-checked)."""
    if input.recorded:
        return study.argv(
            {"recorded": input.recorded[0], "sha256": config["sampling"]["cfg_recorded"]["sha256"]}
        )
    return "--selection " + " ".join(q(path) for path in input.selection)


def cfg_selection_flag(input):
    return flag_of("--cfg-selection", input.cfg_selection)


def latency_points():
    """One point per distinct compute (method, budget, steps, fine-tune) at the fixed scale and the first seed:
    guidance scale and seed do not change the work."""
    fixed = study.cfg_label(config["sampling"]["cfg_scale"])
    seen, points = set(), []
    for p in grid_points():
        key = (p.method, p.budget, p.steps, p.ft)
        # plateau fine-tunes and seed repeats do the same work as the study's own fine-tune: not timed again
        if key in seen or p.ft not in (study.NO_FINETUNE, study.UNIT_FINETUNE):
            continue
        seen.add(key)
        weights = (
            "resources/pretrained/base.pt"
            if FINETUNE_MODES[p.method] == "none"
            else study.finetuned_checkpoint(p.method, p.budget, p.ft)
        )
        points.append(
            {
                "method": p.method,
                "budget": p.budget,
                "steps": p.steps,
                "ft": p.ft,
                "cfg_scale": float(fixed),
                "seed": config["sampling"]["seeds"][0],
                "options": config["methods"][p.method].get("options", {}),
                "checkpoint": weights,
            }
        )
    return points


def get_latency_checkpoints(wildcards):
    return sorted({p["checkpoint"] for p in latency_points()})


def get_grid_samples(wildcards):
    """Samples of the first seed at the fixed guidance scale (each point's recorded one: sampling.cfg_recorded) and
    the shared fine-tune: one row per grid point."""
    cfg, seed = study.cfg_label(config["sampling"]["cfg_scale"]), config["sampling"]["seeds"][0]
    return [
        str(study.samples_file("results/samples", p))
        for p in grid_points()
        if (RECORDED_CFG or p.cfg == cfg)
        and p.seed == seed
        and p.ft in (study.NO_FINETUNE, study.UNIT_FINETUNE)
    ]


def fixed_cfg():
    """The scale the figures call fixed: none when every point is at its recorded scale (sampling.cfg_recorded)."""
    return None if RECORDED_CFG else config["sampling"]["cfg_scale"]


def guidance_flag():
    """The verdicts' guidance: fixed; fixed and selected with a held-out-seed selection; the recorded scales only."""
    if RECORDED_CFG:
        return "--guidance selected"
    return "--guidance fixed selected" if study.selection_points(config) else "--guidance fixed"


def final_targets():
    targets = [
        "results/tables/metrics.csv",
        "results/notebooks/pareto.ipynb",
        "results/notebooks/latency.ipynb",
        "results/notebooks/claims.ipynb",
        "results/notebooks/samples.ipynb",
    ]
    if config["metrics"]["feature_extractor"] == "glyph-cnn":
        targets.append("results/metrics/calibration.csv")
    if config["metrics"]["bootstrap"]["replicates"]:
        targets += ["results/tables/verdicts.csv", "results/summary.md"]
    targets += get_cfg_selection_table(None)
    return targets


def study_scale():
    """This run's scale in words (the summary's first line)."""
    base, data = config["base"], config["dataset"]
    extractor = config["metrics"]["feature_extractor"]
    scale = "toy scale" if extractor != "inception-v3-compat" else "paper scale"
    return (
        f"{scale}: {base['model']} on {data['image_size']}-px {data['name']}, FID in {extractor} features, "
        f"{config['sampling']['num_samples']} samples a point, device {config['device']}"
    )


def notebook_parameters(input, **extra):
    """Papermill parameters (JSON) shared by the figure notebooks."""
    parameters = {
        "table_path": input.table,
        "reference_path": input.reference,
        "fixed_cfg": fixed_cfg(),
        "out_dir": "results/figures",
        **extra,
    }
    return json.dumps(parameters, sort_keys=True)
