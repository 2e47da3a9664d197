"""Metrics: the digits feature extractor, torch-fidelity wiring, settings validation, the Inception path offline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ditpareto.metrics as metrics
from ditpareto.data import ImageSet, prepare_digits
from ditpareto.errors import InputError
from ditpareto.metrics import (
    DIGITS_EXTRACTOR,
    DigitsClassifier,
    MetricSettings,
    compute_metrics,
    fid_floor_and_noise,
    load_classifier,
    register_extractors,
    save_classifier,
    train_digits_classifier,
)
from ditpareto.models.checkpoint import CheckpointError

import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception  # noqa: E402  (after ditpareto.compat)
import torch_fidelity.feature_extractor_vgg16 as fidelity_vgg  # noqa: E402
import torch_fidelity  # noqa: E402


@pytest.fixture(scope="module")
def splits():
    return prepare_digits()


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    """(model, stats, weights path) of a classifier trained once for the whole module."""
    model, stats = train_digits_classifier(splits["train"], splits["heldout"], steps=300, seed=0)
    path = tmp_path_factory.mktemp("clf") / "digits_classifier.pt"
    save_classifier(model, path)
    return model, stats, path


@pytest.fixture(scope="module")
def settings(trained):
    return MetricSettings(DIGITS_EXTRACTOR, weights_path=str(trained[2]))


@pytest.fixture(scope="module")
def reference_points(splits, settings):
    return fid_floor_and_noise(splits["train"], splits["heldout"], settings)


# ------------------------------------------------------------------------------------------------ classifier


def test_classifier_accuracy(trained):
    _, stats, _ = trained
    assert stats["heldout_accuracy"] >= 0.9, stats
    assert stats["train_accuracy"] >= 0.9, stats


def test_classifier_shapes_and_other_sizes():
    model = DigitsClassifier().eval()
    for size in (16, 28):
        x = torch.rand(3, 1, size, size)
        assert model.features(x).shape == (3, 64)
        assert model(x).shape == (3, 10)


def test_training_is_deterministic_and_leaves_global_rng(splits):
    small = ImageSet(splits["train"].images[:200], splits["train"].labels[:200])
    held = ImageSet(splits["heldout"].images[:50], splits["heldout"].labels[:50])
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    a, stats_a = train_digits_classifier(small, held, steps=4, seed=3, batch_size=32)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.get_num_threads() == threads
    b, stats_b = train_digits_classifier(small, held, steps=4, seed=3, batch_size=32)
    c, _ = train_digits_classifier(small, held, steps=4, seed=4, batch_size=32)
    assert stats_a == stats_b
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.head.weight, c.head.weight)


def test_save_load_roundtrip(trained, splits):
    model, _, path = trained
    loaded = load_classifier(path)
    x = torch.from_numpy(splits["heldout"].images[:64]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
        assert torch.equal(model.features(x), loaded.features(x))


def test_load_rejects_misshaped_key(trained, tmp_path):
    state = load_classifier(trained[2]).state_dict()
    state["head.weight"] = torch.zeros(9, 64)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"head\.weight"):
        load_classifier(bad)


def test_register_is_idempotent():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    register_extractors()
    register_extractors()
    assert FEATURE_EXTRACTORS_REGISTRY["digits-classifier"] is metrics.DigitsFeatureExtractor


def test_extractor_needs_weights():
    with pytest.raises(InputError, match="feature_extractor_weights_path"):
        metrics.DigitsFeatureExtractor("digits-classifier", ["feat"])


# ------------------------------------------------------------------------------------------ digits metrics


def test_same_set_gives_zero_fid_and_full_prc(splits, settings):
    out = compute_metrics(splits["heldout"].images, splits["heldout"].images, settings)
    assert set(out) == set(metrics.METRIC_KEYS)
    assert all(type(v) is float for v in out.values())
    assert abs(out["fid"]) < 1e-3
    assert out["precision"] == 1.0 and out["recall"] == 1.0


def test_floor_is_small_and_noise_is_far(reference_points):
    floor, noise = reference_points["floor"], reference_points["noise"]
    assert 0 <= floor["fid"] < 5
    assert noise["fid"] > 10 * floor["fid"]
    assert noise["kid_mean"] > floor["kid_mean"]
    # the classifier is confident and balanced on real digits (IS near 10 classes), not on noise
    assert floor["inception_score_mean"] > 5 > noise["inception_score_mean"]
    assert floor["precision"] > noise["precision"] and floor["recall"] > noise["recall"]


def test_deterministic_and_channel_invariant(splits, settings, reference_points):
    heldout, train = splits["heldout"].images, splits["train"].images
    again = compute_metrics(heldout, train, settings)
    assert again == reference_points["floor"]  # exact, KID subsets included
    rgb = compute_metrics(np.repeat(heldout, 3, axis=3), np.repeat(train, 3, axis=3), settings)
    assert rgb == again


def test_kid_subset_size_is_capped(splits, settings):
    out = compute_metrics(splits["heldout"].images[:20], splits["train"].images[:30], settings)
    assert all(math.isfinite(v) for v in out.values())


def test_compute_metrics_rejects_bad_inputs(splits, settings):
    images = splits["heldout"].images
    with pytest.raises(InputError, match="uint8"):
        compute_metrics(images.astype(np.float32), images, settings)
    with pytest.raises(InputError, match="at least"):
        compute_metrics(images[:3], images, settings)
    with pytest.raises(InputError, match=r"\(8, 8\)"):
        compute_metrics(images[:, :8, :8], images, settings)
    with pytest.raises(InputError, match="weights_path"):
        compute_metrics(images, images, MetricSettings())


# ------------------------------------------------------------------------------------------------- settings


def test_settings_validation(tmp_path):
    with pytest.raises(InputError, match="unknown feature extractor 'vgg16'"):
        MetricSettings(feature_extractor="vgg16")
    with pytest.raises(InputError, match=r"metrics\.inception_weights"):
        MetricSettings(feature_extractor="inception-v3-compat")
    missing = tmp_path / "nope.pth"
    with pytest.raises(InputError, match="nope.pth"):
        MetricSettings(feature_extractor="inception-v3-compat", weights_path=str(missing))
    with pytest.raises(InputError, match="kid_subset_size"):
        MetricSettings(kid_subset_size=1)
    with pytest.raises(InputError, match="batch_size"):
        MetricSettings(batch_size=0)


class _NotAStateDict:
    pass


def test_inception_weights_must_be_a_plain_state_dict(tmp_path, splits):
    """torch-fidelity loads Inception weights with weights_only=False: arbitrary pickles are refused first."""
    images = splits["heldout"].images[:8]
    evil = tmp_path / "evil.pth"
    torch.save({"x": _NotAStateDict()}, evil)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors"):
        compute_metrics(images, images, MetricSettings("inception-v3-compat", str(evil)))
    scalar = tmp_path / "scalar.pth"
    torch.save({"x": 3}, scalar)
    with pytest.raises(CheckpointError, match="not a state dict"):
        compute_metrics(images, images, MetricSettings("inception-v3-compat", str(scalar)))


# ------------------------------------------------------------------------------------------------ inception


def _no_download(*args, **kwargs):
    raise AssertionError("attempted to download weights")


def random_inception_weights(path, monkeypatch) -> None:
    """Save a randomly initialised state dict with the exact layout of torch-fidelity's InceptionV3."""
    with monkeypatch.context() as patch, torch.random.fork_rng(devices=[]):
        patch.setattr(fidelity_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        net = fidelity_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        for module in net.modules():  # He init keeps activations O(1) through the ~95 convs (BN stats are 0/1)
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)


