"""Imports: a shipped or trained file checked (sha256, keys, shapes, records) and copied into the study.

One pure function per job: typed inputs, files in, files out, a small summary dict back; the CLI
(``ditpareto.commands``) only parses flags into these arguments."""

from __future__ import annotations

import shutil
from pathlib import Path

from ditpareto.errors import InputError
from ditpareto.glyph_extractor import load_glyph_cnn
from ditpareto.methods import Method
from ditpareto.metrics import load_classifier
from ditpareto.models import load_model
from ditpareto.models.checkpoint import atomic_save
from ditpareto.results import provenance, read_record, sha256_of, verified_digest, write_json
from ditpareto.study import OFFICIAL, ModelSpec
from ditpareto.spec import FullCompute, MethodOptions


def checked_copy(checkpoint: str, sha256: str | None, out: str, what: str, validate, check_record=None) -> str:
    """Check a file's sha256 (when given), its .json record when one lies beside it (``check_record(record,
    digest)``) and its contents (``validate(path)``), then copy both to ``out``; returns the digest."""
    digest = verified_digest(checkpoint, sha256, what)
    path = Path(str(checkpoint) + ".json")
    record = read_record(path) if path.is_file() else None
    if check_record is not None:
        check_record(record, digest)
    validate(checkpoint)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, out)
    if record is not None:
        write_json(record, str(out) + ".json")
    return digest


def import_base(*, spec: ModelSpec, checkpoint: str, out: str, sha256: str | None = None) -> dict:
    """Check a pretrained DiT or Latte base (sha256, keys, shapes) and copy it into the study.

    Example: python -m ditpareto import-base --model dit-xl-2 --image-size 256 --checkpoint DiT-XL-2-256x256.pt
    --sha256 HEX --out resources/pretrained/base.pt
    """
    digest = checked_copy(checkpoint, sha256, out, "base checkpoint (config key base.checkpoint)",
                          lambda path: load_model(path, spec.name, spec.image_size, **spec.overrides()))
    return {"out": out, "sha256": digest}


def import_extractor(*, extractor: str, checkpoint: str, out: str, sha256: str | None = None) -> dict:
    """Check a shipped FID extractor (sha256, keys, shapes) and copy it into the study.

    Example: python -m ditpareto import-extractor --checkpoint assets/extractor/glyph-cnn-16.pt --sha256 HEX
    --out resources/fid/extractor.pt
    """
    loader = load_glyph_cnn if extractor == "glyph-cnn" else load_classifier
    return {"out": out, "sha256": checked_copy(checkpoint, sha256, out, "extractor checkpoint", loader)}


def import_finetuned(*, method: Method, options: MethodOptions, spec: ModelSpec, checkpoint: str, out: str,
                     sha256: str | None = None, budget: str | None = None, train_gmacs: float | None = None,
                     record_sha256: str | None = None) -> dict:
    """Check a fine-tune (sha256, keys, shapes, its training record) and copy both into the study.

    Example: python -m ditpareto import-finetuned --method dydit --budget 0.50 --model dit-toy-2 --image-size 16
    --in-channels 1 --num-classes 10 --checkpoint assets/finetuned/dydit/budget~0.50/finetuned.pt --out finetuned.pt
    """
    if not Path(str(checkpoint) + ".json").is_file():
        raise InputError(f"fine-tune {checkpoint} has no training record {checkpoint}.json "
                         "(train_gmacs, steps, samples seen)")
    if record_sha256:
        verified_digest(f"{checkpoint}.json", record_sha256, f"{method.name} fine-tune's training record")
    digest = checked_copy(checkpoint, sha256, out, f"{method.name} fine-tune",
                          lambda path: method.load_model(path, spec, options),
                          lambda record, digest: check_finetune_record(record, f"{checkpoint}.json", method, budget,
                                                                       digest, train_gmacs))
    return {"method": method.name, "budget": budget, "out": out, "sha256": digest}


