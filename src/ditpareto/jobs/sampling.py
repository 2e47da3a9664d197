"""Sampling a grid point (or a shard), latency on a quiet machine, executed FLOPs (merging shards:
``ditpareto.jobs.shards``).

One pure function per job: typed inputs, files in, files out, a small summary dict back; the CLI
(``ditpareto.commands``) only parses flags into these arguments."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from ditpareto.archs import model_config
from ditpareto.diffusion import MAX_SEED
from ditpareto.errors import InputError
from ditpareto.npzfiles import save_npz
from ditpareto.codehash import running_code_hash
from ditpareto.flops import summarize
from ditpareto.spec.dit import dit_macs_per_call
from ditpareto.latency import machine, measure, prepare
from ditpareto.latents import decode_latents, load_vae
from ditpareto.methods import Method, get_method
from ditpareto.models import build_model
from ditpareto.results import SAMPLE_RECORD_KEYS, provenance, read_record, sha256_of, write_json
from ditpareto.runtime import check_precision, precision_scope, resolve_device
from ditpareto.sampling import counted_macs, generate
from ditpareto.shards import shard_indices
from ditpareto.study import NO_SOURCE, PIPELINE, SD_VAE_SCALE, GridPoint, ModelSpec, SamplingSettings, cfg_label
from ditpareto.spec import STEP_BUDGET_METHODS, split_sampler, with_sampler
from ditpareto.timing import DeviceClock, summarize as summarize_timings
from ditpareto.spec import MethodOptions


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed must be in [0, {MAX_SEED}] (sample i uses generator seed * 2**20 + i), got {seed}")


def point_budget(method: Method, budget: str, settings: SamplingSettings) -> tuple[object, SamplingSettings, str]:
    """A grid point's budget label -> (the method's parsed budget, the settings with the point's sampler: its "+S"
    qualifier or the study's, the point's canonical label)."""
    text, sampler = split_sampler(budget)
    parsed = method.parse_budget(text)
    if sampler:
        settings = dataclasses.replace(settings, sampler=sampler)
    return parsed, settings, with_sampler(method.budget_label(parsed), sampler)


def training_fields(checkpoint: str) -> dict:
    """What the sampled model's fine-tune cost (0 for the untouched base), who trained it (``finetune_source``:
    "pipeline", "official" for the authors' checkpoint, whose cost is unknown: null, "none") and in what numerics
    (``train_precision``; null where not recorded): from <checkpoint>.json."""
    path = Path(str(checkpoint) + ".json")
    if not path.is_file():
        return {"train_gmacs": 0.0, "optimizer_steps": 0, "samples_seen": 0, "finetune_source": NO_SOURCE,
                "train_precision": None}
    record = read_record(path, required=("train_gmacs", "optimizer_steps", "samples_seen"))
    return {**{k: record[k] for k in ("train_gmacs", "optimizer_steps", "samples_seen")},
            "finetune_source": record.get("finetune_source", PIPELINE), "train_precision": record.get("precision")}


def sample(*, method: Method, options: MethodOptions, spec: ModelSpec, settings: SamplingSettings, budget: str,
           checkpoint: str, seed: int, out: str, record: str, num_samples: int = 1000, shard: int = 0, shards: int = 1,
           batch_size: int = 250, reference_steps: int | None = None, ft: str = "1.00", vae: str | None = None,
           latent_scale: float = SD_VAE_SCALE, device: str = "auto", precision: str = "fp32") -> dict:
    """Draw a grid point's samples (or one shard of them); record executed FLOPs, latency and the machine.

    The model, its plan and the sampler run on ``device`` in ``precision`` (the sampler's state stays float32;
    bf16 autocasts the network calls; the SD-VAE decodes in float32); FLOPs are counted on that run's ops.

    Example: python -m ditpareto sample --method dit --budget 10 --steps 10 --seed 0 --checkpoint base.pt
    --model dit-toy-2 --image-size 16 --in-channels 1 --num-classes 10 --out s.npz --record s.json
    """
    if num_samples < 1 or batch_size < 1:
        raise InputError("--num-samples and --batch-size must be >= 1")
    check_seed(seed)
    if reference_steps is not None and reference_steps < 1:
        raise InputError(f"--reference-steps must be >= 1, got {reference_steps}")
    indices = shard_indices(num_samples, shard, shards)
    parsed, settings, label = point_budget(method, budget, settings)
    check_precision(precision)
    target = resolve_device(device)
    autoencoder = load_vae(vae, target) if vae else None
    model = method.load_model(checkpoint, spec, options).to(target)
    # after the move: plans hold tensors on the model's device
    plan = method.plan(model, parsed, settings, spec, options)
    config = model_config(spec.name, spec.image_size, **spec.overrides())
    decode = None
    if autoencoder is not None:
        def decode(z):
            with torch.autocast(target.type, enabled=False):
                return decode_latents(autoencoder, z.float(), latent_scale)
    with precision_scope(precision, target):
        macs = counted_macs(plan, config.sample_shape)
        start = time.perf_counter()
        batch, seconds = generate(plan, spec, settings, seed, indices, batch_size, decode=decode)
        wall = time.perf_counter() - start
    timed = np.array(seconds[1:] if len(seconds) > 1 else seconds)  # first batch is the warm-up
    timing = summarize_timings(timed.tolist())
    save_npz({"images": batch.images, "labels": batch.labels, "indices": batch.indices}, out, compress=False)
    result = {
        "method": method.name,
        "budget": label,
        "steps": plan.num_steps,
        "ft": ft,
        "cfg_scale": settings.cfg_scale,
        "seed": seed,
        # relative to the static DiT at the study's full step count: a method at fewer steps saves both ways
        "nominal_compute_ratio": method.nominal_compute_ratio(parsed, settings) * plan.num_steps
        / (reference_steps or plan.num_steps),
        "reference_steps": reference_steps or plan.num_steps,
        **summarize(macs),
        "latency_ms_per_image": 1000 * timing.median,  # in-process, beside other jobs: the latency job is the clean one
        "latency_ms_per_image_std": 1000 * float(np.std(timed)),
        "latency_batch_size": batch_size,
        "wall_seconds": wall,
        "shard": shard,
        "shard_samples": len(indices),
        "device": str(target),
        "device_requested": device,
        "sampling_precision": precision,  # not "precision": the metrics row has precision/recall
        "params": {
            "sampler": settings.sampler, "cfg_scale": settings.cfg_scale, "eta": settings.eta,
            "guidance_channels": settings.guidance_channels, "default_steps": settings.steps,
            "num_samples": num_samples, "shards": shards, "model": spec.name, "vae": vae,
            "image_size": spec.image_size, "threads": torch.get_num_threads(), **plan.details,
            "options": options.to_dict(),
        },
        **provenance(),
        "code": running_code_hash("ditpareto.jobs.sampling"),  # shards of two code versions never merge
        "checkpoint_sha256": sha256_of(checkpoint),  # what a recorded table keyed by this point depends on
        **training_fields(checkpoint),
        "machine": machine(target),  # what the timing columns depend on
    }
    write_json(result, record)
    return {k: result[k] for k in ("method", "budget", "seed", "gmacs_per_image", "latency_ms_per_image")}


LATENCY_POINT_KEYS = {"method": str, "budget": str, "steps": int, "ft": str, "cfg_scale": (int, float), "seed": int,
                      "checkpoint": str}


def _check_point(i: int, point) -> None:
    """A latency point: an object with each of ``LATENCY_POINT_KEYS`` of its type (InputError naming the first
    problem)."""
    if not isinstance(point, dict):
        raise InputError(f"--points[{i}] is a {type(point).__name__}, not an object with {sorted(LATENCY_POINT_KEYS)}")
    for key, kind in LATENCY_POINT_KEYS.items():
        if key not in point:
            raise InputError(f"--points[{i}] lacks {key!r}")
        if isinstance(point[key], bool) or not isinstance(point[key], kind):
            raise InputError(f"--points[{i}].{key} is {point[key]!r}, of the wrong type")
    if "options" in point and not isinstance(point["options"], dict):
        raise InputError(f"--points[{i}].options must be an object")


def _timed_points(entries: list, spec: ModelSpec, sampler: str, guidance_channels: str, target: torch.device,
                  precision: str):
    """Each latency point's model on ``target``, its plan (built in fp32, as the sampling job builds it) and the
    states of its trajectory in ``precision`` (``latency.prepare``), keyed by the point's path stem."""
    timed, keys = [], {}
    for point in entries:
        check_seed(int(point["seed"]))
        method = get_method(point["method"])
        options = method.parse_options(point.get("options", {}))
        settings = SamplingSettings(sampler=sampler, steps=int(point["steps"]), cfg_scale=float(point["cfg_scale"]),
                                    guidance_channels=guidance_channels)
        parsed, settings, _ = point_budget(method, point["budget"], settings)
        model = method.load_model(point["checkpoint"], spec, options).to(target)
        plan = method.plan(model, parsed, settings, spec, options)
        key = GridPoint(point["method"], point["budget"], int(point["steps"]), point["ft"],
                        cfg_label(point["cfg_scale"]), int(point["seed"]))
        with precision_scope(precision, target):
            timed.append(prepare(key.stem, plan, spec, settings, key.seed))
        keys[key.stem] = key
    return timed, keys