@pytest.mark.slow  # ~30-60 s on 2 cores: FID runs numpy eigvals on a 2048 x 2048 matrix whatever the sample count
def test_inception_path_offline(tmp_path, monkeypatch, splits):
    weights = tmp_path / "inception_random.pth"
    random_inception_weights(weights, monkeypatch)
    # prove nothing is downloaded: torch-fidelity binds load_state_dict_from_url at import, so patch its copies too,
    # and make VGG16 (torch-fidelity's default PRC extractor) unusable
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
    monkeypatch.setattr(fidelity_inception, "load_state_dict_from_url", _no_download)
    monkeypatch.setattr(fidelity_vgg, "torchvision_load_pretrained_vgg16", _no_download)
    settings = MetricSettings("inception-v3-compat", str(weights), kid_subset_size=4, kid_subsets=5, isc_splits=2)
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 1), dtype=np.uint8)
    out = compute_metrics(noise, splits["train"].images[:8], settings)
    assert set(out) == set(metrics.METRIC_KEYS)
    assert all(math.isfinite(v) for v in out.values()), out
    assert out["fid"] > 0
    assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1


def test_one_extraction_gives_torch_fidelitys_own_numbers(splits, settings):
    """compute_metrics extracts each image set's features once and scores every metric from them: the numbers are
    torch_fidelity.calculate_metrics's, bit for bit."""
    from ditpareto.metrics import _FIDELITY_KEYS, METRIC_KEYS, _UInt8Images

    generated, reference = splits["heldout"].images[:200], splits["train"].images[:300]
    register_extractors()
    raw = torch_fidelity.calculate_metrics(
        input1=_UInt8Images(generated), input2=_UInt8Images(reference), cuda=False, fid=True, kid=True, isc=True,
        prc=True, feature_extractor=settings.feature_extractor, feature_extractor_weights_path=settings.weights_path,
        kid_subset_size=min(settings.kid_subset_size, 200), kid_subsets=settings.kid_subsets,
        isc_splits=settings.isc_splits, prc_neighborhood=settings.prc_neighborhood, batch_size=settings.batch_size,
        rng_seed=settings.rng_seed, samples_shuffle=True, cache=False, save_cpu_ram=True, verbose=False)
    ours = compute_metrics(generated, reference, settings)
    assert ours == {key: float(raw[_FIDELITY_KEYS[key]]) for key in METRIC_KEYS}


