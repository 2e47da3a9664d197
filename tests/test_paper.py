"""The paper setting's code paths at miniature shapes: configs, missing inputs, ADM crop, sharded sampling, latents,
the reference batch, and the paper config run end to end on random-weight stand-ins of every input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import paper_assets as assets
from ditpareto.cli import main as cli
from ditpareto.config import check_study
from ditpareto.data import center_crop_arr
from ditpareto.errors import InputError
from ditpareto.results import sha256_of
from ditpareto.results import read_metrics_csv
from ditpareto.study import grid_points

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = sorted(p for p in (REPO / "config").glob("paper-*.yaml") if not p.name.startswith("paper-video"))


def snakemake(env, *args, cwd=REPO):
    result = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), *args], cwd=cwd, env=env,
                            capture_output=True, text=True)
    return result


def validated(config: dict) -> dict:
    from snakemake.utils import validate

    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def test_there_are_paper_configs_for_256_and_512():
    assert [p.name for p in PAPER_CONFIGS] == ["paper-imagenet256.yaml", "paper-imagenet512.yaml"]


@pytest.mark.parametrize("configfile", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_config_states_the_protocol(configfile):
    config = validated(assets.load_config(configfile))
    size = config["dataset"]["image_size"]
    assert config["base"]["model"] == "dit-xl-2" and f"DiT-XL-2-{size}x{size}.pt" in config["base"]["checkpoint"]
    assert f"VIRTUAL_imagenet{size}" in config["metrics"]["reference_batch"]
    assert config["metrics"]["feature_extractor"] == "inception-v3-compat"
    s = config["sampling"]
    assert (s["sampler"], s["steps"], s["cfg_scale"], s["guidance_channels"], s["num_samples"]) == (
        "ddpm", [250], 1.5, "dit3", 50000)
    assert set(config["methods"]) == {"dit", "dit-ft", "dydit", "flexdit", "flexidit", "tome", "fora", "l2c"}
    # the published protocol's numerics (DiT's and DyDiT's scripts turn TF32 on), on a GPU: docs/precision.md
    assert (config["device"], s["precision"], config["finetune"]["precision"]) == ("cuda", "tf32", "tf32")


@pytest.mark.parametrize("configfile", PAPER_CONFIGS, ids=lambda p: p.name)
def test_missing_inputs_fail_at_start_naming_key_and_path(configfile, tmp_path):
    config = validated(assets.load_config(configfile))
    with pytest.raises(InputError) as error:
        check_study(config, tmp_path)
    message = str(error.value)
    for section, key in assets.PATH_KEYS:
        assert f"{section}.{key}: {tmp_path / config[section][key]}" in message
    present = validated(assets.with_placeholders(config, tmp_path / "inputs"))
    check_study(present, tmp_path)  # every input present: no error
    del present["metrics"]["reference_batch"]
    with pytest.raises(InputError, match=r"metrics\.reference_batch is required"):
        check_study(validated(present), tmp_path)


@pytest.mark.parametrize("configfile", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_study_plans_on_the_slurm_profile(venv_env, tmp_path, configfile):
    config = assets.with_placeholders(assets.load_config(configfile), tmp_path / "inputs")
    derived = assets.write_config(config, tmp_path / configfile.name)
    result = snakemake(venv_env, "-n", "--configfile", str(derived), "--replace-workflow-config",
                       "--workflow-profile", str(REPO / "profiles/slurm"), "--directory", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(line.split() for line in result.stdout.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:])
    points = len(grid_points(validated(config)))
    assert points == sum(len(m["budgets"]) * (1 + len(m.get("cfg_sweep", []))) for m in config["methods"].values())
    assert int(counts["evaluate"]) == int(counts["merge_samples"]) == points
    assert int(counts["sample"]) == points * config["sampling"]["shards"]
    assert "train_extractor" not in counts and "calibrate" not in counts
    assert int(counts["prepare_data"]) == 1  # the train draw: FID uses the ADM reference batch


def test_adm_center_crop_resizes_the_short_side_and_takes_the_centre():
    pixels = np.zeros((300, 600, 3), dtype=np.uint8)
    pixels[:, 200:400] = 255  # a white centre band, a third of the width
    out = center_crop_arr(Image.fromarray(pixels), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[:, 16:48].min() > 200 and out[:, :5].max() < 30  # centre kept, borders of the crop are the band edge


@pytest.fixture(scope="module")
def pixel_checkpoint(tmp_path_factory):
    import torch

    from conftest import randomize_
    from ditpareto.models import build_dit

    path = tmp_path_factory.mktemp("ckpt") / "dit.pt"
    torch.manual_seed(0)
    torch.save(randomize_(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10)).state_dict(), path)
    return path


def sample_shards(checkpoint, out: Path, shards: int) -> Path:
    names = []
    for shard in range(shards):
        name = out / f"shard{shard}-of-{shards}"
        cli(["sample", "--method", "dit", "--budget", "3", "--seed", "5", "--checkpoint", str(checkpoint),
             "--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10",
             "--sampler", "ddpm", "--num-samples", "7", "--batch-size", "2", "--shard", str(shard), "--shards",
             str(shards), "--out", f"{name}.npz", "--record", f"{name}.json"])
        names.append(name)
    merged = out / f"merged-{shards}.npz"
    cli(["merge-samples", "--shards", *[f"{n}.npz" for n in names], "--records", *[f"{n}.json" for n in names],
         "--out", str(merged), "--record", str(out / f"merged-{shards}.json")])
    return merged


def test_two_and_three_shards_merge_to_identical_samples(pixel_checkpoint, tmp_path):
    two, three = sample_shards(pixel_checkpoint, tmp_path, 2), sample_shards(pixel_checkpoint, tmp_path, 3)
    assert two.read_bytes() == three.read_bytes()  # the merged npz files are byte-identical
    with np.load(two) as merged:
        assert merged["images"].shape == (7, 16, 16, 1) and list(merged["indices"]) == list(range(7))
        assert merged["images"].std() > 0
    record = json.loads((tmp_path / "merged-3.json").read_text())
    assert record["shards_merged"] == 3 and record["params"]["num_samples"] == 7 and "shard" not in record


def test_merge_refuses_incomplete_or_mismatched_shards(pixel_checkpoint, tmp_path):
    sample_shards(pixel_checkpoint, tmp_path, 2)
    with pytest.raises(SystemExit):  # shard 1 of 2 missing: indices 0..6 not covered
        cli(["merge-samples", "--shards", str(tmp_path / "shard0-of-2.npz"), "--records",
             str(tmp_path / "shard0-of-2.json"), "--out", str(tmp_path / "bad.npz"), "--record", str(tmp_path / "b.json")])
    assert not (tmp_path / "bad.npz").exists()
    # a shard sampled by other code (killed, the code edited, rerun) never merges with the first one's
    record = json.loads((tmp_path / "shard1-of-2.json").read_text())
    assert len(record["code"]) == 16
    (tmp_path / "shard1-of-2.json").write_text(json.dumps({**record, "code": "0" * 16}))
    with pytest.raises(SystemExit):
        cli(["merge-samples", "--shards", str(tmp_path / "shard0-of-2.npz"), str(tmp_path / "shard1-of-2.npz"),
             "--records", str(tmp_path / "shard0-of-2.json"), str(tmp_path / "shard1-of-2.json"), "--out",
             str(tmp_path / "bad.npz"), "--record", str(tmp_path / "b.json")])
    assert not (tmp_path / "bad.npz").exists()


# ------------------------------------------------------------------------------- miniature paper run (end to end)


@pytest.fixture(scope="module")
def paper_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-inputs")
    return {
        "train": assets.image_folder(root / "imagenet" / "train"),
        "vae": assets.tiny_vae(root / "sd-vae"),
        "checkpoint": assets.official_dit(root / "DiT-micro-2-64x64.pt", "dit-micro-2", 64, num_classes=3),
        "inception": (inception := assets.random_inception(root / "pt_inception.pth")),
        "reference": assets.reference_batch(root / "VIRTUAL_mini.npz", inception),
    }


def miniature(config: dict, inputs: dict) -> dict:
    """The paper config with every input replaced by a miniature stand-in and its shapes shrunk, on the device torch
    sees, in bf16 (sampling and fine-tuning); the rest (latents, Inception, reference batch, DDPM + CFG on 3
    channels, sharding, every method's code path) is left as it is."""
    config["device"] = "auto"
    config["dataset"].update(path=str(inputs["train"]), image_size=64, encode_batch_size=8)
    config["latents"]["vae"] = str(inputs["vae"])
    config["base"].update(model="dit-micro-2", num_classes=3, checkpoint=str(inputs["checkpoint"]),
                          sha256=sha256_of(inputs["checkpoint"]))
    config["metrics"].update(inception_weights=str(inputs["inception"]), reference_batch=str(inputs["reference"]),
                             kid_subset_size=4)
    config["sampling"].update(steps=[4], num_samples=6, batch_size=3, shards=2, precision="bf16")
    config["finetune"].update(train_gmacs=None, steps=3, batch_size=4, precision="bf16")
    config["methods"] = {
        "dit": {"budgets": ["4"]},
        "flexidit": {"budgets": ["0.50"], "options": config["methods"]["flexidit"]["options"]},
    }
    return config


@pytest.mark.slow
def test_miniature_paper_run_end_to_end(venv_env, tmp_path, paper_inputs):
    config = miniature(assets.load_config(REPO / "config/paper-imagenet256.yaml"), paper_inputs)
    derived = assets.write_config(config, tmp_path / "paper-mini.yaml")
    result = snakemake(venv_env, "--cores", "2", "--configfile", str(derived), "--replace-workflow-config",
                       "--directory", str(tmp_path), "results/tables/metrics.csv",
                       "results/metrics/reference.json")  # the notebooks are tested by test_workflow
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    with np.load(tmp_path / "resources/data/train.npz") as data:
        assert data["latents"].shape == (12, 4, 8, 8) and list(np.unique(data["labels"])) == [0, 1, 2]
    table = read_metrics_csv(tmp_path / "results/tables/metrics.csv")
    assert sorted(zip(table["method"], table["budget"])) == [("dit", "4"), ("flexidit", "0.50")]
    assert table["fid"].notna().all() and (table["fid"] > 0).all()
    assert (table["params.reference"] == "reference_batch").all() and (table["params.num_samples"] == 6).all()
    assert (table["shards_merged"] == 2).all() and table["params.vae"].str.endswith("sd-vae").all()
    assert (table["sampling_precision"] == "bf16").all() and (table["device_requested"] == "auto").all()
    assert table.set_index("method").loc["flexidit", "train_precision"] == "bf16"
    assert table["precision"].between(0, 1).all()  # the metric, not the numerics
    flexidit = json.loads((tmp_path / "results/checkpoints/flexidit/ft~1.00/finetuned.pt.json").read_text())
    assert flexidit["precision"] == "bf16" and flexidit["device_requested"] == "auto"
    assert not pd.isna(table["fid_vs_reference_images"]).any()
    with np.load(tmp_path / "results/samples/dit/budget~4/steps~4/ft~0.00/cfg~1.50/seed~0.npz") as samples:
        assert samples["images"].shape == (6, 64, 64, 3)  # decoded by the VAE
    reference = json.loads((tmp_path / "results/metrics/reference.json").read_text())
    assert abs(reference["floor"]["fid"]) < 1e-3 < reference["noise"]["fid"]  # the batch against its own mu/sigma