def latency(*, spec: ModelSpec, points: str, out: str, batch_sizes: list = (1, 250), rounds: int = 3,
            sampler: str = "ddim", guidance_channels: str = "dit3", device: str = "auto",
            precision: str = "fp32") -> dict:
    """Time every grid point's model in interleaved rounds on a machine this job holds alone.

    On ``device`` in ``precision``, as the study samples: CUDA events after a warm-up round on a GPU, the wall clock
    on a CPU. The record beside the table names the device (GPU, driver), the precision and the compilation used.

    Example: python -m ditpareto --threads 2 latency --points '[{"method": "dit", "budget": "10", "steps": 10,
    "ft": "0.00", "cfg_scale": 2.0, "seed": 0, "checkpoint": "base.pt"}]' --model dit-toy-2 --image-size 16
    --in-channels 1 --num-classes 10 --out latency.csv
    """
    try:
        entries = json.loads(points)
    except json.JSONDecodeError as exc:
        raise InputError(f"--points is not JSON: {exc}") from None
    if not isinstance(entries, list) or not entries or rounds < 1 or min(batch_sizes) < 1:
        raise InputError("latency needs a non-empty --points list, --rounds >= 1 and --batch-sizes >= 1")
    for i, point in enumerate(entries):  # every point checked before any model loads
        _check_point(i, point)
    check_precision(precision)
    target = resolve_device(device)
    timed, keys = _timed_points(entries, spec, sampler, guidance_channels, target, precision)
    with precision_scope(precision, target):
        import pandas as pd

        table = pd.DataFrame(measure(timed, list(batch_sizes), rounds))
    table["precision"] = precision
    table["device"] = str(target)
    for column in ("method", "budget", "steps", "ft", "cfg", "seed"):
        table[column] = [getattr(keys[name], column) for name in table["point"]]
    table = table.rename(columns={"cfg": "cfg_scale"})
    table["cfg_scale"] = table["cfg_scale"].astype(float)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    write_json({**machine(target), "device_requested": device, "precision": precision, "timer": DeviceClock(target).kind,
                "torch_compile": False, "cuda_graphs": False, "rounds": rounds, "batch_sizes": list(batch_sizes),
                **provenance()}, str(out) + ".json")
    return {"points": len(entries), "rounds": rounds, "out": out}


