"""Hostile and broken inputs: no loader runs code from a file, bad input fails early with one `error:` line (exit
2) and loses nothing, stale or damaged training states never become the result. Exploit files are made here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from ditpareto.data import save_draw
from ditpareto.errors import InputError

MODEL = ["--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]


class Exploit:
    """Unpickling runs ``touch marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ditpareto", *args], capture_output=True, text=True, cwd=cwd)


def assert_one_error_line(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    # ours ("error: ...") or argparse's for a flag out of range ("python -m ditpareto CMD: error: ...")
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("error:") or re.match(r"python -m ditpareto [\w-]+: error: ", line)]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a crafted file ran its payload"


# ------------------------------------------------------------------------------------------- loader inventory
# Every file a loader reads: torch checkpoints (DiT, method fine-tunes, extractors, training states) through
# checkpoint.read_checkpoint (weights_only=True); torch-fidelity's Inception weights (it unpickles them itself:
# checked by MetricSettings before any metric); a VAE folder's pickled weights (checked before diffusers);
# every .npz (draws, samples, ADM reference batch) through data.read_npz (allow_pickle=False); JSON records.


def test_checkpoint_loader_refuses_a_payload(tmp_path, marker):
    from ditpareto.models.checkpoint import CheckpointError, read_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"w": Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors") as caught:
        read_checkpoint(path)
    assert "weights_only" not in str(caught.value)  # never torch's advice to load it unsafely
    with pytest.raises(CheckpointError, match="is a directory, not a file"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("entry", ["settings", "evaluate_reference_batch_without_images"])
def test_inception_weights_are_checked_on_every_metrics_path(tmp_path, marker, entry):
    from ditpareto.metrics import MetricSettings

    weights = tmp_path / "pt_inception.pth"
    torch.save({"w": Exploit(marker)}, weights)
    if entry == "settings":
        with pytest.raises(InputError):
            MetricSettings(feature_extractor="inception-v3-compat", weights_path=str(weights))
        return
    # the path the hostile-input pass used: an ADM batch without arr_0 skips KID/PRC and goes to FID/IS directly
    np.savez(tmp_path / "ref.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    samples = tmp_path / "s.npz"
    np.savez(samples, images=np.zeros((4, 16, 16, 3), np.uint8), labels=np.zeros(4, np.int64),
             indices=np.arange(4))
    record = tmp_path / "s.json"
    record.write_text(json.dumps({"method": "dit", "budget": "2", "steps": 2, "cfg_scale": 1.0, "seed": 0,
                                  "gmacs_per_image": 1.0, "params": {}}))
    result = cli("evaluate", "--samples", str(samples), "--record", str(record), "--reference-batch",
                 str(tmp_path / "ref.npz"), "--extractor", "inception-v3-compat", "--extractor-weights", str(weights),
                 "--out", str(tmp_path / "m.json"))
    assert_one_error_line(result, "pt_inception.pth")


def test_vae_weights_are_checked_before_diffusers(tmp_path, marker):
    from ditpareto.latents import load_vae

    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    torch.save({"w": Exploit(marker)}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(InputError, match="diffusion_pytorch_model.bin"):
        load_vae(folder)


@pytest.mark.parametrize("kind", ["draw", "samples", "reference_batch"])
def test_npz_loaders_refuse_pickled_objects(tmp_path, marker, kind):
    from ditpareto.data import load_draw
    from ditpareto.npzfiles import load_samples
    from ditpareto.metrics import load_reference_batch

    path = tmp_path / f"{kind}.npz"
    payload = np.array([Exploit(marker)], dtype=object)
    np.savez(path, images=payload, labels=np.zeros(1, np.int64), indices=np.zeros(1, np.int64), mu=payload,
             sigma=payload)
    loader = {"draw": load_draw, "samples": load_samples, "reference_batch": load_reference_batch}[kind]
    with pytest.raises(InputError, match="cannot be read"):
        loader(path)


# ------------------------------------------------------------------------------------- training states


def _tiny_run(tmp_path, name="state.pt", steps=3):
    from ditpareto.models import build_dit
    from ditpareto.train import TrainConfig, run_training

    torch.manual_seed(0)
    model = build_dit("dit-micro-2", 16, in_channels=1, num_classes=10)
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    config = TrainConfig(steps=steps, batch_size=4, checkpoint_every=1)
    return run_training(model, x, y, config, tmp_path / name, tmp_path / "loss.csv")


@pytest.mark.parametrize("damage", ["truncated", "no_step", "payload", "misshaped", "optimizer_groups", "rng",
                                    "negative_step"])
def test_a_damaged_state_is_set_aside_and_the_run_starts_over(tmp_path, marker, damage):
    state = tmp_path / "state.pt"
    if damage in ("misshaped", "optimizer_groups", "rng", "negative_step"):
        _tiny_run(tmp_path, steps=2)
        saved = torch.load(state, weights_only=True)
        if damage == "misshaped":
            key = next(iter(saved["model"]))
            saved["model"][key] = torch.zeros(3)
        elif damage == "optimizer_groups":
            saved["opt"]["param_groups"].append(dict(saved["opt"]["param_groups"][0]))
        elif damage == "rng":
            saved["rng"] = [{"cpu": torch.zeros(5)}]
        else:
            saved["step"] = -1
        torch.save(saved, state)
    elif damage == "truncated":
        _tiny_run(tmp_path, steps=2)
        state.write_bytes(state.read_bytes()[:100])
    elif damage == "no_step":
        _tiny_run(tmp_path, steps=2)
        saved = torch.load(state, weights_only=True)
        del saved["step"]
        torch.save(saved, state)
    else:
        torch.save({"w": Exploit(marker)}, state)
    reference = _tiny_run(tmp_path / "clean")
    again = _tiny_run(tmp_path)
    assert (tmp_path / "state.pt.damaged").exists()
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), again.state_dict().values()))


