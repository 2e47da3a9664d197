# Plumbing only: config validation, wildcard constraints and input/param helpers. No rules here.

import json
import shlex

import ditpareto
from ditpareto.config import check_study, resolve_path
from ditpareto.methods import get_method
from ditpareto.results import cfg_label, samples_file
from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")
check_study(config, workflow.basedir)

VERSION = ditpareto.__version__
ENV = "../../envs/ditpareto.yaml"


wildcard_constraints:
    method="|".join(config["methods"]),
    budget=r"[0-9][0-9.\-]*",
    cfg=r"\d+\.\d\d",
    seed=r"\d+",
    shard=r"\d+",
    shards=r"\d+",


def model_flags():
    base = config["base"]
    return (
        f"--model {base['model']} --image-size {config['dataset']['image_size']} "
        f"--in-channels {base['in_channels']} --num-classes {base['num_classes']}"
    )


def sampling_flags():
    s = config["sampling"]
    return (
        f"--sampler {s['sampler']} --steps {s['steps']} "
        f"--guidance-channels {s['guidance_channels']} --num-samples {s['num_samples']} "
        f"--batch-size {s['batch_size']}"
    )


def pretrain_flags():
    p = config["base"]["pretrain"]
    return (
        f"--steps {p['steps']} --batch-size {p['batch_size']} --lr {p['lr']} "
        f"--ema-decay {p['ema_decay']} --seed {p['seed']} --class-dropout {p['class_dropout']}"
    )


def get_base_source(wildcards):
    if config["base"]["source"] == "pretrain":
        return "resources/pretrained/pretrained_here.pt"
    return str(resolve_path(config["base"]["checkpoint"], workflow.basedir))


def sha256_flag():
    sha = config["base"].get("sha256")
    return f"--sha256 {sha}" if sha and config["base"]["source"] == "checkpoint" else ""


def external(key_path):
    """A local input named by config (dotted key), resolved against the repository root."""
    section, key = key_path.split(".")
    return str(resolve_path(config[section][key], workflow.basedir))


def latent_flags():
    """--vae/--latent-scale for latent (paper) studies; empty in pixel space."""
    latents = config.get("latents", {})
    if not latents.get("vae"):
        return ""
    return f"--vae {shlex.quote(external('latents.vae'))} --latent-scale {latents['scale_factor']}"


def dataset_flags():
    d = config["dataset"]
    if d["name"] == "digits":
        return (
            f"--dataset digits --image-size {d['image_size']} --heldout-fraction {d['heldout_fraction']} "
            f"--split-seed {d['split_seed']}"
        )
    flags = (
        f"--dataset imagefolder --image-size {d['image_size']} --path {shlex.quote(external('dataset.path'))} "
        f"--encode-batch-size {d['encode_batch_size']} --encode-seed {config['latents']['encode_seed']} "
        f"{latent_flags()}"
    )
    return flags + (f" --max-per-class {d['max_per_class']}" if d.get("max_per_class") else "")


def get_dataset_inputs(wildcards):
    """The VAE's config for latent studies (the image folder is checked at start, not tracked file by file)."""
    if config["dataset"]["name"] == "digits":
        return []
    return [f"{external('latents.vae')}/config.json"]


def get_metric_reference(wildcards):
    """What FID compares against: the ADM reference batch (paper) or the prepared dataset's train split."""
    if config["metrics"].get("reference_batch"):
        return external("metrics.reference_batch")
    return "resources/data/dataset.npz"


def reference_flag():
    return "--reference-batch" if config["metrics"].get("reference_batch") else "--data"


def shard_count():
    return config["sampling"]["shards"]


def get_shards(wildcards):
    """The grid point's sample shards and their records (shard~I-of-K, I = 0..K-1)."""
    stem = f"results/samples/{wildcards.method}/budget~{wildcards.budget}/cfg~{wildcards.cfg}/seed~{wildcards.seed}"
    names = [f"{stem}/shard~{i}-of-{shard_count()}" for i in range(shard_count())]
    return {"shards": [f"{n}.npz" for n in names], "records": [f"{n}.record.json" for n in names]}


def get_extractor_weights(wildcards):
    if config["metrics"]["feature_extractor"] == "digits-classifier":
        return "resources/fid/classifier.pt"
    return str(resolve_path(config["metrics"]["inception_weights"], workflow.basedir))


def metric_flags():
    m = config["metrics"]
    return f"--extractor {m['feature_extractor']} --kid-subset-size {m['kid_subset_size']}"


def get_method_checkpoint(wildcards):
    mode = get_method(wildcards.method).finetune_mode
    if mode == "none":
        return "resources/pretrained/base.pt"
    if mode == "shared":
        return f"results/checkpoints/{wildcards.method}/finetuned.pt"
    return f"results/checkpoints/{wildcards.method}/budget~{wildcards.budget}/finetuned.pt"


def options_flag(wildcards):
    """Method options as one shell-quoted JSON argument."""
    options = config["methods"][wildcards.method].get("options", {})
    return f"--options {shlex.quote(json.dumps(options, sort_keys=True))}"


def finetune_flags(wildcards):
    f = config["methods"][wildcards.method]["finetune"]
    return (
        f"--steps {f['steps']} --batch-size {f['batch_size']} --lr {f['lr']} "
        f"--ema-decay {f['ema_decay']} --seed {f['seed']} --checkpoint-every {f['checkpoint_every']}"
    )


def method_cfgs(entry):
    """The fixed scale (sampling.cfg_scale) plus the method's cfg_sweep, as sorted unique labels."""
    scales = [config["sampling"]["cfg_scale"], *entry.get("cfg_sweep", [])]
    return sorted({cfg_label(s) for s in scales}, key=float)


def grid_points():
    """(method, budget, cfg, seed) of every grid point; every method shares the seeds."""
    return [
        (method, budget, cfg, seed)
        for method, entry in config["methods"].items()
        for budget in entry["budgets"]
        for cfg in method_cfgs(entry)
        for seed in config["sampling"]["seeds"]
    ]


def get_all_metrics(wildcards):
    return [f"results/metrics/{m}/budget~{b}/cfg~{c}/seed~{s}.json" for m, b, c, s in grid_points()]


def repo_file(relative):
    """A file tracked in the repository (notebooks, frozen data), wherever the working directory is."""
    return str(resolve_path(relative, workflow.basedir))


def get_grid_samples(wildcards):
    """Samples of the first seed at the fixed guidance scale: one row per (method, budget) in the grid figure."""
    cfg, seed = config["sampling"]["cfg_scale"], config["sampling"]["seeds"][0]
    return [
        str(samples_file("results/samples", m, b, cfg, seed))
        for m, entry in config["methods"].items()
        for b in entry["budgets"]
    ]


def notebook_parameters(input, **extra):
    """Papermill parameters (JSON) shared by the figure notebooks."""
    parameters = {
        "table_path": input.table,
        "reference_path": input.reference,
        "fixed_cfg": config["sampling"]["cfg_scale"],
        "out_dir": "results/figures",
        **extra,
    }
    return json.dumps(parameters, sort_keys=True)
