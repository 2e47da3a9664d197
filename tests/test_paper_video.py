"""The paper video setting (config/paper-video-*.yaml): the configs state Latte's protocol, every missing input is
named at start, each config plans on the SLURM profile, and a miniature run (UCF101 layout, random-weight stand-ins
of the official Latte checkpoint, the SD-VAE and StyleGAN-V's I3D) goes from videos to the FVD table."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import paper_assets as assets
from ditpareto.errors import InputError
from ditpareto.results import read_metrics_csv, sha256_of

REPO = Path(__file__).resolve().parents[1]
PAPER_VIDEO_CONFIGS = sorted((REPO / "config").glob("paper-video-*.yaml"))
INPUT_KEYS = (("dataset", "path", "dir"), ("latents", "vae", "dir"), ("fvd", "i3d", "file"),
              ("base", "checkpoint", "file"))


def _video(path: Path) -> dict:
    return copy.deepcopy(yaml.safe_load(path.read_text())["video"])


def with_video_placeholders(video: dict, root: Path) -> dict:
    """The config's local inputs replaced by empty placeholders under ``root`` (enough to plan a dry run)."""
    for section, key, kind in INPUT_KEYS:
        target = root / section / Path(video[section][key]).name
        if kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            (target / "config.json").write_text("{}")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        video[section][key] = str(target)
    return video


def test_there_is_a_paper_video_config_per_dataset():
    assert [p.name for p in PAPER_VIDEO_CONFIGS] == [f"paper-video-{d}.yaml" for d in ("ffs", "sky", "taichi", "ucf101")]


@pytest.mark.parametrize("path", PAPER_VIDEO_CONFIGS, ids=lambda p: p.name)
def test_paper_video_configs_state_lattes_protocol(path, tmp_path):
    from snakemake.utils import validate

    from ditpareto.config import check_video_study

    video = _video(path)
    layout = path.stem.removeprefix("paper-video-")
    conditional = layout == "ucf101"
    assert video["dataset"]["layout"] == layout and video["device"] == "cuda"
    assert (video["dataset"]["frames"], video["dataset"]["interval"], video["dataset"]["size"]) == (16, 3, 256)
    assert (video["base"]["model"], video["base"]["image_size"], video["base"]["in_channels"]) == ("latte-xl-2", 256, 4)
    assert video["base"]["num_classes"] == (101 if conditional else 0)
    sampling = video["sampling"]
    assert (sampling["sampler"], sampling["steps"], sampling["num_samples"]) == ("ddpm", 250, 2048)
    assert (sampling["cfg_scale"] > 1) == conditional and sampling["guidance_channels"] == "all"
    assert (video["fvd"]["clips"], video["fvd"]["stride"]) == (2048, 3)
    validate(video, str(REPO / "workflow/schemas/video.schema.yaml"))
    check_video_study(with_video_placeholders(video, tmp_path), REPO)


def test_every_missing_paper_video_input_is_named_in_one_line():
    from ditpareto.config import check_video_study

    with pytest.raises(InputError) as error:
        check_video_study(_video(REPO / "config/paper-video-ucf101.yaml"), REPO)
    message = str(error.value)
    assert "\n" not in message
    for section, key, _ in INPUT_KEYS:
        assert f"video.{section}.{key}" in message


@pytest.mark.parametrize("edit, message", [
    (lambda v: v["sampling"].update(cfg_scale=4.0), "cfg_scale must be 1 for the unconditional ffs"),
    (lambda v: v["base"].update(num_classes=101), "ffs is unconditional"),
    (lambda v: v["base"].update(in_channels=1), "in_channels must be 4"),
    (lambda v: v["base"].update(source="pretrain"), "starts from a Latte checkpoint"),
])
def test_bad_paper_video_configs_name_the_problem(edit, message, tmp_path):
    from ditpareto.config import check_video_study

    video = with_video_placeholders(_video(REPO / "config/paper-video-ffs.yaml"), tmp_path)
    edit(video)
    with pytest.raises(InputError, match=message):
        check_video_study(video, REPO)