def test_code_changes_and_forced_reruns_train_again(tmp_path, monkeypatch):
    """The run identity holds the code version (a state never resumes under other code), and a finished run's
    state is retired once the outputs are written (a forced rerun retrains instead of copying old weights)."""
    from ditpareto.data import digits_draw
    from ditpareto.models import build_dit
    from ditpareto.models.checkpoint import atomic_save
    from ditpareto.jobs import training

    first = training.run_id(method="dit-ft")
    assert training.run_id(method="dit-ft") == first
    monkeypatch.setattr(training, "code_version", lambda: "other code")
    assert training.run_id(method="dit-ft") != first
    monkeypatch.undo()

    torch.manual_seed(0)
    atomic_save(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10).state_dict(), tmp_path / "base.pt")
    save_draw(digits_draw("train"), tmp_path / "train.npz")
    args = ["finetune", "--method", "dit-ft", "--checkpoint", str(tmp_path / "base.pt"), "--data",
            str(tmp_path / "train.npz"), *MODEL, "--steps", "3", "--batch-size", "8", "--state",
            str(tmp_path / "state.pt"), "--log-csv", str(tmp_path / "loss.csv"), "--out", str(tmp_path / "ft.pt")]
    assert cli(*args).returncode == 0
    assert not (tmp_path / "state.pt").exists() and (tmp_path / "state.pt.done").exists()
    rerun = cli(*args)
    assert rerun.returncode == 0 and "resumed from" not in rerun.stderr


# ---------------------------------------------------------------------------------- one error line, exit 2


@pytest.fixture
def micro_checkpoint(tmp_path):
    from ditpareto.models import build_dit
    from ditpareto.models.checkpoint import atomic_save

    torch.manual_seed(0)
    path = tmp_path / "base.pt"
    atomic_save(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10).state_dict(), path)
    return path


def _sample_args(checkpoint, out, **overrides):
    values = {"--method": "dit", "--budget": "2", "--steps": "2", "--seed": "0", "--num-samples": "4",
              "--batch-size": "4", "--cfg-scale": "2.0", **overrides}
    return ["sample", *[x for kv in values.items() for x in kv], "--checkpoint", str(checkpoint), *MODEL,
            "--out", str(out), "--record", str(out) + ".json"]


@pytest.mark.parametrize("flag, value, fragment", [
    ("--steps", "0", "--steps"),
    ("--seed", "5000", "--seed"),
    ("--cfg-scale", "nan", "--cfg-scale"),
    ("--cfg-scale", "inf", "--cfg-scale"),
])
def test_sample_refuses_bad_settings_before_loading_or_writing(tmp_path, flag, value, fragment):
    out = tmp_path / "s.npz"
    overrides = {flag: value, **({"--method": "dydit", "--budget": "0.50"} if flag == "--steps" else {})}
    result = cli(*_sample_args(tmp_path / "missing.pt", out, **overrides))  # the checkpoint does not exist either
    assert_one_error_line(result, fragment)
    assert not out.exists()


