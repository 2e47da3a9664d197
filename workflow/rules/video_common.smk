# Plumbing of the video studies (rules/video*.smk): config validation, wildcard constraints, param helpers.

import dataclasses
import json
import sys

from ditpareto import study
from ditpareto.spec import FINETUNE_MODES, STEP_BUDGET_METHODS
from ditpareto.config import check_config_files, check_video_study
from ditpareto.errors import InputError
from snakemake.utils import validate


include: "plumbing.smk"


try:
    check_config_files(workflow.configfiles)
    validate(config["video"], schema="../schemas/video.schema.yaml")
    check_video_study(config["video"], REPO_ROOT)
except InputError as exc:
    sys.exit(f"ditpareto: {exc}")

VIDEO = config["video"]
V = "results/video"
# The paper setting: one of Latte's datasets (config video.dataset) in SD-VAE latents, FVD with I3D.
PAPER_VIDEO = "dataset" in VIDEO


def video_model_flags():
    b = VIDEO["base"]
    return study.argv(
        {**b, "model": b["model"], "image_size": b.get("image_size", 16)},
        ["model", "image_size", "in_channels", "num_classes"],
    )


def image_model_flags():
    b = VIDEO["base"]
    values = {
        "model": VIDEO["image_base"]["model"],
        "image_size": b.get("image_size", 16),
        "in_channels": b["in_channels"],
        "num_classes": b["num_classes"],
    }
    return study.argv(values)


def train_flags(section):
    return study.argv(VIDEO[section]["pretrain"])


def video_points():
    """(method, budget, cfg, seed) of every grid point: each budget at the study's scale."""
    cfg = f"{VIDEO['sampling'].get('cfg_scale', 1.5):.2f}"
    return [
        (m, b, cfg, s)
        for m, entry in VIDEO["methods"].items()
        for b in entry["budgets"]
        for s in VIDEO["sampling"]["seeds"]
    ]


def point_path(root, point, suffix):
    method, budget, cfg, seed = point
    return f"{root}/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}{suffix}"


def get_video_base_source(wildcards):
    if VIDEO["base"]["source"] == "checkpoint":
        return repo_file(VIDEO["base"]["checkpoint"])
    return "resources/video/base_here.pt"


def get_video_pretrain_start(wildcards):
    init = VIDEO["base"].get("init")
    return repo_file(init["checkpoint"]) if init else "resources/video/image_base.pt"


def video_pretrain_start_flags(wildcards, input):
    init = VIDEO["base"].get("init")
    if init:
        return study.argv({"init": input.start, "init_sha256": init["sha256"]})
    return study.argv({"image_base": input.start})


def video_base_sha256_flag():
    shipped = VIDEO["base"]["source"] == "checkpoint"
    return study.argv({"sha256": VIDEO["base"].get("sha256") if shipped else None})


def video_targets():
    """What `snakemake` builds for a video study: the table, the figures and (toy) the extractor's validation and
    the verdicts."""
    toy = [] if PAPER_VIDEO else [f"{V}/tables/clip_validation.csv", f"{V}/tables/verdicts.csv"]
    return [f"{V}/tables/metrics.csv", *toy, f"{V}/figures/pareto.png"]


def video_sampling_flags():
    """The sample job's flags; the paper setting adds the SD-VAE (frames decoded one by one), device and
    numerics."""
    s = {**VIDEO["sampling"], "reference_steps": full_steps()}
    keys = ["sampler", "guidance_channels", "num_samples", "batch_size", "reference_steps"]
    if PAPER_VIDEO:
        s.update(
            vae=repo_file(VIDEO["latents"]["vae"]),
            latent_scale=VIDEO["latents"].get("scale_factor", 0.18215),
            device=VIDEO.get("device", "auto"),
        )
        keys += ["vae", "latent_scale", "device", "precision"]
    return study.argv(s, [k for k in keys if k in s])


