"""The one way the project times code: repeated wall-clock measurements after a warm-up, summarised by their median
(with min and max as the spread). Used by the sampling job, the latency job and the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Seconds: the median of ``count`` measurements, and their min and max."""

    median: float
    min: float
    max: float
    count: int


def summarize(seconds: Sequence[float]) -> Timing:
    if not seconds:
        raise ValueError("no timings to summarise")
    return Timing(statistics.median(seconds), min(seconds), max(seconds), len(seconds))


def time_repeated(fn: Callable[[], object], repeats: int, warmup: int = 1,
                  clock: Callable[[], float] = time.perf_counter) -> Timing:
    """``fn()`` ``warmup`` times untimed, then ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()
        seconds.append(clock() - start)
    return summarize(seconds)