def test_evaluate_with_the_shared_reference_statistics_equals_evaluate_without_them(splits, settings, tmp_path):
    """reference-stats caches what every evaluate job computes alike (reference features, k-NN radii, resampled
    FID statistics): the metrics and every bootstrap replicate are the same with and without it, and a cache made
    with another bootstrap seed is refused with one line."""
    import dataclasses
    import json

    from ditpareto.data import save_draw
    from ditpareto.errors import InputError
    from ditpareto.jobs.metrics import evaluate, reference_stats

    reference, generated = tmp_path / "reference.npz", splits["heldout"]
    save_draw(splits["train"], reference)
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=generated.images, labels=generated.labels,
             indices=np.arange(len(generated.labels)))
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"method": "dit", "budget": "10", "steps": 10, "cfg_scale": 1.5, "seed": 0,
                                  "gmacs_per_image": 1.0, "params": {"num_samples": len(generated.labels)}}))
    boot = dataclasses.replace(settings, bootstrap_replicates=60)
    stats = tmp_path / "stats.npz"
    reference_stats(metric_settings=boot, reference=str(reference), out=str(stats))
    plain, cached = tmp_path / "plain.json", tmp_path / "cached.json"
    evaluate(metric_settings=boot, samples=str(samples), record=str(record), out=str(plain), reference=str(reference))
    evaluate(metric_settings=boot, samples=str(samples), record=str(record), out=str(cached),
             reference=str(reference), reference_stats=str(stats))
    a, b = json.loads(plain.read_text()), json.loads(cached.read_text())
    keys = ["fid", "kid_mean", "precision", "recall", "fid_ci_low", "fid_ci_high", "recall_ci_low", "recall_ci_high",
            "precision_ci_low", "kid_ci_high"]
    assert {k: a[k] for k in keys} == pytest.approx({k: b[k] for k in keys}, rel=1e-9, abs=1e-12)
    assert a["fid_bootstrap"] == pytest.approx(b["fid_bootstrap"], rel=1e-9, abs=1e-12)
    assert a["bootstrap"]["fid_ci_estimand"].startswith("population FID")
    from ditpareto.npzfiles import read_npz, save_npz

    without_counts = {k: v for k, v in read_npz(stats).items() if k != "counts"}
    save_npz(without_counts, tmp_path / "old.npz", compress=False)
    with pytest.raises(InputError, match="counts are missing or not uint8"):
        evaluate(metric_settings=boot, samples=str(samples), record=str(record), out=str(cached),
                 reference=str(reference), reference_stats=str(tmp_path / "old.npz"))
    other = dataclasses.replace(boot, bootstrap_seed=5)
    with pytest.raises(InputError, match="resampled with seed 1; this bootstrap needs 6"):
        evaluate(metric_settings=other, samples=str(samples), record=str(record), out=str(cached),
                 reference=str(reference), reference_stats=str(stats))


def test_evaluate_records_the_fid_of_the_first_samples_by_index(splits, settings, tmp_path):
    """fid_head: the FID of the first N samples by sample index, whatever their order in the file, equal to the
    FID evaluate gives those N samples alone."""
    import dataclasses
    import json

    from ditpareto.data import save_draw
    from ditpareto.jobs.metrics import evaluate

    reference, generated = tmp_path / "reference.npz", splits["heldout"]
    save_draw(splits["train"], reference)
    n = len(generated.labels)
    head = n // 2
    order = np.random.default_rng(0).permutation(n)  # shuffled in the file: "first" means the smallest indices
    files = {}
    for name, keep in (("all", order), ("head", np.arange(head))):
        samples, record = tmp_path / f"{name}.npz", tmp_path / f"{name}.record.json"
        np.savez(samples, images=generated.images[keep], labels=generated.labels[keep], indices=keep)
        record.write_text(json.dumps({"method": "dit", "budget": "10", "steps": 10, "cfg_scale": 1.5, "seed": 0,
                                      "gmacs_per_image": 1.0, "params": {"num_samples": len(keep)}}))
        files[name] = (samples, record)
    quick = dataclasses.replace(settings, bootstrap_replicates=0, head_samples=head)
    out = tmp_path / "all.json"
    evaluate(metric_settings=quick, samples=str(files["all"][0]), record=str(files["all"][1]), out=str(out),
             reference=str(reference))
    alone = tmp_path / "head.json"
    evaluate(metric_settings=dataclasses.replace(quick, head_samples=0), samples=str(files["head"][0]),
             record=str(files["head"][1]), out=str(alone), reference=str(reference))
    recorded = json.loads(out.read_text())["fid_head"]
    assert recorded["samples"] == head
    assert recorded["fid"] == pytest.approx(json.loads(alone.read_text())["fid"], rel=1e-6)
    assert "fid_head" not in json.loads(alone.read_text())
