"""Paired bootstrap of FID from per-sample features.

Every grid point of a seed shares the noise and the label at each sample index, so resampling the *same* indices for
every point (``paired_indices``: a fixed seed gives the same index sets in every job) makes the replicates of two
points comparable one by one: a difference's CI comes from the per-replicate differences. The reference set is
resampled too (the same reference indices for every point), so a single point's CI includes the reference's noise;
its resampled statistics are the same for every point, so the reference job computes them once
(``ReferenceReplicates``). For low-dimensional features (the glyph CNN's 64) the replicates are computed all at once:
each resample's moments from its index counts by one matrix product, then batched eigendecompositions.

KID, precision and recall get the same generated-sample replicates (``bootstrap_set_metrics``): KID as the unbiased
MMD^2 with torch-fidelity's kernel, ties left out, against a fixed reference subset as large as the generated set
(the interval is around that one-subset MMD, not the subset average); precision and recall as the resampled means
of their per-sample terms, the k-NN radii held at the full sets' (the interval is conditional on the estimated
manifolds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

def paired_indices(n: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, n) indices drawn with replacement; the same for any job that asks with the same arguments."""
    return np.random.default_rng(np.random.SeedSequence([seed, n])).integers(0, n, size=(replicates, n))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance of two Gaussians (torch-fidelity's and ADM's formula)."""
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, torch-fidelity's) of features (N, D)."""
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _fid_of_sample(features: np.ndarray, mu: np.ndarray, sigma: np.ndarray, sigma_sqrt: np.ndarray) -> float:
    """FID of a feature sample against (mu, sigma): tr sqrt(sigma_g sigma) = tr sqrt(S sigma_g S) with S = sqrt(sigma),
    and S sigma_g S = Y^T Y for the centred, S-mapped sample Y, whose nonzero eigenvalues Y Y^T shares: an n x n
    problem when the sample is smaller than the feature dimension (2048-d Inception at a few samples)."""
    n = len(features)
    mean = features.mean(axis=0)
    y = (features - mean) @ sigma_sqrt / math.sqrt(n - 1)
    gram = y @ y.T if n < y.shape[1] else y.T @ y
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)).sum()
    trace_g = float(((features - mean) ** 2).sum() / (n - 1))
    diff = mean - mu
    return float(diff @ diff + trace_g + np.trace(sigma) - 2 * trace_sqrt)


def resample_counts(n: int, replicates: int, seed: int) -> np.ndarray:
    """How often each of n items appears in each replicate of ``paired_indices(n, replicates, seed)``: (B, n)."""
    return _counts(paired_indices(n, replicates, seed), n)