def paper_dataset_flags():
    d = VIDEO["dataset"]
    return study.argv(
        {**d, "root": repo_file(d["path"])}, ["layout", "root", "frames", "interval", "size"]
    )


def paper_fvd_flags():
    f = VIDEO["fvd"]
    return study.argv(
        {**f, "device": VIDEO.get("device", "auto")},
        [k for k in ("clips", "stride", "seed", "batch_size", "device") if k in f or k == "device"],
    )


def video_run(method, budget):
    """A fine-tune's run folder: one per budget for per-budget methods (DyDiT, FlexDiT), else one shared."""
    if FINETUNE_MODES[method] == "per_budget":
        return f"budget~{study.checkpoint_budget(budget)}"
    return "shared"


def get_video_checkpoint(wildcards):
    """What a grid point samples: the base (dit), else the method's fine-tune."""
    if FINETUNE_MODES[wildcards.method] == "none":
        return "resources/video/base.pt"
    run = video_run(wildcards.method, wildcards.budget)
    return f"{V}/checkpoints/{wildcards.method}/{run}/finetuned.pt"


def video_run_budget(wildcards):
    return wildcards.run.split("~", 1)[1] if wildcards.run != "shared" else None


def video_run_budget_flag(wildcards):
    return study.argv({"budget": video_run_budget(wildcards)})


def shipped_video_finetune(wildcards):
    """(path, sha256 key) of a method's shipped fine-tune, or None when it trains here (source: train)."""
    if VIDEO["methods"][wildcards.method].get("source", "train") != "checkpoint":
        return None
    shipped_dir = VIDEO.get("finetune", {}).get("shipped_dir", "assets/video/finetuned")
    return study.shipped_checkpoint(
        wildcards.method, video_run_budget(wildcards) or "", shipped_dir
    )


def get_video_finetuned_source(wildcards):
    shipped = shipped_video_finetune(wildcards)
    path = (
        repo_file(shipped[0])
        if shipped
        else f"{V}/checkpoints/{wildcards.method}/{wildcards.run}/trained.pt"
    )
    return {"weights": path, "record": f"{path}.json"}


def video_finetuned_sha256_flags(wildcards):
    shipped = shipped_video_finetune(wildcards)
    if not shipped:
        return ""
    entry, key = VIDEO["methods"][wildcards.method], shipped[1]
    return study.argv(
        {
            "sha256": entry.get("sha256", {}).get(key),
            "record_sha256": entry.get("record_sha256", {}).get(key),
        }
    )


def video_ft(wildcards):
    """The training-compute multiple a point's record carries: 0.00 for the untouched base, 1.00 for a fine-tune."""
    return "0.00" if FINETUNE_MODES[wildcards.method] == "none" else "1.00"


def video_finetune_flags():
    recipe = {**VIDEO.get("finetune", {}), "device": VIDEO.get("device")}
    keys = [f.name for f in dataclasses.fields(study.FinetuneRecipe) if f.name in recipe]
    return study.argv(recipe, keys + ["device"])


def video_steps(wildcards):
    """A point's sampling steps: its budget on a step ladder, else the study's step count."""
    return (
        wildcards.budget
        if wildcards.method in STEP_BUDGET_METHODS
        else VIDEO["sampling"].get("steps", 10)
    )


def video_options(wildcards):
    """A method's options as one shell-quoted JSON argument."""
    options = VIDEO["methods"][wildcards.method].get("options", {})
    return study.argv({"options": json.dumps(options, sort_keys=True)})


def full_steps():
    ladders = [
        int(b)
        for m, e in VIDEO["methods"].items()
        if m in STEP_BUDGET_METHODS
        for b in e["budgets"]
    ]
    return max(ladders + [VIDEO["sampling"].get("steps", 10)])


wildcard_constraints:
    draw="|".join(study.DRAWS),
    method="|".join(VIDEO["methods"]),
    budget=r"[0-9][0-9.\-]*",
    cfg=r"\d+\.\d\d",
    seed=r"\d+",
    run=r"shared|budget~[^/]+",