def test_threads_must_be_positive(tmp_path):
    result = cli("--threads", "-1", "flops", "--method", "dit", *MODEL)
    assert result.returncode == 2 and "--threads" in result.stderr and "Traceback" not in result.stderr


def test_empty_and_nan_checkpoints_are_refused(tmp_path, micro_checkpoint):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert_one_error_line(cli(*_sample_args(empty, tmp_path / "a.npz")), "empty.pt")
    state = torch.load(micro_checkpoint, weights_only=True)
    state["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    assert_one_error_line(cli(*_sample_args(tmp_path / "nan.pt", tmp_path / "b.npz")), "non-finite",
                          "blocks.0.attn.qkv.weight")
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "b.npz").exists()


@pytest.fixture
def good_samples(tmp_path, micro_checkpoint):
    out = tmp_path / "good.npz"
    assert cli(*_sample_args(micro_checkpoint, out)).returncode == 0
    return out


@pytest.mark.parametrize("damage", ["fewer", "repeated_index"])
def test_evaluate_cross_checks_the_samples_against_their_record(tmp_path, good_samples, damage):
    """Samples whose count or indices disagree with their record (a shard of another run, a half-written merge)
    are refused before any compute."""
    data = dict(np.load(good_samples))
    bad = tmp_path / "bad.npz"
    if damage == "fewer":
        np.savez(bad, **{k: v[:-1] for k, v in data.items()})
    else:
        np.savez(bad, images=data["images"], labels=data["labels"], indices=np.zeros_like(data["indices"]))
    weights = os.path.join(os.path.dirname(__file__), "..", "assets", "extractor", "glyph-cnn-16.pt")
    evaluated = cli("evaluate", "--samples", str(bad), "--record", str(good_samples) + ".json", "--reference",
                    str(good_samples), "--extractor-weights", weights, "--out", str(tmp_path / "e.json"))
    assert_one_error_line(evaluated, "bad.npz hold", "says num_samples")
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("damage", ["truncated", "missing_key", "wrong_dtype", "not_npz"])
def test_evaluate_and_merge_refuse_malformed_samples(tmp_path, good_samples, damage):
    bad = tmp_path / "bad.npz"
    data = dict(np.load(good_samples))
    if damage == "truncated":
        bad.write_bytes(good_samples.read_bytes()[:200])
    elif damage == "missing_key":
        np.savez(bad, images=data["images"], labels=data["labels"])
    elif damage == "wrong_dtype":
        np.savez(bad, images=data["images"].astype(np.float32), labels=data["labels"], indices=data["indices"])
    else:
        bad.write_text("not an npz")
    record = str(good_samples) + ".json"
    merged = cli("merge-samples", "--shards", str(bad), "--records", record, "--out", str(tmp_path / "m.npz"),
                 "--record", str(tmp_path / "m.json"))
    assert_one_error_line(merged, "bad.npz")
    evaluated = cli("evaluate", "--samples", str(bad), "--record", record, "--reference", str(good_samples),
                    "--extractor-weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "e.json"))
    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"method": "dit"}'])
def test_evaluate_checks_its_record_before_computing(tmp_path, good_samples, content):
    record = tmp_path / "r.json"
    record.write_text(content)
    result = cli("evaluate", "--samples", str(good_samples), "--record", str(record), "--reference",
                 str(good_samples), "--extractor-weights", str(good_samples), "--out", str(tmp_path / "e.json"))
    assert_one_error_line(result, "r.json")
    assert not (tmp_path / "e.json").exists()


# ------------------------------------------------------------------------------------------ config checks


