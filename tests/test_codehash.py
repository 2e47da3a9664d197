"""The code a job runs as one digest: which modules each step imports, and what changes the digest."""

from __future__ import annotations

import shutil
from pathlib import Path

from ditpareto.codehash import closure, code_hash

SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_sampler_is_code_of_sampling_and_metrics_only():
    """Training, data and checkpoint imports never import the sampler: an edit to it reruns no fine-tune (the
    methods get DyDiT's trajectory counter handed down from the sampling layer instead of importing it)."""
    for step in ("sampling", "metrics"):
        assert "ditpareto.sampling" in closure(SRC, f"ditpareto.jobs.{step}")
    for step in ("training", "data", "checkpoints", "tables", "shards"):
        assert "ditpareto.sampling" not in closure(SRC, f"ditpareto.jobs.{step}"), step
    assert "ditpareto.methods.dydit" in closure(SRC, "ditpareto.jobs.training")  # imports inside functions count


def test_the_digest_follows_the_imported_code_and_not_the_version(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC / "ditpareto", src / "ditpareto")
    steps = [f"ditpareto.jobs.{s}" for s in ("sampling", "training", "data")]
    before = {s: code_hash(str(src), s) for s in steps}
    init = src / "ditpareto" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.'))
    code_hash.cache_clear()
    assert {s: code_hash(str(src), s) for s in steps} == before
    sampler = src / "ditpareto" / "sampling.py"
    sampler.write_text(sampler.read_text() + "\n# an edit\n")
    code_hash.cache_clear()
    after = {s: code_hash(str(src), s) for s in steps}
    assert after["ditpareto.jobs.sampling"] != before["ditpareto.jobs.sampling"]
    assert after["ditpareto.jobs.training"] == before["ditpareto.jobs.training"]
    assert after["ditpareto.jobs.data"] == before["ditpareto.jobs.data"]
