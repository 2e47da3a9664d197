"""The one way the project times code: repeated wall-clock measurements after a warm-up, summarised by their median
(with min and max as the spread). Used by the sampling job, the latency job and the benchmark scripts."""

from __future__ import annotations

import contextlib
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


class DeviceClock:
    """Seconds of a block of work on a device: wall-clock on a CPU; on CUDA, CUDA events around the block, read
    after a synchronize (the time the GPU spent, not the host's launch time).

    Usage: ``with clock.measure() as elapsed: ...`` then ``elapsed()`` gives the seconds."""

    def __init__(self, device="cpu"):
        import torch

        self.device = torch.device(device)
        self.kind = "cuda-events" if self.device.type == "cuda" else "perf_counter"

    @contextlib.contextmanager
    def measure(self):
        import torch

        result = {}
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield lambda: result["seconds"]
            end.record()
            end.synchronize()
            result["seconds"] = start.elapsed_time(end) / 1000
        else:
            begin = time.perf_counter()
            yield lambda: result["seconds"]
            result["seconds"] = time.perf_counter() - begin