def flops(*, method: Method, options: MethodOptions, spec: ModelSpec, settings: SamplingSettings,
          budget: str | None = None, checkpoint: str | None = None) -> dict:
    """Executed MACs per network call and per image (DiT's GFLOPs convention) of a method at a budget.

    Example: python -m ditpareto flops --method dit --model dit-xl-2 --image-size 256
    """
    if budget is None:
        parsed, label = method.full_budget(settings), None
    else:
        parsed, settings, label = point_budget(method, budget, settings)
    config = model_config(spec.name, spec.image_size, **spec.overrides())
    if checkpoint:
        model = method.load_model(checkpoint, spec, options)
    else:
        torch.manual_seed(0)
        # the step ladders' compute depends on shapes only: counted on the meta device (no weights in memory);
        # the dynamic methods' conversion and routing need real weights
        with torch.device("meta" if method.name in STEP_BUDGET_METHODS else "cpu"):
            base = build_model(spec.name, spec.image_size, **spec.overrides())
        model = method.convert(base, options).eval()
    plan = method.plan(model, parsed, settings, spec, options)
    macs = counted_macs(plan, config.sample_shape)
    return {"method": method.name, "budget": label or method.budget_label(parsed), "model": spec.name,
            "image_size": spec.image_size, **summarize(macs),
            "analytic_gmacs_per_call_static_dit": dit_macs_per_call(config) / 1e9, "details": plan.details}
