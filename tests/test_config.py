"""Configs: every shipped config passes the schema and the semantic checks; bad ones name the problem."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from ditpareto.config import check_study
from ditpareto.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
CONFIGS = sorted(p for p in (REPO / "config").glob("*.yaml") if not p.name.startswith(("video", "paper-video")))
VIDEO_CONFIGS = sorted((REPO / "config").glob("video*.yaml"))


def load(path):
    return yaml.safe_load(Path(path).read_text())


def with_defaults(config):
    """Validate and fill schema defaults the way snakemake.utils.validate does."""
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = with_defaults(load(path))
    jsonschema.validate(config, SCHEMA)
    if config["base"]["source"] == "checkpoint" and not (REPO / config["base"]["checkpoint"]).exists():
        pytest.skip(f"{config['base']['checkpoint']} is provided by the user")
    check_study(config, REPO)


@pytest.mark.parametrize("path", VIDEO_CONFIGS, ids=lambda p: p.name)
def test_shipped_video_configs_are_valid(path):
    from snakemake.utils import validate

    from ditpareto.config import check_video_study

    video = copy.deepcopy(load(path)["video"])
    validate(video, str(REPO / "workflow/schemas/video.schema.yaml"))
    check_video_study(video, REPO)


@pytest.mark.parametrize("edit, message", [
    (lambda v: v["base"].update(model="dit-tiny-2"), "not a Latte model"),
    (lambda v: v["image_base"].update(model="dit-toy-2"), "come from dit-tiny-2"),
    (lambda v: v["methods"].update(tomes={"budgets": ["0.50"]}), "unknown method 'tomes'"),
    (lambda v: v["methods"].update(tome={"budgets": ["0.50"]}), "video.methods.tome: tome runs on image DiTs only"),
    (lambda v: v.pop("finetune"), "set video.finetune.train_gmacs"),
    (lambda v: v["methods"]["dit"].update(budgets=["10", "0"]), "out of range"),
    (lambda v: v["sampling"].update(num_samples=5000), "must hold sampling.num_samples"),
    (lambda v: v["base"].update(source="checkpoint", checkpoint="nope.pt"), "nope.pt does not exist"),
])
def test_bad_video_configs_name_the_problem(edit, message):
    from ditpareto.config import check_video_study

    video = copy.deepcopy(load(REPO / "config/video.yaml")["video"])
    edit(video)
    with pytest.raises(InputError, match=message):
        check_video_study(video, REPO)


def _mini():
    return with_defaults(load(REPO / "config/mini.yaml"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["methods"].update(flexo={"budgets": ["1"]}), "unknown method 'flexo'"),
        (lambda c: c["methods"]["dit"].update(budgets=["4", "0"]), "methods.dit.budgets: dit budget 0 out of range"),
        (lambda c: c["methods"]["dit"].update(budgets=["04"]), "write '04' as '4'"),
        (lambda c: c["methods"]["dit"].update(budgets=["4", "4"]), "duplicates"),
        (lambda c: c["base"].update(model="dit-huge-2"), "unknown model 'dit-huge-2'"),
        (lambda c: c["base"].update(source="checkpoint", checkpoint="nope/base.pt"), "base.checkpoint"),
        (lambda c: c["metrics"].update(feature_extractor="inception-v3-compat"), "metrics.inception_weights"),
        (lambda c: c["sampling"]["cfg_selection"].update(scales=[1.5, 3.0], seed=0), "is an evaluation seed"),
        (lambda c: c["sampling"]["cfg_selection"].update(scales=[1.5, 1.5]), "cfg_selection.scales has duplicates"),
        (lambda c: c["finetune"]["seed_noise"].update(seeds=[0, 1]), "repeats finetune.seed 0"),
        (lambda c: c["finetune"]["seed_noise"].update(seeds=[1], budgets={"dit": "4"}), "dit does not fine-tune"),
        (lambda c: c["methods"]["dit"].update(budgets=["4+euler"]), "names sampler 'euler'"),
        (lambda c: c["methods"]["dit"].update(steps=[4]), "methods.dit.steps: a step ladder's budgets"),
        (lambda c: c["methods"]["l2c"].pop("steps"), "budget 0.50 at 2 steps visits other timesteps"),
        (lambda c: c["methods"]["l2c"].update(options={"sampler_steps": 10}), "at 4 steps visits other timesteps"),
    ],
)
def test_bad_configs_name_the_problem(edit, message):
    config = _mini()
    edit(config)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_study(config, REPO)


def test_schema_rejects_unknown_keys():
    config = load(REPO / "config/mini.yaml")
    config["sampling"]["cfg"] = 2.0
    with pytest.raises(Exception, match="cfg"):
        with_defaults(config)


def _recorded(tmp_path, config, seed=4095, drop=0):
    """A recorded-scales table covering the mini grid (all but ``drop`` keys), pinned in ``config``."""
    import hashlib

    from ditpareto.study import guidance_keys, point_dependencies

    rows = ["method,budget,steps,ft,cfg_selected,fid_selection,selection_samples,selection_seed,scales,"
            "checkpoint_sha256,sampler,train_gmacs"]
    rows += [f"{m},{b},{n},{ft},2.0,5.0,500,{seed},1.5 2,{point_dependencies(config, m, b)['checkpoint_sha256'] or ''},"
             f"{point_dependencies(config, m, b)['sampler']},{point_dependencies(config, m, b)['train_gmacs']}"
             for m, b, n, ft in guidance_keys(config)[drop:]]
    path = tmp_path / "recorded.csv"
    path.write_text("\n".join(rows) + "\n")
    config["sampling"]["cfg_recorded"] = {"table": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return path


def test_recorded_scales_are_checked_before_anything_runs(tmp_path):
    config = _mini()
    path = _recorded(tmp_path, config)
    check_study(config, REPO)  # covers every key, held-out seed, pinned
    config["sampling"]["cfg_recorded"]["sha256"] = "0" * 64
    with pytest.raises(InputError, match="has sha256"):
        check_study(config, REPO)
    config = _mini()
    _recorded(tmp_path, config, drop=1)
    with pytest.raises(InputError, match=r"has no scale for 1 grid point\(s\): dit/"):
        check_study(config, REPO)
    config = _mini()
    _recorded(tmp_path, config, seed=config["sampling"]["seeds"][0])
    with pytest.raises(InputError, match="which are evaluation seeds"):
        check_study(config, REPO)
    config = _mini()
    _recorded(tmp_path, config)
    config["sampling"]["cfg_selection"].update(scales=[1.5, 3.0])
    with pytest.raises(InputError, match="both sampling.cfg_recorded and sampling.cfg_selection"):
        check_study(config, REPO)
    config = _mini()
    _recorded(tmp_path, config)
    config["sampling"]["sampler"] = "ddpm"  # recorded with DDIM: stale, and says how to re-record it
    with pytest.raises(InputError, match=r"is stale for dit/.*sampler ddim.*either record the missing scales.*or sample at the fixed "
                                         r"sampling.cfg_scale"):
        check_study(config, REPO)
    path.unlink()
    config = _mini()
    config["sampling"]["cfg_recorded"] = {"table": str(path), "sha256": "0" * 64}
    with pytest.raises(InputError, match="does not exist"):
        check_study(config, REPO)


def test_the_shipped_recorded_table_matches_the_default_and_refuses_other_checkpoints():
    """The default's recorded CFG table names the checkpoints it was recorded with: a retrained fine-tune (another
    sha256) or another training compute makes it stale, refused at start with one line."""
    config = with_defaults(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    check_study(config, REPO)
    retrained = copy.deepcopy(config)
    retrained["methods"]["dit-ft"]["sha256"]["shared"] = "ab" * 32
    with pytest.raises(InputError, match=r"stale for dit-ft/10/10: recorded with checkpoint 12beafd2f61d.*either record"):
        check_study(retrained, REPO)
    longer = copy.deepcopy(config)
    longer["finetune"]["train_gmacs"] = 42000
    with pytest.raises(InputError, match="is stale for dit-ft.*train_gmacs 20996"):
        check_study(longer, REPO)


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "config/overlays").glob("*.yaml")
                                         if not p.name.startswith("video")), ids=lambda p: p.name)
def test_image_overlays_on_the_default_are_valid_and_covered_by_its_recorded_tables(path):
    """An overlay merged onto config/config.yaml the way snakemake merges --configfile (dicts recursively, lists
    replaced) passes every check the default does: its points have recorded guidance and pinned checkpoints."""
    from snakemake.utils import update_config

    config = load(REPO / "config/config.yaml")
    update_config(config, load(path))
    check_study(with_defaults(config), REPO)


def test_the_shipped_seed_noise_table_is_checked_like_the_guidance_table():
    config = with_defaults(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    config["sampling"].pop("cfg_recorded")
    check_study(config, REPO)
    config["methods"]["dydit"]["sha256"]["0.50"] = "cd" * 32
    with pytest.raises(InputError, match=r"finetune.noise_recorded.table .* is stale for dydit/0.50/10: recorded "
                                         r"with checkpoint 592ca933ee02.*either re-record it.*or measure the noise"):
        check_study(config, REPO)


def test_the_shipped_plateau_table_is_checked_against_the_base_and_the_training_compute():
    """The recorded plateau points name the base they were fine-tuned from and their training GMACs: another base or
    another finetune.train_gmacs makes them stale, refused at start with one line and both ways forward."""
    config = with_defaults(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    config["sampling"].pop("cfg_recorded")
    config["finetune"].pop("noise_recorded")
    check_study(config, REPO)
    other_base = copy.deepcopy(config)
    other_base["base"]["sha256"] = "ef" * 32
    with pytest.raises(InputError, match=r"plateau_recorded.table .* is stale for .* recorded from base 0caba70b0dd2.*"
                                         r"either re-record it.*or run the plateau in this study"):
        check_study(other_base, REPO)
    longer = copy.deepcopy(config)
    longer["finetune"]["train_gmacs"] = 42000
    with pytest.raises(InputError, match=r"is stale for .* at 0.5x: .*train_gmacs 1050\d"):
        check_study(longer, REPO)
    tampered = copy.deepcopy(config)
    tampered["finetune"]["plateau_recorded"]["sha256"] = "0" * 64
    with pytest.raises(InputError, match="plateau_recorded.table .* has sha256"):
        check_study(tampered, REPO)


def test_the_schema_defaults_are_the_settings_dataclasses_defaults():
    """A config key and the settings field it fills have one default: the schema's default (what a config that omits
    the key runs with) equals the dataclass field's (what the CLI and the Python API run with)."""
    import dataclasses

    from ditpareto.metrics import MetricSettings
    from ditpareto.study import FinetuneRecipe, SamplingSettings, TrainConfig

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    compared, drift = 0, []
    for path, cls in ((("base", "pretrain"), TrainConfig), (("finetune",), FinetuneRecipe),
                      (("sampling",), SamplingSettings), (("metrics",), MetricSettings)):
        node = schema
        for key in path:
            node = node["properties"][key]
        for field in dataclasses.fields(cls):
            entry = node["properties"].get(field.name, {})
            if "default" not in entry or field.default is dataclasses.MISSING:
                continue
            schema_default = entry["default"]
            if isinstance(schema_default, list) and not isinstance(field.default, list):  # sampling.steps: [10]
                schema_default = schema_default[0]
            compared += 1
            if schema_default != field.default:
                drift.append(f"{'.'.join(path)}.{field.name}: schema {entry['default']!r}, {cls.__name__} "
                             f"{field.default!r}")
    assert not drift, drift
    assert compared >= 25
