"""Calibration of a FID feature extractor: does FID see the defects a generator makes, above seed noise?

Graded degradations of an independent real draw (the floor draw's first N images, N = a grid point's sample count):
Gaussian blur, 2x down-up resampling, additive noise and a whole-image shift (edge replicated). Each is scored
against the FID reference statistics, beside the clean draw and K - 1 further independent draws of N images (the
seed-to-seed spread). The extractor passes when FID rises monotonically with every degradation's level and the
smallest rise over the clean draw is at least ``min_ratio`` x the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ditpareto.errors import InputError

# (name, level): blur sigma px, resampling factor, noise sigma in /255, shift px. Ordered by level within a name.
DEGRADATIONS = (("blur", 0.5), ("blur", 1.0), ("downup", 2), ("noise", 4), ("noise", 8), ("shift", 1), ("shift", 2))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-taps**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def degrade(images: np.ndarray, name: str, level: float, seed: int = 0) -> np.ndarray:
    """A degraded copy of uint8 images (N, H, W, C)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    if name == "blur":
        y = _gaussian_blur(x, float(level))
    elif name == "downup":
        factor = int(level)
        y = F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="bilinear", align_corners=False)
    elif name == "noise":
        g = torch.Generator().manual_seed(seed)
        y = x + float(level) * torch.randn(x.shape, generator=g)
    elif name == "shift":
        k = int(level)
        y = F.pad(x, (k, 0, k, 0), mode="replicate")[..., : x.shape[2], : x.shape[3]]  # content moves down-right
    else:
        raise InputError(f"unknown degradation {name!r}")
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass
class CalibrationResult:
    rows: list[dict]  # one per (degradation, level), plus the clean draw and the replicate draws
    spread: float  # std of FID over the independent clean draws
    floor: float  # FID of the first clean draw
    monotone: bool
    min_ratio: float  # smallest degradation rise / spread
    passed: bool


def calibrate(features_of, reference: np.ndarray, draws: list[np.ndarray], fid_of_features, min_ratio: float = 4.0,
              seed: int = 0) -> CalibrationResult:
    """``features_of(images) -> (N, D)``; ``fid_of_features(a, b) -> float``; ``draws``: K >= 2 independent real sets
    of N images (the first is degraded)."""
    if len(draws) < 2:
        raise InputError("calibration needs at least two independent clean draws (the seed-to-seed spread)")
    ref = features_of(reference)
    clean = [fid_of_features(features_of(d), ref) for d in draws]
    spread = float(np.std(clean, ddof=1))
    rows = [{"degradation": "clean", "level": 0.0, "replicate": i, "fid": fid} for i, fid in enumerate(clean)]
    by_name: dict[str, list[float]] = {}
    for name, level in DEGRADATIONS:
        fid = fid_of_features(features_of(degrade(draws[0], name, level, seed)), ref)
        by_name.setdefault(name, []).append(fid)
        rows.append({"degradation": name, "level": float(level), "replicate": 0, "fid": fid})
    for row in rows:
        row["rise"] = row["fid"] - clean[0]
        row["rise_over_spread"] = row["rise"] / spread if spread > 0 else float("inf")
    monotone = all(fids[0] > clean[0] and all(b > a for a, b in zip(fids, fids[1:])) for fids in by_name.values())
    smallest = min(fids[0] - clean[0] for fids in by_name.values())
    ratio = smallest / spread if spread > 0 else float("inf")
    return CalibrationResult(rows, spread, clean[0], monotone, ratio, bool(monotone and ratio >= min_ratio))
