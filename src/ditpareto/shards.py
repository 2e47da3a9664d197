"""A grid point's samples in shards: which indices a shard samples, and merging shards and their records. Without
torch: the merge job imports this alone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ditpareto.errors import InputError
from ditpareto.npzfiles import load_samples


def shard_indices(num_samples: int, shard: int, shards: int) -> np.ndarray:
    """Global sample indices of shard ``shard`` of ``shards`` (contiguous, sizes differ by at most one): the union
    over shards is 0..num_samples-1 for any shard count, and each index has its own seeded generator."""
    if not 1 <= shards <= num_samples or not 0 <= shard < shards:
        raise InputError(f"shard {shard} of {shards} is invalid for {num_samples} samples (0 <= shard < shards <= N)")
    return np.array_split(np.arange(num_samples), shards)[shard]


def merge_shards(paths: Sequence[str]) -> dict[str, np.ndarray]:
    """Concatenate shard npz files (images, labels, indices) in index order; the indices must be 0..N-1 exactly."""
    parts = [load_samples(path) for path in paths]
    merged = {key: np.concatenate([p[key] for p in parts]) for key in ("images", "labels", "indices")}
    order = np.argsort(merged["indices"], kind="stable")
    merged = {key: value[order] for key, value in merged.items()}
    if not np.array_equal(merged["indices"], np.arange(len(order))):
        raise InputError(f"shards {list(paths)} do not cover sample indices 0..{len(order) - 1} exactly once")
    return merged


# Per-shard fields: summed or pooled by merge_records; every other field must agree across shards.
_SHARD_FIELDS = ("shard", "shard_samples", "wall_seconds", "latency_ms_per_image", "latency_ms_per_image_std",
                 "git_commit", "device", "machine")


def merge_records(records: Sequence[dict]) -> dict:
    """One grid point's record from its shards' records: wall seconds summed, latency pooled (weighted by samples);
    FLOPs, settings and the rest must be identical across shards."""
    first = {k: v for k, v in records[0].items() if k not in _SHARD_FIELDS}
    for record in records[1:]:
        rest = {k: v for k, v in record.items() if k not in _SHARD_FIELDS}
        if rest != first:
            differing = sorted(k for k in set(rest) | set(first) if rest.get(k) != first.get(k))
            raise InputError(f"shard records disagree on {differing}: shards of different runs?")
    counts = np.array([r["shard_samples"] for r in records], dtype=float)
    means = np.array([r["latency_ms_per_image"] for r in records])
    stds = np.array([r["latency_ms_per_image_std"] for r in records])
    mean = float(np.average(means, weights=counts))
    pooled = float(np.sqrt(max(np.average(stds**2 + means**2, weights=counts) - mean**2, 0.0)))
    commits = sorted({r.get("git_commit") for r in records})
    devices = sorted({r.get("device") for r in records})
    machines = [r["machine"] for r in records if "machine" in r]
    return {**first, "shards_merged": len(records), "wall_seconds": float(sum(r["wall_seconds"] for r in records)),
            "latency_ms_per_image": mean, "latency_ms_per_image_std": pooled,
            "git_commit": commits[0] if len(commits) == 1 else commits,
            "device": devices[0] if len(devices) == 1 else devices,
            **({"machine": machines[0] if all(m == machines[0] for m in machines) else machines} if machines else {})}
