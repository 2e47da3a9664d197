"""FID / KID / IS / precision / recall of generated samples, computed with torch-fidelity 0.4.0.

Three feature extractors:

* ``glyph-cnn`` (default): a CNN trained here on an independent glyphs draw with heads for digit, font family,
  style, rotation and background (``ditpareto.glyph_extractor``); FID/KID/PRC use its 64-d penultimate features,
  IS its digit logits. ``ditpareto.calibration`` checks that FID sees blur, resampling, noise and shifts.
* ``digits-classifier``: a small CNN trained here on scikit-learn digits (the ``digits`` dataset).
* ``inception-v3-compat``: torch-fidelity's InceptionV3 with weights from a local file (never downloaded). The
  extractor is named explicitly, so torch-fidelity uses it for every metric: PRC uses its pool3 ("2048") features
  instead of torch-fidelity's default (VGG16, which would download weights). Precision/recall on Inception features
  are therefore not comparable with numbers computed with torch-fidelity's default VGG16 PRC.
"""

from __future__ import annotations

import ditpareto.compat  # noqa: F401  (must precede torch_fidelity / torchvision)

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from tqdm.auto import tqdm

from ditpareto.data import ImageSet
from ditpareto.errors import InputError
from ditpareto.glyph_extractor import grey_float as _grey_float
from ditpareto.glyph_extractor import load_glyph_cnn
from ditpareto.models.checkpoint import atomic_save, extract_state_dict, load_into, read_checkpoint
from ditpareto.runtime import resolve_device
from ditpareto.study import DIGITS_EXTRACTOR, EXTRACTORS, GLYPH_EXTRACTOR, INCEPTION_EXTRACTOR, MetricFields

NUM_DIGIT_CLASSES = 10
METRIC_KEYS = ("fid", "kid_mean", "kid_std", "inception_score_mean", "inception_score_std", "precision", "recall")
_FIDELITY_KEYS = {
    "fid": torch_fidelity.KEY_METRIC_FID,
    "kid_mean": torch_fidelity.KEY_METRIC_KID_MEAN,
    "kid_std": torch_fidelity.KEY_METRIC_KID_STD,
    "inception_score_mean": torch_fidelity.KEY_METRIC_ISC_MEAN,
    "inception_score_std": torch_fidelity.KEY_METRIC_ISC_STD,
    "precision": torch_fidelity.KEY_METRIC_PRECISION,
    "recall": torch_fidelity.KEY_METRIC_RECALL,
}


# --------------------------------------------------------------------------------------------- digits classifier