def _mini():
    from pathlib import Path

    import yaml

    from test_config import with_defaults

    return with_defaults(yaml.safe_load((Path(__file__).resolve().parents[1] / "config/mini.yaml").read_text()))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["sampling"].update(seeds=[0, 0]), "sampling.seeds has duplicates"),
    (lambda c: c["sampling"].update(cfg_scale=float("nan")), "sampling.cfg_scale must be a finite"),
    (lambda c: c["sampling"].update(cfg_scale=float("inf")), "sampling.cfg_scale must be a finite"),
    (lambda c: c["methods"]["flexidit"].update(cfg_sweep=[3.0, 3.0]), "cfg_sweep has duplicates"),
    (lambda c: c["methods"]["flexidit"].update(cfg_sweep=[float("inf")]), "cfg_sweep must be a finite"),
    (lambda c: c["finetune"].update(lr=float("inf")), "finetune.lr must be a finite"),
    (lambda c: c["dataset"].update(image_size=18), "not divisible by the weak patch size 4"),
    (lambda c: c["dataset"].update(image_size=15), "not divisible by dit-micro-2's patch size 2"),
    (lambda c: c["methods"]["flexidit"].update(cfg_sweep=[2.0, 2.004]), "2.004 has more than two decimals"),
    (lambda c: c["sampling"].update(cfg_scale=1e300), "is outside"),
    (lambda c: c["finetune"].update(plateau={"multipliers": [0.004], "budgets": {}}), "multipliers: 0.004 is outside"),
    (lambda c: c["base"].update(num_classes=5), "base.num_classes is 5, but dataset glyphs provides 10"),
    (lambda c: c["base"].update(in_channels=4), "base.in_channels is 4, but dataset glyphs provides 1"),
    (lambda c: c["finetune"].update(plateau={"multipliers": [1.0], "budgets": {}}),
     "finetune.plateau.multipliers has duplicates"),
])
def test_config_refuses_before_any_job_naming_the_key(edit, message):
    from pathlib import Path

    from ditpareto.config import check_study

    config = _mini()
    edit(config)
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("'", ".")):
        check_study(config, Path(__file__).resolve().parents[1])


def test_latent_draws_are_memory_mapped_and_checked(tmp_path):
    from ditpareto.data import LatentSet, load_draw

    latents = np.random.default_rng(0).standard_normal((6, 4, 8, 8)).astype(np.float32)
    save_draw(LatentSet(latents, np.arange(6)), tmp_path / "train.npz")
    loaded = load_draw(tmp_path / "train.npz")
    assert isinstance(loaded.latents, np.memmap) and np.array_equal(loaded.latents, latents)
    assert torch.equal(loaded.as_model_input(), torch.from_numpy(latents))
    latents[2, 0, 0, 0] = np.nan
    save_draw(LatentSet(latents, np.arange(6)), tmp_path / "nan.npz")
    from ditpareto.data import load_draw as again

    with pytest.raises(InputError, match="finite"):
        again(tmp_path / "nan.npz")
    # one flipped bit in the mapped member (a damaged copy of a 21-84 GB draw) fails the zip's CRC-32
    data = bytearray((tmp_path / "train.npz").read_bytes())
    at = data.find(latents[3].tobytes()[:16])
    data[at + 5] ^= 0x01
    (tmp_path / "flipped.npz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="fails its CRC-32 check"):
        again(tmp_path / "flipped.npz")


def _point(**change):
    record = {"method": "dydit", "budget": "0.50", "steps": 10, "ft": "1.00", "cfg_scale": 1.5, "seed": 0,
              "fid": 3.5, "gmacs_per_image": 0.48, "fid_bootstrap": [3.4, 3.6]}
    record.update(change)
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize("change, fragment", [
    ({"fid": "abc"}, "fid is 'abc', expected a finite FID >= 0"),
    ({"fid": float("nan")}, "fid is nan"),
    ({"fid": -1.0}, "fid is -1.0"),
    ({"method": _DROP}, "lacks ['method']"),
    ({"steps": 0}, "steps is 0, expected an integer >= 1"),
    ({"cfg_scale": 1e400}, "cfg_scale is inf"),
    ({"gmacs_per_image": 0}, "gmacs_per_image is 0"),
    ({"fid_bootstrap": [3.4, None]}, "fid_bootstrap is not a list of finite numbers"),
])
def test_tables_and_verdicts_refuse_a_malformed_metrics_record(tmp_path, change, fragment):
    """A NaN, negative or non-numeric FID, a missing key or a bad step count never reaches a table or a verdict."""
    path = tmp_path / "point.json"
    path.write_text(json.dumps(_point(**change)))
    result = cli("aggregate", str(path), "--out", str(tmp_path / "table.csv"))
    assert_one_error_line(result, str(path), fragment)
    assert not (tmp_path / "table.csv").exists()
    from ditpareto.jobs.tables import verdicts

    claims = tmp_path / "claims.csv"
    claims.write_text("method,model,resolution,setting,fid,compute_ratio\n")
    with pytest.raises(InputError, match="expected|lacks|finite"):
        verdicts(metrics=[str(path)], claims=str(claims), out=str(tmp_path / "v.csv"),
                 comparisons=str(tmp_path / "c.csv"), fixed_cfg=1.5, full_steps=10)


def test_the_same_grid_point_twice_is_refused(tmp_path):
    path = tmp_path / "point.json"
    path.write_text(json.dumps(_point()))
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(_point()))
    result = cli("aggregate", str(path), str(copy), "--out", str(tmp_path / "table.csv"))
    assert_one_error_line(result, "are the same grid point (dydit/0.50/10/1.00/1.5/0)")
    result = cli("aggregate", str(path), str(path), "--out", str(tmp_path / "table.csv"))
    assert_one_error_line(result, "are the same grid point")