def check_finetune_record(record: dict, path: str, method: Method, budget: str | None, digest: str,
                          train_gmacs: float | None = None) -> None:
    """A fine-tune's training record, checked before it reaches the equal-compute columns: its method and budget
    are the target's, its sha256 is the weights' digest, its training GMACs, optimizer steps and samples seen are
    finite positive numbers, and (given ``train_gmacs``, the study's target for this run) within 1 % of it. InputError
    naming the field."""
    import math

    from ditpareto.study import TRAIN_GMACS_TOLERANCE

    def bad(field: str, wanted: str):
        return InputError(f"training record {path}: {field} is {record.get(field)!r}, expected {wanted}")

    if record.get("method") != method.name:
        raise bad("method", repr(method.name))
    if budget is not None and record.get("budget") is not None and str(record["budget"]) != str(budget):
        raise bad("budget", repr(budget))
    if str(record.get("sha256", "")).lower() != digest:
        raise bad("sha256", f"the weights' digest {digest}")
    for field, kind in (("train_gmacs", float), ("optimizer_steps", int), ("samples_seen", int)):
        value = record.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 \
                or (kind is int and value != int(value)):
            raise bad(field, f"a finite {'integer' if kind is int else 'number'} > 0")
    if not train_gmacs:
        return
    target = record.get("train_gmacs_budget", train_gmacs)
    if not isinstance(target, (int, float)) or abs(float(target) - train_gmacs) > 1e-6 * train_gmacs:
        raise bad("train_gmacs_budget", f"the study's {train_gmacs:g} (finetune.train_gmacs x the run's multiple)")
    # a run stops at the first step that reaches its budget: it may pass it by less than two steps' compute
    step = record.get("gmacs_per_step_first")
    slack = max(TRAIN_GMACS_TOLERANCE * train_gmacs, 2 * step if isinstance(step, (int, float)) else 0.0)
    if abs(record["train_gmacs"] - train_gmacs) > slack:
        raise bad("train_gmacs", f"the study's {train_gmacs:g} (finetune.train_gmacs x the run's multiple) within "
                                 f"{slack:g}")


def import_official(*, method: Method, options: MethodOptions, spec: ModelSpec, checkpoint: str, out: str,
                    budget: str, sha256: str | None = None) -> dict:
    """Convert the authors' released checkpoint of a budget (DyDiT: new_dydit0.7.pt, new_dydit0.5.pt) to our layout.

    The file is checked (sha256, every key, shape and value, in the authors' names) and written as our weights with
    a record beside them: finetune_source "official", training compute unknown (train_gmacs, optimizer_steps,
    samples_seen null), the file's sha256 and the training args it holds.

    Example: python -m ditpareto import-official --method dydit --budget 0.70 --model dit-xl-2 --image-size 256
    --checkpoint external/dydit/new_dydit0.7.pt --sha256 HEX --out finetuned.pt
    """
    parsed = method.parse_budget(budget)
    if isinstance(parsed, FullCompute):
        raise InputError(f"--budget {budget}: name the budget the checkpoint was trained for, not a full@ point")
    digest = verified_digest(checkpoint, sha256, f"{method.name} authors' checkpoint for budget {budget}")
    model, read = method.load_official(checkpoint, spec, options)
    atomic_save(method.state_to_save(model), out)
    record = {
        "method": method.name, "budget": method.budget_label(parsed), "options": options.to_dict(),
        "finetune_source": OFFICIAL, "train_gmacs": None, "optimizer_steps": None, "samples_seen": None,
        "official_checkpoint": str(checkpoint), "official_sha256": digest, "official_entry": read["entry"],
        "official_args": read["args"], "official_repository": read.get("repository"), "sha256": sha256_of(out),
        **provenance(),
    }
    write_json(record, str(out) + ".json")
    return {"method": method.name, "budget": record["budget"], "out": out, "official_sha256": digest,
            "entry": read["entry"]}
