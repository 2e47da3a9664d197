"""Paired bootstrap of FID from per-sample features.

Every grid point of a seed shares the noise and the label at each sample index, so resampling the *same* indices for
every point (``paired_indices``: a fixed seed gives the same index sets in every job) makes the replicates of two
points comparable one by one: a difference's CI comes from the per-replicate differences. The reference set is
resampled too (the same reference indices for every point), so a single point's CI includes the reference's noise.

KID, precision and recall get the same generated-sample replicates (``bootstrap_set_metrics``): KID as the unbiased
MMD^2 with torch-fidelity's kernel, ties left out, against a fixed reference subset as large as the generated set
(the interval is around that one-subset MMD, not the subset average); precision and recall as the resampled means
of their per-sample terms, the k-NN radii held at the full sets' (the interval is conditional on the estimated
manifolds).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg

CI_LEVEL = 0.95


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


def bootstrap_fid(generated: np.ndarray, reference: np.ndarray | tuple[np.ndarray, np.ndarray], replicates: int,
                  seed: int) -> np.ndarray:
    """FID of each replicate: generated features resampled with ``paired_indices(N, replicates, seed)``; the
    reference features likewise (``seed + 1``), or fixed statistics (mu, sigma) when given as a tuple (their square
    root computed once)."""
    generated = np.asarray(generated, dtype=np.float64)
    gen_idx = paired_indices(len(generated), replicates, seed)
    if isinstance(reference, tuple):
        mu, sigma = (np.asarray(v, dtype=np.float64) for v in reference)
        fixed = (mu, sigma, _sqrt_psd(sigma))
        ref_stats = (fixed for _ in range(replicates))
    else:
        reference = np.asarray(reference, dtype=np.float64)
        ref_idx = paired_indices(len(reference), replicates, seed + 1)
        ref_stats = ((reference[idx].mean(axis=0), cov, _sqrt_psd(cov))
                     for idx in ref_idx for cov in [np.cov(reference[idx], rowvar=False)])
    return np.array([_fid_of_sample(generated[g], *r) for g, r in zip(gen_idx, ref_stats)])


def bootstrap_ci(estimate: float, replicates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """The two-sided interval of ``estimate``: the percentile interval of the replicates moved by their bias
    (mean of the replicates - estimate). A resampled set's FID is biased upward (its duplicates shrink its spread;
    at N = 1000 on the toy the replicates sit ~0.3 above the estimate, more than half the interval's width), so the
    plain percentile interval can miss the estimate itself. NaN where the estimate or every replicate is not finite."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0 or not math.isfinite(estimate):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail]) + (estimate - values.mean())
    return float(low), float(high)


def manifold_membership(generated: np.ndarray, reference: np.ndarray, neighborhood: int) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Per-sample terms of torch-fidelity's precision and recall (``calculate_precision_recall_full``): whether
    each generated sample lies in some reference sample's k-NN ball, and each reference sample in some generated
    one's. Their means are the precision and the recall."""
    import torch

    import ditpareto.compat  # noqa: F401  (before torch_fidelity)
    from torch_fidelity.metric_prc import calc_cdist_full

    gen, ref = torch.from_numpy(generated), torch.from_numpy(reference)
    radius_gen = calc_cdist_full(gen, gen, 10000).kthvalue(neighborhood + 1).values
    radius_ref = calc_cdist_full(ref, ref, 10000).kthvalue(neighborhood + 1).values
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
    out = np.empty(len(x_idx))
    for b, (g, r) in enumerate(zip(x_idx, y_idx)):
        c = np.bincount(g, minlength=len(x)).astype(np.float64)
        d = np.bincount(r, minlength=len(y)).astype(np.float64)
        within_x = (c @ k_xx @ c - c**2 @ np.diag(k_xx)) / (len(g) ** 2 - c @ c)
        within_y = (d @ k_yy @ d - d**2 @ np.diag(k_yy)) / (len(r) ** 2 - d @ d)
        out[b] = within_x + within_y - 2 * (c @ k_xy @ d) / (len(g) * len(r))
    return out


def bootstrap_set_metrics(generated: np.ndarray, reference: np.ndarray, replicates: int, seed: int,
                          membership: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """KID, precision and recall of each paired replicate (the indices of ``bootstrap_fid``).

    KID: the tie-free MMD^2 against a fixed subset of the reference as large as the generated set (the same subset
    for every grid point; KID's own estimate also works on subsets), so a 10k reference costs no 10k x 10k kernel.
    Precision and recall: the per-sample ``membership`` terms (``manifold_membership``, k-NN radii of the full
    sets) resampled, since resampled sets would hold duplicates whose zero distances bias the radii."""
    size = min(len(reference), len(generated))
    subset = np.sort(np.random.default_rng(np.random.SeedSequence([seed, len(reference), 2])).choice(
        len(reference), size, replace=False)) if size < len(reference) else np.arange(len(reference))
    gen_idx = paired_indices(len(generated), replicates, seed)
    ref_idx = paired_indices(len(reference), replicates, seed + 1)
    in_reference, in_generated = membership
    return {"kid": mmd2_replicates(generated, reference[subset], gen_idx, paired_indices(size, replicates, seed + 1)),
            "precision": in_reference[gen_idx].mean(axis=1), "recall": in_generated[ref_idx].mean(axis=1)}