def test_notebook_parameters_must_be_declared_names(tmp_path, marker):
    """papermill writes each parameter name into code: only the names the parameters cell assigns are accepted, and
    a file that is not a notebook gets one error line."""
    from ditpareto.jobs.tables import declared_parameters

    assert declared_parameters("notebooks/pareto.ipynb") == {"fixed_cfg", "out_dir", "reference_path", "table_path"}
    payload = json.dumps({f'x=__import__("os").system("touch {marker}")#': 1})
    result = cli("notebook", "--notebook", "notebooks/pareto.ipynb", "--out", str(tmp_path / "out.ipynb"),
                 "--parameters", payload)
    assert_one_error_line(result, "are not declared in notebooks/pareto.ipynb's parameters cell")
    assert not marker.exists() and not (tmp_path / "out.ipynb").exists()
    text = tmp_path / "notes.ipynb"
    text.write_text("not a notebook")
    result = cli("notebook", "--notebook", str(text), "--out", str(tmp_path / "out.ipynb"))
    assert_one_error_line(result, "is not a readable Jupyter notebook")
    text.write_text('{"x": 1}')  # JSON, not a notebook (nbformat's schema refuses it)
    result = cli("notebook", "--notebook", str(text), "--out", str(tmp_path / "out.ipynb"))
    assert_one_error_line(result, "is not a readable Jupyter notebook")


@pytest.mark.parametrize("out, record, fragment", [
    (".", "s.json", "argument --out: '.' names no file"),
    ("{dir}", "s.json", "is a directory, not a file to write"),
    ("s.npz", "{dir}/", "names no file"),
    ("", "s.json", "argument --out: '' names no file"),
])
def test_an_output_that_is_no_file_is_refused_before_sampling(tmp_path, micro_checkpoint, out, record, fragment):
    """Before: a directory as --out sampled everything, then failed in os.replace and left a temporary file."""
    folder = tmp_path / "folder"
    folder.mkdir()
    out, record = (value.replace("{dir}", str(folder)) for value in (out, record))
    result = cli(*_sample_args(micro_checkpoint, out)[:-2], "--record", record, cwd=tmp_path)
    assert_one_error_line(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["folder", micro_checkpoint.name]) \
        and not list(folder.iterdir())


@pytest.mark.parametrize("edit, fragment", [
    ({"method": "dydit"}, "method is 'dydit', expected 'dit-ft'"),
    ({"sha256": "0" * 64}, "sha256 is '000"),
    ({"train_gmacs": 123456789}, "train_gmacs is 123456789, expected the study's 21000"),
    ({"train_gmacs": "lots"}, "train_gmacs is 'lots', expected a finite number > 0"),
    ({"optimizer_steps": -3}, "optimizer_steps is -3"),
    ({"train_gmacs_budget": 42000.0}, "train_gmacs_budget is 42000.0, expected the study's 21000"),
])
def test_a_fine_tunes_training_record_is_checked_on_import(tmp_path, edit, fragment):
    """The record beside shipped weights reaches the equal-compute columns: an edited method, digest or training
    compute is refused with one line, and nothing is copied."""
    import shutil

    shipped = os.path.join(os.path.dirname(__file__), "..", "assets", "finetuned", "dit-ft", "finetuned.pt")
    weights = tmp_path / "finetuned.pt"
    shutil.copyfile(shipped, weights)
    record = json.loads(open(shipped + ".json").read())
    (tmp_path / "finetuned.pt.json").write_text(json.dumps({**record, **edit}))
    out = tmp_path / "out" / "finetuned.pt"
    result = cli("import-finetuned", "--method", "dit-ft", "--model", "dit-toy-2", "--image-size", "16",
                 "--in-channels", "1", "--num-classes", "10", "--checkpoint", str(weights), "--train-gmacs", "21000",
                 "--out", str(out))
    assert_one_error_line(result, "finetuned.pt.json", fragment)
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["prepare-data", "--heldout-fraction", "1.5", "--out", "x.npz"], "--heldout-fraction: must lie strictly"),
    (["prepare-data", "--seed", "-1", "--out", "x.npz"], "--seed: must be an integer >= 0"),
    (["finetune", "--method", "dit-ft", "--checkpoint", "a", "--data", "b", *MODEL, "--lr", "nan", "--state", "s",
      "--log-csv", "l", "--out", "o"], "--lr must be a finite number > 0, got nan"),
    (["evaluate", "--samples", "s", "--record", "r", "--reference", "x", "--extractor-weights", "w",
      "--bootstrap-replicates", "-1", "--out", "o"], "--bootstrap-replicates: must be an integer >= 0"),
    (["latency", "--points", "[1]", *MODEL, "--out", "o"], "--points[0] is a int"),
    (["latency", "--points", '[{"method": "dit"}]', *MODEL, "--out", "o"], "--points[0] lacks 'budget'"),
])
def test_flags_out_of_range_get_one_error_line_before_any_work(tmp_path, args, fragment):
    result = cli(*args, cwd=tmp_path)
    assert_one_error_line(result, fragment)
    assert not list(tmp_path.iterdir())


