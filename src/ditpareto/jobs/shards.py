"""Merging a grid point's sample shards (one job, without torch).

One pure function per job, like ``ditpareto.jobs.sampling``."""

from __future__ import annotations

from ditpareto.errors import InputError
from ditpareto.npzfiles import save_npz
from ditpareto.results import SAMPLE_RECORD_KEYS, read_record, write_json
from ditpareto.shards import merge_records, merge_shards


def merge_samples(*, shards: list, records: list, out: str, record: str) -> dict:
    """Merge a grid point's sample shards in index order (identical for any shard count) and their records.

    Example: python -m ditpareto merge-samples --shards s0.npz s1.npz --records s0.json s1.json --out s.npz
    --record s.json
    """
    if len(shards) != len(records):
        raise InputError(f"{len(shards)} shard files but {len(records)} records")
    merged = merge_shards(shards)
    result = merge_records([read_record(r, required=(*SAMPLE_RECORD_KEYS, "shard_samples", "wall_seconds",
                                                      "latency_ms_per_image", "latency_ms_per_image_std"))
                            for r in records])
    if len(merged["indices"]) != result["params"]["num_samples"]:
        raise InputError(f"shards hold {len(merged['indices'])} samples, the records say "
                         f"{result['params']['num_samples']}")
    save_npz(merged, out, compress=False)
    write_json(result, record)
    return {"out": out, "samples": len(merged["indices"]), "shards": len(shards)}