class DigitsClassifier(nn.Module):
    """Small CNN for grey (N, 1, H, W) images in [0, 1] (16x16 by default; other sizes via adaptive pooling).

    The penultimate layer is batch-normalised (no affine) before its ReLU, so the 64 features have a fixed,
    Inception-pool3-like scale (about 0.4 mean) and no dead units: FID/KID magnitudes do not drift with training.
    """

    feature_dim = 64

    def __init__(self, num_classes: int = NUM_DIGIT_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(64 * 16, self.feature_dim, bias=False),
            nn.BatchNorm1d(self.feature_dim, affine=False), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, 64): what FID/KID/PRC compare."""
        return self.body(x)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift] (zero fill)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator)).unbind(0)
    rows = (dy + torch.arange(h)).unsqueeze(2)  # (n, h, 1)
    cols = (dx + torch.arange(w)).unsqueeze(1)  # (n, 1, w)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def _accuracy(model: DigitsClassifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(dim=1) == labels).float().mean())


def _fit(model, x, y, steps: int, batch_size: int, generator: torch.Generator) -> None:
    """Adam with a cosine learning rate; epochs of seeded permutations; +-1 px random shifts."""
    n = len(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    order, cursor = torch.randperm(n, generator=generator), 0
    for _ in tqdm(range(steps), desc="digits classifier", mininterval=5):
        if cursor + batch_size > n:  # new epoch: reshuffle (drops the ragged tail)
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        model.train()
        loss = F.cross_entropy(model(_shift(x[idx], 1, generator)), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval().requires_grad_(False)


def train_digits_classifier(
    train: ImageSet, heldout: ImageSet, steps: int = 600, seed: int = 0, batch_size: int = 128
) -> tuple[DigitsClassifier, dict]:
    """Train the feature-extractor CNN (Adam, cosine LR, +-1 px random shifts); deterministic given ``seed``.

    The global torch RNG is forked, so callers' RNG state is left untouched. Training runs on one thread (the
    previous count is restored): this tiny CNN gains nothing from more, two threads competing with another job
    were 8x slower, and a fixed count makes the weights independent of the machine's thread count.
    """
    if steps < 1 or batch_size < 1:
        raise InputError(f"classifier training needs steps >= 1 and batch_size >= 1, got {steps}, {batch_size}")
    for name, split in (("train", train), ("heldout", heldout)):
        if len(split.labels) == 0 or split.labels.min() < 0 or split.labels.max() >= NUM_DIGIT_CLASSES:
            raise InputError(f"{name} split needs labels in [0, {NUM_DIGIT_CLASSES}), got an empty or other range")
    x_train, y_train = _grey_float(train.images), torch.as_tensor(train.labels, dtype=torch.long)
    x_held, y_held = _grey_float(heldout.images), torch.as_tensor(heldout.labels, dtype=torch.long)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored below
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsClassifier()
        _fit(model, x_train, y_train, steps, batch_size, torch.Generator().manual_seed(seed))
    finally:
        torch.set_num_threads(threads)
    stats = {"heldout_accuracy": _accuracy(model, x_held, y_held), "train_accuracy": _accuracy(model, x_train, y_train)}
    return model, stats


def save_classifier(model: DigitsClassifier, path: str | os.PathLike) -> None:
    """Save the bare state dict atomically."""
    atomic_save(model.state_dict(), path)


def load_classifier(path: str | os.PathLike) -> DigitsClassifier:
    """Load and validate (keys and shapes, weights_only) a classifier saved by :func:`save_classifier`."""
    model = load_into(DigitsClassifier(), path, what="digits classifier")
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------ torch-fidelity extractor


class TrainedFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of a network trained by the pipeline: features "feat" (64-d) and "logits" (digits).
    Its weights file is validated (weights_only, keys, shapes) before use."""

    loader = staticmethod(load_classifier)

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise InputError(f"feature extractor {name!r} needs feature_extractor_weights_path (trained weights)")
        self.net = self.loader(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 N x 3 x H x W images, got {getattr(x, 'dtype', type(x))} {tuple(x.shape)}")
        feat = self.net.features(_grey_float(x, channels_last=False))
        out = {"feat": feat, "logits": self.net.logits(feat)}
        return tuple(out[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "feat", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "feat", "kid": "feat", "prc": "feat"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)


class DigitsFeatureExtractor(TrainedFeatureExtractor):
    """The digits classifier (``digits-classifier``)."""


class GlyphFeatureExtractor(TrainedFeatureExtractor):
    """The glyphs CNN (``glyph-cnn``)."""

    loader = staticmethod(load_glyph_cnn)


_REGISTERED = {DIGITS_EXTRACTOR: DigitsFeatureExtractor, GLYPH_EXTRACTOR: GlyphFeatureExtractor}


def register_extractors() -> None:
    """Register the pipeline's trained extractors with torch-fidelity (idempotent)."""
    for name, cls in _REGISTERED.items():
        current = FEATURE_EXTRACTORS_REGISTRY.get(name)
        if current is cls:
            continue
        if current is not None and current.__qualname__ != cls.__qualname__:
            raise RuntimeError(f"torch-fidelity already has a different feature extractor named {name!r}")
        FEATURE_EXTRACTORS_REGISTRY.pop(name, None)  # a reloaded copy of this module
        torch_fidelity.register_feature_extractor(name, cls)


# ----------------------------------------------------------------------------------------------------- metrics


@dataclass
class MetricSettings(MetricFields):
    """Which extractor (and weights file) and the metrics' sample settings (fields and defaults:
    ``study.MetricFields``), checked on construction."""

    def __post_init__(self):
        if self.feature_extractor not in EXTRACTORS:
            raise InputError(f"unknown feature extractor {self.feature_extractor!r}; choose one of {EXTRACTORS}")
        if self.feature_extractor == INCEPTION_EXTRACTOR and self.weights_path is None:
            raise InputError(
                "the inception-v3-compat extractor needs a local weights file: set metrics.inception_weights "
                "(weights are never downloaded)"
            )
        if self.weights_path is not None:
            self.weights_path = str(self.weights_path)
            if not Path(self.weights_path).is_file():
                raise InputError(f"feature extractor weights {self.weights_path} do not exist")
            if self.feature_extractor == INCEPTION_EXTRACTOR:
                # torch-fidelity unpickles this file with weights_only=False on every path (FID, IS, KID, PRC):
                # it must pass the weights_only check before any of them runs
                _check_inception_weights(self.weights_path)
        if isinstance(self.head_samples, bool) or not isinstance(self.head_samples, int) or self.head_samples < 0:
            raise InputError(f"metric setting head_samples must be an integer >= 0, got {self.head_samples!r}")
        for name in ("kid_subset_size", "kid_subsets", "isc_splits", "prc_neighborhood", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "kid_subset_size" else 1):
                raise InputError(f"metric setting {name} must be a positive integer (kid_subset_size >= 2), got {value!r}")


class _UInt8Images(torch.utils.data.Dataset):
    """(N, H, W, C) uint8 array as a Dataset of 3 x H x W uint8 tensors (1 channel repeated to 3)."""

    def __init__(self, images: np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.images = x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x.contiguous()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def _check_images(name: str, images: np.ndarray, min_count: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        shape = getattr(images, "shape", None)
        raise InputError(f"{name} images must be a uint8 array (N, H, W, C) with C in (1, 3), got {shape}")
    if len(images) < min_count:
        raise InputError(f"{name} has {len(images)} images; the metrics need at least {min_count}")


def _check_inception_weights(path: str) -> None:
    """torch-fidelity loads the file with weights_only=False: refuse anything that is not a plain state dict."""
    extract_state_dict(read_checkpoint(path), f"inception weights {path}")


def metric_layers(settings: MetricSettings) -> dict[str, str]:
    """The extractor layer each metric reads (torch-fidelity's defaults for the extractor)."""
    register_extractors()
    cls = FEATURE_EXTRACTORS_REGISTRY[settings.feature_extractor]
    return {metric: cls.get_default_feature_layer_for_metric(metric) for metric in ("isc", "fid", "kid", "prc")}


def extract_featuresdict(images: np.ndarray, settings: MetricSettings) -> dict[str, torch.Tensor]:
    """Every layer the metrics read, for uint8 images (N, H, W, C), in one pass of torch-fidelity's extraction."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    if settings.weights_path is None:
        raise InputError(f"the {settings.feature_extractor} extractor needs MetricSettings.weights_path")
    cuda = resolve_device(settings.device).type == "cuda"
    layers = sorted(set(metric_layers(settings).values()))
    extractor = create_feature_extractor(settings.feature_extractor, layers, cuda=cuda, verbose=settings.progress,
                                         feature_extractor_weights_path=settings.weights_path)
    return get_featuresdict_from_dataset(_UInt8Images(images), extractor, settings.batch_size, cuda, True,
                                         settings.progress)


def _fidelity_kwargs(settings: MetricSettings, generated: int, reference: int | None) -> dict:
    kwargs = {"isc_splits": min(settings.isc_splits, generated), "rng_seed": settings.rng_seed,
              "samples_shuffle": True, "verbose": settings.progress, "kid_subsets": settings.kid_subsets,
              "prc_neighborhood": settings.prc_neighborhood}
    if reference is not None:
        kwargs["kid_subset_size"] = min(settings.kid_subset_size, generated, reference)
    return kwargs


def inception_score_from_features(generated: dict, settings: MetricSettings) -> dict:
    from torch_fidelity.metric_isc import isc_featuresdict_to_metric

    layer = metric_layers(settings)["isc"]
    n = len(generated[layer])
    raw = isc_featuresdict_to_metric(generated, layer, **_fidelity_kwargs(settings, n, None))
    return {key: float(raw[_FIDELITY_KEYS[key]]) for key in ("inception_score_mean", "inception_score_std")}


def metrics_from_features(generated: dict, reference: dict, settings: MetricSettings,
                          precision_recall: bool = True) -> dict:
    """FID, KID, IS (of ``generated``), precision and recall from two featuresdicts, with torch-fidelity's metric
    functions and the arguments ``torch_fidelity.calculate_metrics`` would pass (the same numbers). Without
    ``precision_recall`` those two are NaN (the caller computes them from per-sample terms)."""
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_featuresdict_to_metric
    from torch_fidelity.metric_prc import prc_featuresdict_to_metric

    layers = metric_layers(settings)
    n_gen, n_ref = len(generated[layers["fid"]]), len(reference[layers["fid"]])
    kwargs = _fidelity_kwargs(settings, n_gen, n_ref)
    raw = dict(inception_score_from_features(generated, settings))
    stats = [fid_featuresdict_to_statistics(fd, layers["fid"]) for fd in (generated, reference)]
    raw["fid"] = float(fid_statistics_to_metric(stats[0], stats[1], settings.progress)[_FIDELITY_KEYS["fid"]])
    kid = kid_featuresdict_to_metric(generated, reference, layers["kid"], **kwargs)
    prc = prc_featuresdict_to_metric(generated, reference, layers["prc"], **kwargs) if precision_recall else {}
    for key in ("kid_mean", "kid_std"):
        raw[key] = float(kid[_FIDELITY_KEYS[key]])
    for key in ("precision", "recall"):
        raw[key] = float(prc[_FIDELITY_KEYS[key]]) if precision_recall else float("nan")
    return {key: raw[key] for key in METRIC_KEYS}


def compute_metrics(generated: np.ndarray, reference: np.ndarray, settings: MetricSettings,
                    with_features: bool = False, precision_recall: bool = True,
                    reference_features: dict | None = None):
    """FID, KID, IS (of ``generated`` only), precision and recall of ``generated`` against ``reference``; with
    ``with_features`` also both featuresdicts (for the bootstrap). ``reference_features``: the reference's
    featuresdict extracted earlier (the reference-stats cache), used instead of extracting it again.

    Both are uint8 (N, H, W, C), C in {1, 3}, of the same H, W. Deterministic: same inputs give identical outputs.
    """
    min_count = max(2, settings.prc_neighborhood + 1)
    _check_images("generated", generated, min_count)
    _check_images("reference", reference, min_count)
    if generated.shape[1:3] != reference.shape[1:3]:
        raise InputError(f"generated images are {generated.shape[1:3]} but reference images {reference.shape[1:3]}")
    features = (extract_featuresdict(generated, settings),
                reference_features if reference_features is not None else extract_featuresdict(reference, settings))
    metrics = metrics_from_features(*features, settings, precision_recall)
    return (metrics, *features) if with_features else metrics


# ------------------------------------------------------------------------- ADM reference batch (paper setting)


@dataclass
class ReferenceBatch:
    """ADM's reference batch (e.g. VIRTUAL_imagenet256_labeled.npz): pool3 ``mu``/``sigma`` and the images ``arr_0``."""

    mu: np.ndarray
    sigma: np.ndarray
    images: np.ndarray | None


def load_reference_batch(path: str | os.PathLike) -> ReferenceBatch:
    """Read and check an ADM reference batch npz: ``mu`` (D,), ``sigma`` (D, D), optional ``arr_0`` uint8 images."""
    from ditpareto.npzfiles import read_npz

    if not Path(path).is_file():
        raise InputError(f"reference batch {path} does not exist (config key metrics.reference_batch)")
    data = read_npz(path, "reference batch")
    missing = [k for k in ("mu", "sigma") if k not in data]
    if missing:
        raise InputError(f"reference batch {path} lacks {missing} (has {sorted(data)})")
    if not all(np.issubdtype(data[k].dtype, np.floating) and np.isfinite(data[k]).all() for k in ("mu", "sigma")):
        raise InputError(f"reference batch {path}: mu and sigma must be finite floating-point arrays")
    mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    images = data.get("arr_0")
    if images is not None and (images.dtype != np.uint8 or images.ndim != 4):
        raise InputError(f"reference batch {path}: arr_0 must be uint8 images (N, H, W, C), got {images.dtype} "
                         f"{images.shape}")
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise InputError(f"reference batch {path}: mu {mu.shape} and sigma {sigma.shape} are not (D,) and (D, D)")
    return ReferenceBatch(mu, sigma, images)


def fid_against_statistics(generated: dict, mu: np.ndarray, sigma: np.ndarray, settings: MetricSettings) -> float:
    """FID of a featuresdict against precomputed feature statistics (the ADM protocol: the reference batch's
    mu/sigma), with torch-fidelity's Frechet distance."""
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric

    stats = fid_featuresdict_to_statistics(generated, metric_layers(settings)["fid"])
    if stats["mu"].shape != mu.shape:
        raise InputError(f"reference statistics are {mu.shape[0]}-d but the {settings.feature_extractor} features "
                         f"are {stats['mu'].shape[0]}-d")
    ours = {"mu": stats["mu"].astype(np.float64), "sigma": stats["sigma"].astype(np.float64)}
    return float(fid_statistics_to_metric(ours, {"mu": mu, "sigma": sigma}, settings.progress)[_FIDELITY_KEYS["fid"]])


def metrics_against_reference_batch(generated: np.ndarray, reference: ReferenceBatch, settings: MetricSettings,
                                    features: dict | None = None) -> dict:
    """FID against the batch's mu/sigma; IS of ``generated``; KID/precision/recall against the batch's images
    (NaN when it has none). The generated images' features (``features`` when already extracted) serve all of them.
    Only FID and IS are comparable with ADM's TF evaluator (the protocol notes in docs/methods)."""
    _check_images("generated", generated, max(2, settings.prc_neighborhood + 1))
    features = features if features is not None else extract_featuresdict(generated, settings)
    if reference.images is not None:
        result = metrics_from_features(features, extract_featuresdict(reference.images, settings), settings)
        result["fid_vs_reference_images"] = result["fid"]
    else:
        result = {**dict.fromkeys(METRIC_KEYS, float("nan")), **inception_score_from_features(features, settings)}
    result["fid"] = fid_against_statistics(features, reference.mu, reference.sigma, settings)
    return result


def reference_batch_floor_and_noise(reference: ReferenceBatch, settings: MetricSettings, noise_seed: int = 0) -> dict:
    """Reference points of the paper setting: the batch's own images against its mu/sigma (near 0 when the feature
    extractor matches the one that made the statistics: a check of the Inception weights) and uniform noise."""
    if reference.images is None:
        raise InputError("the reference batch has no images (arr_0): its floor cannot be computed")
    noise = np.random.default_rng(noise_seed).integers(0, 256, size=reference.images.shape, dtype=np.uint8)
    return {"floor": metrics_against_reference_batch(reference.images, reference, settings),
            "noise": metrics_against_reference_batch(noise, reference, settings)}


def fid_floor_and_noise(reference: ImageSet, floor: ImageSet, settings: MetricSettings, noise_seed: int = 0) -> dict:
    """Reference points: an independent real draw vs the reference (the real-vs-real floor) and uniform noise (the
    floor draw's shape) vs the reference."""
    noise = np.random.default_rng(noise_seed).integers(0, 256, size=floor.images.shape, dtype=np.uint8)
    return {
        "floor": compute_metrics(floor.images, reference.images, settings),
        "noise": compute_metrics(noise, reference.images, settings),
    }


# ------------------------------------------------------------------------------------ per-sample features


def extract_features(images: np.ndarray, settings: MetricSettings) -> np.ndarray:
    """Per-sample FID features (N, D) float64 of uint8 images (N, H, W, C) with the configured extractor, through
    torch-fidelity (the same extraction as the metrics)."""
    _check_images("images", images, 1)
    features = extract_featuresdict(images, settings)
    return features[metric_layers(settings)["fid"]].double().numpy()


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (torch-fidelity's formula)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    stats = [{"mu": f.mean(axis=0), "sigma": np.cov(f, rowvar=False)} for f in (a, b)]
    return float(fid_statistics_to_metric(stats[0], stats[1], False)[torch_fidelity.KEY_METRIC_FID])