@pytest.mark.parametrize("path", PAPER_VIDEO_CONFIGS, ids=lambda p: p.name)
def test_paper_video_configs_plan_on_the_slurm_profile(venv_env, tmp_path, path):
    """Each plans the paper video rules on the SLURM profile: data encoding, the FVD reference, a fine-tune per
    fine-tuning method, sampling and FVD per grid point (22 jobs), and none of the toy study's rules."""
    from conftest import run_snakemake

    video = with_video_placeholders(_video(path), tmp_path / "inputs")
    derived = assets.write_config({"video": video}, tmp_path / path.name)
    output = run_snakemake(venv_env, tmp_path / "run", derived, "-n", "--workflow-profile", str(REPO / "profiles/slurm"))
    counts = dict(line.split() for line in output.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:])
    points = sum(len(m["budgets"]) for m in video["methods"].values())
    assert counts["encode_video_dataset"] == counts["fvd_reference"] == counts["import_video_base"] == "1"
    assert counts["sample_video"] == counts["evaluate_fvd"] == str(points)
    assert counts["total"] == "24"  # + an import of each fine-tune (trained here or shipped)
    assert "prepare_clips" not in counts and "evaluate_video" not in counts


# ------------------------------------------------------------------------- miniature paper video run (end to end)


@pytest.mark.slow
def test_miniature_paper_video_run_end_to_end(venv_env, tmp_path):
    """paper-video-ucf101.yaml with every input a miniature stand-in (six 52-frame AVIs of three classes, a random
    Latte in Latte's checkpoint format, a tiny SD-VAE, an I3D TorchScript), 32 px frames, 4 DDPM steps with CFG in
    bf16: videos -> latents (per frame) -> fine-tune -> clips decoded per frame -> FVD against the real clips."""
    from conftest import run_snakemake

    inputs = tmp_path / "inputs"
    video = _video(REPO / "config/paper-video-ucf101.yaml")
    video["device"] = "auto"
    video["dataset"].update(path=str(assets.ucf101_folder(inputs / "UCF-101")), size=32, train_clips=6,
                            encode_batch_size=3)
    video["latents"]["vae"] = str(assets.tiny_vae(inputs / "sd-vae"))
    checkpoint = assets.official_latte(inputs / "ucf101.pt", "latte-micro-2", 32, num_classes=3)
    video["base"].update(model="latte-micro-2", image_size=32, num_classes=3, checkpoint=str(checkpoint),
                         sha256=sha256_of(checkpoint))
    video["fvd"].update(i3d=str(assets.i3d_torchscript(inputs / "i3d.pt")), clips=6, batch_size=3)
    video["finetune"].update(train_gmacs=0.5, batch_size=2, checkpoint_every=1)
    video["sampling"].update(steps=4, num_samples=4, batch_size=2)
    video["methods"] = {"dit": {"budgets": ["4"]}, "flexidit": {"budgets": ["0.50"], "options": {"variant": "shared"}}}
    derived = assets.write_config({"video": video}, tmp_path / "paper-video-mini.yaml")
    run = tmp_path / "run"
    run_snakemake(venv_env, run, derived, "--cores", "2")
    with np.load(run / "resources/video/train.npz") as data:
        assert data["latents"].shape == (6, 16, 4, 4, 4) and set(data["labels"]) <= {0, 1, 2}
    reference = json.loads((run / "resources/video/fvd_reference.npz.json").read_text())
    assert (reference["clips"], reference["stride"], reference["frames"]) == (6, 3, 16)
    table = read_metrics_csv(run / "results/video/tables/metrics.csv")
    assert sorted(zip(table["method"], table["budget"])) == [("dit", "4"), ("flexidit", "0.50")]
    assert table["fvd"].notna().all() and (table["fvd"] >= 0).all() and (table["fvd_real_clips"] == 6).all()
    assert (table["sampling_precision"] == "bf16").all() and (table["params.cfg_scale"] == 7.0).all()
    with np.load(run / "results/video/samples/dit/budget~4/cfg~7.00/seed~0.npz") as samples:
        assert samples["images"].shape == (4, 16, 32, 32, 3)  # decoded frame by frame by the VAE
    assert (run / "results/video/figures/clips.gif").stat().st_size > 0