def _resampled_moments(features: np.ndarray, counts: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Means (B, d) and covariances (B, d, d) (ddof 1) of each resample given by ``counts`` rows: one matrix
    product with the per-sample outer products (their upper triangle: a covariance is symmetric), centred on the
    full set's mean for accuracy."""
    n, d = features.shape
    full_mean = features.mean(axis=0)
    centred = features - full_mean
    rows, cols = np.triu_indices(d)
    outer = centred[:, rows] * centred[:, cols]
    means, covs = [], []
    for start in range(0, len(counts), chunk):
        c = counts[start:start + chunk]
        mean = c @ centred / n
        upper = c @ outer
        second = np.empty((len(c), d, d))
        second[:, rows, cols] = upper
        second[:, cols, rows] = upper
        covs.append((second - n * mean[:, :, None] * mean[:, None, :]) / (n - 1))
        means.append(mean + full_mean)
    return np.concatenate(means), np.concatenate(covs)


def _batched_sqrt_psd(sigmas: np.ndarray) -> np.ndarray:
    """Symmetric square roots of a stack of covariances (one BLAS thread: small eigenproblems only contend)."""
    with threadpool_limits(1):
        values, vectors = np.linalg.eigh(sigmas)
    return (vectors * np.sqrt(np.clip(values, 0, None))[:, None, :]) @ np.swapaxes(vectors, 1, 2)


# Up to this feature dimension the replicates are computed all at once (moments by one matrix product, batched
# eigendecompositions); above it (2048-d Inception) one replicate at a time.
VECTORISED_MAX_DIM = 256


@dataclass
class ReferenceReplicates:
    """The reference set's resampled statistics, the same for every grid point (``reference_replicates``): computed
    once by the reference job and read by every evaluate job. ``seed`` is the reference's own index seed (the
    bootstrap seed + 1), ``size`` its number of samples."""

    mean: np.ndarray  # (B, d)
    cov: np.ndarray  # (B, d, d)
    sqrt: np.ndarray  # (B, d, d): the symmetric square root of cov
    seed: int
    size: int
    counts: np.ndarray | None = None  # (B, size) uint8: how often each reference sample is drawn (the recall's)


def reference_replicates(reference: np.ndarray, replicates: int, seed: int, chunk: int = 250) -> ReferenceReplicates:
    """Means, covariances and their square roots of the reference resampled with ``paired_indices(M, replicates,
    seed)``."""
    reference = np.asarray(reference, dtype=np.float64)
    counts = resample_counts(len(reference), replicates, seed)
    mean, cov = _resampled_moments(reference, counts, chunk)
    root = _batched_sqrt_psd(cov)
    if counts.max() > np.iinfo(np.uint8).max:
        raise ValueError(f"a reference sample is drawn {int(counts.max())} times in one replicate: too few samples")
    return ReferenceReplicates(mean, cov, root, seed, len(reference), counts.astype(np.uint8))


def bootstrap_fid(generated: np.ndarray, reference: np.ndarray | tuple[np.ndarray, np.ndarray] | ReferenceReplicates,
                  replicates: int, seed: int, chunk: int = 250) -> np.ndarray:
    """FID of each replicate: generated features resampled with ``paired_indices(N, replicates, seed)``; the
    reference features likewise (``seed + 1``; or their ``ReferenceReplicates``, computed once), or fixed
    statistics (mu, sigma) when given as a tuple. Vectorised over replicates up to ``VECTORISED_MAX_DIM`` features
    (``chunk`` replicates per matrix product), one replicate at a time above."""
    generated = np.asarray(generated, dtype=np.float64)
    n, d = generated.shape
    fixed = isinstance(reference, tuple)
    if fixed:
        mu, sigma = (np.asarray(v, dtype=np.float64) for v in reference)
    elif not isinstance(reference, ReferenceReplicates):
        reference = np.asarray(reference, dtype=np.float64)
    if d > VECTORISED_MAX_DIM:
        if isinstance(reference, ReferenceReplicates):
            raise ValueError("precomputed reference replicates are for vectorised (low-dimensional) features")
        if fixed:
            stats = ((mu, sigma, root) for root in [_sqrt_psd(sigma)] for _ in range(replicates))
        else:
            stats = ((reference[idx].mean(axis=0), cov, _sqrt_psd(cov))
                     for idx in paired_indices(len(reference), replicates, seed + 1)
                     for cov in [np.cov(reference[idx], rowvar=False)])
        return np.array([_fid_of_sample(generated[g], *r)
                         for g, r in zip(paired_indices(n, replicates, seed), stats)])
    if fixed:
        ref = ReferenceReplicates(mu[None], sigma[None], _sqrt_psd(sigma)[None], seed + 1, 0)
    elif isinstance(reference, ReferenceReplicates):
        ref = reference
        if ref.seed != seed + 1 or len(ref.mean) != replicates or ref.mean.shape[1] != d:
            raise ValueError(f"reference replicates (seed {ref.seed}, {len(ref.mean)} x {ref.mean.shape[1]}-d) do not "
                             f"match this bootstrap (seed {seed + 1}, {replicates} x {d}-d)")
    else:
        ref = reference_replicates(reference, replicates, seed + 1, chunk)
    mean_g, cov_g = _resampled_moments(generated, resample_counts(n, replicates, seed), chunk)
    roots = np.broadcast_to(ref.sqrt, cov_g.shape)  # fixed statistics: one root for every replicate
    with threadpool_limits(1):  # in chunks: small temporaries are reused, large ones faulted in page by page
        trace_sqrt = np.concatenate([
            np.sqrt(np.clip(np.linalg.eigvalsh(roots[i:i + chunk] @ cov_g[i:i + chunk] @ roots[i:i + chunk]),
                            0, None)).sum(axis=1) for i in range(0, replicates, chunk)])
    return (((mean_g - ref.mean) ** 2).sum(axis=1) + np.trace(cov_g, axis1=1, axis2=2)
            + np.trace(ref.cov, axis1=1, axis2=2) - 2 * trace_sqrt)


def knn_radii(features: np.ndarray, neighborhood: int):
    """Each sample's distance to its k-th nearest neighbour within its set (torch-fidelity's k-NN radius)."""
    import torch

    import ditpareto.compat  # noqa: F401  (before torch_fidelity)
    from torch_fidelity.metric_prc import calc_cdist_full

    x = torch.from_numpy(features)
    return calc_cdist_full(x, x, 10000).kthvalue(neighborhood + 1).values


def manifold_membership(generated: np.ndarray, reference: np.ndarray, neighborhood: int,
                        reference_radii=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample terms of torch-fidelity's precision and recall (``calculate_precision_recall_full``): whether
    each generated sample lies in some reference sample's k-NN ball, and each reference sample in some generated
    one's. Their means are the precision and the recall. ``reference_radii``: the reference's ``knn_radii``
    computed earlier (the same for every grid point)."""
    import torch

    import ditpareto.compat  # noqa: F401  (before torch_fidelity)
    from torch_fidelity.metric_prc import calc_cdist_full

    gen, ref = torch.from_numpy(generated), torch.from_numpy(reference)
    radius_gen = knn_radii(generated, neighborhood)
    radius_ref = knn_radii(reference, neighborhood) if reference_radii is None else torch.as_tensor(reference_radii)
    ref_to_gen = calc_cdist_full(ref, gen, 10000)
    in_reference = (ref_to_gen.T <= radius_ref).any(dim=1).float().numpy()  # float32 means, as torch-fidelity
    in_generated = (ref_to_gen <= radius_gen).any(dim=1).float().numpy()
    return in_reference, in_generated


def mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two sets (sizes may differ) with torch-fidelity's KID kernel (``kernel_poly``: degree 3,
    gamma 1/dim, coef 1); on equal sizes it equals torch-fidelity's ``kernel_mmd``."""
    return float(mmd2_replicates(x, y, np.arange(len(x))[None], np.arange(len(y))[None])[0])


def mmd2_replicates(x: np.ndarray, y: np.ndarray, x_idx: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
    """``mmd2`` of each resample (index arrays (B, m), (B, n)) from the kernels of the full sets, the pairs of a
    sample with its own copies left out (so a resample is not biased by its ties)."""
    import ditpareto.compat  # noqa: F401  (before torch_fidelity)
    from torch_fidelity.metric_kid import kernel_poly

    k_xx, k_yy, k_xy = kernel_poly(x, x), kernel_poly(y, y), kernel_poly(x, y)
    c = _counts(x_idx, len(x))
    d = _counts(y_idx, len(y))
    m, n = x_idx.shape[1], y_idx.shape[1]
    within_x = (((c @ k_xx) * c).sum(axis=1) - c**2 @ np.diag(k_xx)) / (m**2 - (c * c).sum(axis=1))
    within_y = (((d @ k_yy) * d).sum(axis=1) - d**2 @ np.diag(k_yy)) / (n**2 - (d * d).sum(axis=1))
    return within_x + within_y - 2 * ((c @ k_xy) * d).sum(axis=1) / (m * n)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Occurrences of each of n items in each row of an index array (B, m): (B, n)."""
    flat = (idx + n * np.arange(len(idx))[:, None]).ravel()
    return np.bincount(flat, minlength=len(idx) * n).reshape(len(idx), n).astype(np.float64)


def resampled_means(values: np.ndarray, counts: np.ndarray, chunk: int = 250) -> np.ndarray:
    """``values[idx].mean(axis=1)`` for the index rows whose ``counts`` (B, n) are given, with the same float32 result
    for 0/1 values: their sums are exact integers either way."""
    values = np.asarray(values, dtype=np.float32)
    sums = np.concatenate([counts[i:i + chunk].astype(np.float32) @ values for i in range(0, len(counts), chunk)])
    return sums / np.float32(counts.shape[1])


def bootstrap_set_metrics(generated: np.ndarray, reference: np.ndarray, replicates: int, seed: int,
                          membership: tuple[np.ndarray, np.ndarray],
                          reference_counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """KID, precision and recall of each paired replicate (the indices of ``bootstrap_fid``).

    KID: the tie-free MMD^2 against a fixed subset of the reference as large as the generated set (the same subset
    for every grid point; KID's own estimate also works on subsets), so a 10k reference costs no 10k x 10k kernel.
    Precision and recall: the per-sample ``membership`` terms (``manifold_membership``, k-NN radii of the full
    sets) resampled, since resampled sets would hold duplicates whose zero distances bias the radii.
    ``reference_counts``: the reference's resample counts (``ReferenceReplicates.counts``), which spare drawing its
    indices again (10k x 2000 of them)."""
    size = min(len(reference), len(generated))
    subset = np.sort(np.random.default_rng(np.random.SeedSequence([seed, len(reference), 2])).choice(
        len(reference), size, replace=False)) if size < len(reference) else np.arange(len(reference))
    gen_idx = paired_indices(len(generated), replicates, seed)
    in_reference, in_generated = membership
    if reference_counts is None:
        recall = in_generated[paired_indices(len(reference), replicates, seed + 1)].mean(axis=1)
    elif reference_counts.shape != (replicates, len(reference)):
        raise ValueError(f"reference counts {reference_counts.shape} do not match {replicates} replicates of "
                         f"{len(reference)} reference samples")
    else:
        recall = resampled_means(in_generated, reference_counts)
    return {"kid": mmd2_replicates(generated, reference[subset], gen_idx, paired_indices(size, replicates, seed + 1)),
            "precision": in_reference[gen_idx].mean(axis=1), "recall": recall}