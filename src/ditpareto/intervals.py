"""Confidence intervals, one-sided p-values and Holm's adjustment from paired-bootstrap replicates (torch-free).

Two interval kinds, named by their estimand:

* ``basic``: a grid point's FID. A resampled set's FID is biased upward (duplicates shrink its spread), so the
  replicates sit above the estimate by about the estimate's own finite-N bias; the basic bootstrap interval
  ``[2 x - q_hi, 2 x - q_lo]`` reflects them and estimates the *population* FID (infinitely many samples of the
  generator against the reference population).
* ``percentile``: a paired difference or ratio of points (their finite-N biases largely cancel), and the
  resampled means (precision, recall) and unbiased MMD (KID): the replicates' quantiles.

An ``Estimate`` may carry an independent noise the bootstrap does not see (fine-tune seed noise: a standard
deviation measured from few seeds, ``noise_df`` degrees of freedom): its half-widths are added in quadrature with the
t quantile's, never with 1.96. Its p-values invert the interval (the largest level at which the interval
excludes a bound), so a Holm-adjusted verdict is the verdict read at the adjusted level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CI_LEVEL = 0.95
KINDS = ("basic", "percentile")
BASIC_ESTIMAND = "population FID (basic bootstrap: the finite-N upward bias reflected)"
PERCENTILE_ESTIMAND = "paired difference (percentile bootstrap)"


def _finite(replicates) -> np.ndarray:
    values = np.asarray(replicates, dtype=np.float64)
    return values[np.isfinite(values)]


def percentile_ci(replicates, level: float = CI_LEVEL) -> tuple[float, float]:
    """The replicates' (1 - level) / 2 and (1 + level) / 2 quantiles (non-finite ones left out; NaN if none)."""
    values = _finite(replicates)
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def basic_ci(estimate: float, replicates, level: float = CI_LEVEL) -> tuple[float, float]:
    """The basic bootstrap interval ``[2 estimate - q_hi, 2 estimate - q_lo]`` (NaN for a non-finite estimate)."""
    low, high = percentile_ci(replicates, level)
    if not math.isfinite(estimate):
        return math.nan, math.nan
    return 2 * estimate - high, 2 * estimate - low


def noise_quantile(level: float, df: int | None) -> float:
    """The two-sided ``level`` quantile of the noise's distribution: Student's t with ``df`` degrees of freedom (a
    standard deviation estimated from df + 1 seeds), the normal's when df is None (known)."""
    from scipy import stats

    q = (1 + level) / 2
    return float(stats.norm.ppf(q) if df is None else stats.t.ppf(q, df))


def widen(estimate: float, low: float, high: float, std: float, df: int | None = None,
          level: float = CI_LEVEL) -> tuple[float, float]:
    """An interval widened by an independent noise of standard deviation ``std``: each half-width (the bound's
    distance from the estimate) added in quadrature with ``noise_quantile(level, df) x std``."""
    if not std or math.isnan(std) or not math.isfinite(estimate):
        return low, high
    extra = noise_quantile(level, df) * std
    # each bound moves outward by what the noise adds in quadrature to its distance from the estimate (a narrow
    # interval need not contain the estimate: the distance is taken as is, the bound never crosses over)
    below, above = abs(estimate - low), abs(high - estimate)
    return low - (math.hypot(below, extra) - below), high + (math.hypot(above, extra) - above)


@dataclass
class Estimate:
    """A statistic with its paired-bootstrap replicates (``kind``: basic or percentile interval) and an optional
    independent noise (``noise_std`` with ``noise_df`` degrees of freedom, None: known)."""

    value: float
    replicates: np.ndarray
    kind: str = "percentile"
    noise_std: float = 0.0
    noise_df: int | None = None
    _sorted: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"interval kind must be one of {KINDS}, got {self.kind!r}")
        self._sorted = np.sort(_finite(self.replicates))

    @property
    def estimand(self) -> str:
        return BASIC_ESTIMAND if self.kind == "basic" else PERCENTILE_ESTIMAND

    def interval(self, level: float = CI_LEVEL) -> tuple[float, float]:
        if len(self._sorted) == 0 or not math.isfinite(self.value):
            return math.nan, math.nan
        tail = (1 - level) / 2
        lo_q, hi_q = np.quantile(self._sorted, [tail, 1 - tail])
        low, high = (2 * self.value - hi_q, 2 * self.value - lo_q) if self.kind == "basic" else (lo_q, hi_q)
        return widen(self.value, float(low), float(high), self.noise_std, self.noise_df, level)

    def p_below(self, bound: float) -> float:
        """One-sided p-value of "the estimand is below ``bound``": (1 - L) / 2 for the largest level L whose
        interval lies below it (1 when even the narrowest interval does not)."""
        return self._p(lambda low, high: high < bound)

    def p_above(self, bound: float) -> float:
        """One-sided p-value of "the estimand is above ``bound``" (see ``p_below``)."""
        return self._p(lambda low, high: low > bound)

    def _p(self, excludes) -> float:
        if len(self._sorted) == 0 or not math.isfinite(self.value):
            return math.nan
        if not excludes(*self.interval(0.0)):
            return 1.0
        lo, hi = 0.0, 1.0 - 1e-12  # excludes at lo; find the largest level that still excludes
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if excludes(*self.interval(mid)) else (lo, mid)
        return (1 - lo) / 2


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries are left out of the family and stay NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(len(p), math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    running, m = 0.0, len(order)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