def test_a_short_row_in_a_recorded_table_is_named(tmp_path):
    from pathlib import Path

    from ditpareto.study import read_noise_table, read_recorded_scales

    repo = Path(__file__).resolve().parents[1]
    for source, reader in (("assets/guidance/selected-cfg.csv", read_recorded_scales),
                           ("assets/noise/finetune-noise.csv", read_noise_table)):
        lines = (repo / source).read_text().splitlines()
        short = tmp_path / Path(source).name
        short.write_text("\n".join(lines[:-1] + [lines[-1].split(",", 1)[0]]) + "\n")  # the last row cut short
        with pytest.raises(ValueError, match=str(short)):
            reader(short)


@pytest.mark.parametrize("damage, fragment", [
    ("config_list", "does not describe an AutoencoderKL"),
    ("other_class", "does not describe an AutoencoderKL .*UNet2DModel"),
    ("no_weights", "has no weights"),
    ("misshaped", "does not load as an AutoencoderKL"),
])
def test_a_malformed_vae_folder_is_one_error(tmp_path, damage, fragment):
    """Four broken diffusers folders: each is one InputError naming the folder, not a diffusers traceback."""
    from paper_assets import tiny_vae

    from ditpareto.latents import load_vae

    folder = tiny_vae(tmp_path / "vae")
    config = json.loads((folder / "config.json").read_text())
    if damage == "config_list":
        (folder / "config.json").write_text("[]")
    elif damage == "other_class":
        (folder / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DModel"}))
    elif damage == "no_weights":
        for path in folder.glob("diffusion_pytorch_model*"):
            path.unlink()
    else:
        (folder / "config.json").write_text(json.dumps({**config, "latent_channels": 8}))
    with pytest.raises(InputError, match=fragment):
        load_vae(folder)


@pytest.mark.parametrize("section, key, value", [("sampling", "num_samples", 10**9), ("sampling", "batch_size", 10**7),
                                                  ("dataset", "image_size", 100000), ("sampling", "cfg_scale", 1e300)])
def test_the_schema_bounds_sizes(section, key, value):
    """Sizes beyond sane bounds fail the schema before any job (a path component, an allocation, a loop)."""
    from pathlib import Path

    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    config[section][key] = value
    with pytest.raises(WorkflowError, match=key):
        validate(config, str(repo / "workflow/schemas/config.schema.yaml"))


def test_a_pinned_training_record_refuses_a_plausible_edit(tmp_path):
    """A record edited to a plausible value (one more optimizer step) passes every range check, but not its pin."""
    import hashlib
    import shutil

    shipped = os.path.join(os.path.dirname(__file__), "..", "assets", "finetuned", "dit-ft", "finetuned.pt")
    weights = tmp_path / "finetuned.pt"
    shutil.copyfile(shipped, weights)
    text = open(shipped + ".json").read()
    pin = hashlib.sha256(text.encode()).hexdigest()
    record = json.loads(text)
    (tmp_path / "finetuned.pt.json").write_text(json.dumps({**record, "optimizer_steps": 1204}, indent=2))
    out = tmp_path / "out" / "finetuned.pt"
    result = cli("import-finetuned", "--method", "dit-ft", "--model", "dit-toy-2", "--image-size", "16",
                 "--in-channels", "1", "--num-classes", "10", "--checkpoint", str(weights), "--train-gmacs", "21000",
                 "--record-sha256", pin, "--out", str(out))
    assert_one_error_line(result, "training record", "expected")
    assert not out.exists()
