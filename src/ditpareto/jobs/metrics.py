"""The FID extractor (training, calibration), the real-vs-real floor, a grid point's metrics, convergence.

One pure function per job: typed inputs, files in, files out, a small summary dict back; the CLI
(``ditpareto.commands``) only parses flags into these arguments."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np

from ditpareto.bootstrap import (
    ReferenceReplicates, bootstrap_fid, bootstrap_set_metrics, frechet_distance, knn_radii, manifold_membership,
    moments, reference_replicates,
)
from ditpareto.calibration import calibrate as run_calibration
from ditpareto.data import ImageSet, load_attributes, load_draw
from ditpareto.npzfiles import all_finite, load_samples, read_npz, save_npz
from ditpareto.errors import InputError
from ditpareto.intervals import BASIC_ESTIMAND, CI_LEVEL, basic_ci, percentile_ci
from ditpareto.glyph_extractor import save_glyph_cnn, train_glyph_cnn
from ditpareto.methods import get_method
from ditpareto.metrics import (
    MetricSettings, compute_metrics, extract_features, extract_featuresdict, fid_floor_and_noise, fid_from_features,
    load_reference_batch, metric_layers, metrics_against_reference_batch, reference_batch_floor_and_noise,
    save_classifier, train_digits_classifier,
)
from ditpareto.results import SAMPLE_RECORD_KEYS, provenance, read_record, write_json
from ditpareto.runtime import resolve_device
from ditpareto.sampling import generate
from ditpareto.study import ModelSpec, SamplingSettings

log = logging.getLogger("ditpareto")

# The metrics column whose interval each set-metric replicate gives.
POINT_KEYS = {"kid": "kid_mean", "precision": "precision", "recall": "recall"}


def train_extractor(*, data: str, val: str, out: str, report: str, extractor: str = "glyph-cnn", steps: int = 1500,
                    seed: int = 0) -> dict:
    """Train the FID feature extractor: the glyphs CNN with its attribute heads, or the digits classifier.

    Example: python -m ditpareto train-extractor --data resources/data/extractor.npz
    --val resources/data/extractor_val.npz --out cnn.pt --report cnn.json
    """
    train, validation = load_draw(data), load_draw(val)
    if extractor == "glyph-cnn":
        model, stats = train_glyph_cnn(train, load_attributes(data), validation, load_attributes(val), steps=steps,
                                       seed=seed)
        save_glyph_cnn(model, out)
    else:
        model, stats = train_digits_classifier(train, validation, steps=steps, seed=seed)
        save_classifier(model, out)
    write_json({**stats, "extractor": extractor, "steps": steps, "seed": seed, **provenance()}, report)
    return stats


def first_images(data: ImageSet, n: int | None, what: str) -> ImageSet:
    if n is None:
        return data
    if n < 2 or n > len(data.labels):
        raise InputError(f"{what} has {len(data.labels)} images; {n} were asked for")
    return ImageSet(data.images[:n], data.labels[:n])


def reference_stats(*, metric_settings: MetricSettings, reference: str, out: str,
                    reference_batch: str | None = None) -> dict:
    """What every evaluate job computes alike from the reference draw, computed once: its features (every layer the
    metrics read), its k-NN radii (precision and recall) and, with a bootstrap, its resampled FID statistics
    (means, covariances, their square roots; bootstrap seed + 1). Read by evaluate --reference-stats.

    Example: python -m ditpareto reference-stats --reference resources/data/reference.npz
    --extractor-weights cnn.pt --bootstrap-replicates 2000 --out resources/fid/reference_stats.npz
    """
    if reference_batch:
        raise InputError("reference-stats caches a reference draw's statistics (--reference), not a reference batch")
    images = load_draw(reference).images
    layers = metric_layers(metric_settings)
    features = extract_featuresdict(images, metric_settings)
    arrays = {f"features~{name}": tensor.numpy() for name, tensor in features.items()}
    arrays["radii"] = knn_radii(features[layers["prc"]].numpy(), metric_settings.prc_neighborhood).numpy()
    arrays["size"] = np.int64(len(images))
    if metric_settings.bootstrap_replicates:
        ref = reference_replicates(features[layers["fid"]].double().numpy(), metric_settings.bootstrap_replicates,
                                   metric_settings.bootstrap_seed + 1)
        arrays.update(mean=ref.mean, cov=ref.cov, sqrt=ref.sqrt, counts=ref.counts, seed=np.int64(ref.seed))
    save_npz(arrays, out, compress=False)
    return {"reference_images": len(images), "layers": sorted(features),
            "replicates": metric_settings.bootstrap_replicates, "out": out}


def reference(*, metric_settings: MetricSettings, out: str, reference: str | None = None,
              reference_batch: str | None = None, floor: str | None = None, floor_samples: int | None = None) -> dict:
    """Real-vs-real FID floor (an independent draw against the reference) and pure-noise FID.

    Example: python -m ditpareto reference --reference resources/data/reference.npz --floor resources/data/floor.npz
    --floor-samples 1000 --extractor-weights cnn.pt --out ref.json
    """
    if reference_batch:
        result = reference_batch_floor_and_noise(load_reference_batch(reference_batch), metric_settings)
    else:
        if not floor:
            raise InputError("--reference needs --floor (an independent real draw)")
        floor_set = first_images(load_draw(floor), floor_samples, f"floor draw {floor}")
        result = fid_floor_and_noise(load_draw(reference), floor_set, metric_settings)
    write_json({**result, **provenance()}, out)
    return result


def calibrate(*, metric_settings: MetricSettings, floor: str, out: str, reference: str | None = None,
              reference_batch: str | None = None, samples: int = 1000, replicates: int = 5,
              min_ratio: float = 4.0) -> dict:
    """Calibrate the FID extractor: graded degradations of an independent draw against the seed-to-seed spread.

    Example: python -m ditpareto calibrate --reference resources/data/reference.npz --floor resources/data/floor.npz
    --samples 1000 --extractor-weights cnn.pt --out results/metrics/calibration.csv
    """
    if reference_batch:
        raise InputError("calibrate compares real draws: pass --reference (a draw), not --reference-batch")
    images = load_draw(floor).images
    if replicates < 2 or samples < 2 or len(images) < replicates * samples:
        raise InputError(f"calibration needs --replicates >= 2 sets of --samples >= 2 images: {replicates} x "
                         f"{samples} from a floor draw of {len(images)}")
    quiet = dataclasses.replace(metric_settings, progress=False)
    sets = [images[i * samples:(i + 1) * samples] for i in range(replicates)]
    result = run_calibration(lambda x: extract_features(x, quiet), load_draw(reference).images, sets,
                             fid_from_features, min_ratio)
    import pandas as pd  # here: the evaluate jobs do not pay its import

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.rows).to_csv(out, index=False)
    summary = {"extractor": metric_settings.feature_extractor, "samples": samples, "replicates": replicates,
               "seed_spread": result.spread, "floor_fid": result.floor, "monotone": result.monotone,
               "smallest_rise_over_spread": result.min_ratio, "min_ratio": min_ratio,
               "passed": result.passed, **provenance()}
    write_json(summary, Path(out).with_suffix(".json"))
    if not result.passed:
        log.warning("extractor calibration FAILED: monotone=%s, smallest rise %.2f x the spread (need %.1f)",
                    result.monotone, result.min_ratio, min_ratio)
    return {k: summary[k] for k in ("seed_spread", "floor_fid", "monotone", "smallest_rise_over_spread", "passed")}


def load_reference_stats(path: str, settings: MetricSettings, size: int) -> tuple[dict, np.ndarray,
                                                                                   ReferenceReplicates | None]:
    """``reference-stats``'s file, checked against this evaluation (the draw's size, the layers the metrics read,
    the bootstrap's replicates and seed) and for finite values: (featuresdict, k-NN radii, resampled statistics or
    None without a bootstrap). InputError naming what is wrong."""
    import torch

    data = read_npz(path, "reference statistics", mapped=("cov", "sqrt", "counts"), remedy="rerun `reference-stats`")
    layers = sorted(set(metric_layers(settings).values()))
    missing = sorted(({f"features~{name}" for name in layers} | {"radii", "size"}) - set(data))
    if missing:
        raise InputError(f"reference statistics {path} lack {missing}: made for another extractor? rerun "
                         "`reference-stats`")
    if int(data["size"]) != size:
        raise InputError(f"reference statistics {path} were made from {int(data['size'])} images; the reference "
                         f"draw has {size}: rerun `reference-stats`")
    features = {name: data[f"features~{name}"] for name in layers}
    for key, value in [*features.items(), ("radii", data["radii"])]:
        if len(value) != size or not np.isfinite(value).all():
            raise InputError(f"reference statistics {path}: {key} has {len(value)} rows for {size} images or holds "
                             "NaN/Inf")
    replicates = None
    if settings.bootstrap_replicates:
        dim = features[metric_layers(settings)["fid"]].shape[1]
        b, seed = settings.bootstrap_replicates, settings.bootstrap_seed + 1
        expected = {"mean": (b, dim), "cov": (b, dim, dim), "sqrt": (b, dim, dim)}
        for key, shape in expected.items():
            if key not in data or data[key].shape != shape or not all_finite(data[key]):
                raise InputError(f"reference statistics {path}: {key} is missing, not {shape} or not finite "
                                 f"(--bootstrap-replicates {b}): rerun `reference-stats`")
        counts = data.get("counts")
        if counts is None or counts.shape != (b, size) or counts.dtype != np.uint8:
            raise InputError(f"reference statistics {path}: counts are missing or not uint8 {(b, size)}: rerun "
                             "`reference-stats`")
        if int(data["seed"]) != seed:
            raise InputError(f"reference statistics {path} were resampled with seed {int(data['seed'])}; this "
                             f"bootstrap needs {seed}: rerun `reference-stats`")
        replicates = ReferenceReplicates(data["mean"], data["cov"], data["sqrt"], seed, size, counts)
    return {name: torch.from_numpy(value) for name, value in features.items()}, data["radii"], replicates


def _span(indices) -> str:
    return f"{int(indices.min())}..{int(indices.max())}, {len(np.unique(indices))} distinct" if len(indices) else "none"


def evaluate(*, metric_settings: MetricSettings, samples: str, record: str, out: str, reference: str | None = None,
             reference_batch: str | None = None, features: str | None = None,
             reference_stats: str | None = None) -> dict:
    """FID/KID/IS/precision/recall of a grid point with torch-fidelity, FID's paired-bootstrap CI, and the
    per-sample features (``features``); its sampling record checked first.

    Example: python -m ditpareto evaluate --samples s.npz --record s.json --reference resources/data/reference.npz
    --extractor-weights cnn.pt --out metrics.json --features features.npz
    """
    result = read_record(record, required=SAMPLE_RECORD_KEYS)  # before any compute
    if not isinstance(result["params"], dict):
        raise InputError(f"record {record}: params must be an object")
    loaded = load_samples(samples)
    images = loaded["images"]
    count = result["params"].get("num_samples")
    if len(images) != count or not np.array_equal(np.sort(loaded["indices"]), np.arange(len(images))):
        raise InputError(f"samples {samples} hold {len(images)} samples (indices {_span(loaded['indices'])}); their "
                         f"record {record} says num_samples {count}, indices 0..{count - 1 if isinstance(count, int) else '?'}"
                         " each once")
    layer = metric_layers(metric_settings)["fid"]
    if reference_batch:
        batch = load_reference_batch(reference_batch)
        generated = extract_featuresdict(images, metric_settings)
        metrics = metrics_against_reference_batch(images, batch, metric_settings, features=generated)
        reference_features, reference_images = (batch.mu, batch.sigma), 0 if batch.images is None else len(batch.images)
    else:
        reference_set = load_draw(reference)
        cached, radii, resampled = (load_reference_stats(reference_stats, metric_settings, len(reference_set.images))
                                    if reference_stats else (None, None, None))
        # precision and recall from their per-sample terms (equal to torch-fidelity's; computed once, resampled
        # by the bootstrap)
        metrics, generated, reference_fd = compute_metrics(images, reference_set.images, metric_settings,
                                                           with_features=True, precision_recall=False,
                                                           reference_features=cached)
        reference_features, reference_images = reference_fd[layer].double().numpy(), len(reference_set.images)
        if resampled is not None:
            reference_features = resampled
        prc_layer = metric_layers(metric_settings)["prc"]
        membership = manifold_membership(generated[prc_layer].numpy(), reference_fd[prc_layer].numpy(),
                                         metric_settings.prc_neighborhood, radii)
        metrics["precision"], metrics["recall"] = (float(m.mean()) for m in membership)
    generated_features = generated[layer].double().numpy()
    head = metric_settings.head_samples
    if 0 < head < len(generated_features):
        first = np.argsort(loaded["indices"], kind="stable")[:head]
        mu, sigma = (batch.mu, batch.sigma) if reference_batch else moments(reference_fd[layer].double().numpy())
        result["fid_head"] = {"samples": head, "fid": frechet_distance(*moments(generated_features[first]), mu, sigma)}
    if metric_settings.bootstrap_replicates:
        replicates = bootstrap_fid(generated_features, reference_features, metric_settings.bootstrap_replicates,
                                   metric_settings.bootstrap_seed)
        metrics["fid_ci_low"], metrics["fid_ci_high"] = basic_ci(metrics["fid"], replicates)
        if not reference_batch:  # KID / precision / recall need the reference's per-sample features
            kid_layer = metric_layers(metric_settings)["kid"]
            for name, values in bootstrap_set_metrics(
                    generated[kid_layer].double().numpy(), reference_fd[kid_layer].double().numpy(),
                    metric_settings.bootstrap_replicates, metric_settings.bootstrap_seed, membership,
                    None if resampled is None else resampled.counts).items():
                metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = percentile_ci(values)
        result["fid_bootstrap"] = [float(v) for v in replicates]
        result["bootstrap"] = {"replicates": metric_settings.bootstrap_replicates,
                               "seed": metric_settings.bootstrap_seed, "level": CI_LEVEL,
                               "fid_ci_estimand": BASIC_ESTIMAND,
                               "other_ci": "percentile (KID: one reference subset; precision, recall: per-sample terms)"}
    if features:
        save_npz({"features": generated_features.astype(np.float32), "indices": loaded["indices"]},
                 features, compress=False)
    result.update(metrics)
    result["params"]["feature_extractor"] = metric_settings.feature_extractor
    result["params"]["metrics_device"] = str(resolve_device(metric_settings.device))
    result["params"]["reference"] = "reference_batch" if reference_batch else "reference_draw"
    result["params"]["reference_images"] = int(reference_images)
    write_json(result, out)
    return metrics


def convergence(*, metric_settings: MetricSettings, spec: ModelSpec, settings: SamplingSettings, snapshots: list,
                out: str, reference: str | None = None, reference_batch: str | None = None, seed: int = 0,
                num_samples: int = 1000, batch_size: int = 250) -> dict:
    """FID of a pretraining run's EMA snapshots: the static DiT of each at --steps, the same noise and labels
    (paired), scored like the grid. Is the base converged?

    Example: python -m ditpareto convergence --snapshots snapshots/ema-step*.pt --model dit-toy-2 --image-size 16
    --in-channels 1 --num-classes 10 --steps 10 --cfg-scale 2.0 --reference resources/data/reference.npz
    --extractor-weights resources/fid/extractor.pt --out convergence.csv
    """
    if reference_batch:
        raise InputError("convergence scores against a reference draw: pass --reference")
    method = get_method("dit")
    reference_images = load_draw(reference).images
    rows = []
    for path in sorted(snapshots):
        match = re.search(r"step(\d+)", Path(path).name)
        if not match:
            raise InputError(f"snapshot {path} is not named ema-step<N>.pt")
        model = method.load_model(path, spec, {}).to(resolve_device(metric_settings.device))
        plan = method.plan(model, settings.steps, settings, spec)
        batch, _ = generate(plan, spec, settings, seed, range(num_samples), batch_size)
        metrics = compute_metrics(batch.images, reference_images, metric_settings)
        rows.append({"step": int(match.group(1)), "snapshot": Path(path).name, **metrics})
        log.info("step %d: FID %.3f", rows[-1]["step"], metrics["fid"])
    import pandas as pd

    table = pd.DataFrame(rows).sort_values("step")
    table["fid_change_from_previous"] = table["fid"].diff()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return {"steps": table["step"].tolist(), "fid": [round(v, 3) for v in table["fid"]]}
