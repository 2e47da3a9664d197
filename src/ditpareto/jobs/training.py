"""Training jobs: pretraining the base, converting it to a method's model, the equal-compute fine-tune.

One pure function per job: typed inputs, files in, files out, a small summary dict back; the CLI
(``ditpareto.commands``) only parses flags into these arguments."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import torch

from ditpareto.data import load_draw
from ditpareto.errors import InputError
from ditpareto.flops import steps_for_train_macs
from ditpareto.methods import Method
from ditpareto.models import build_dit, load_model
from ditpareto.models.checkpoint import atomic_save
from ditpareto.results import provenance, sha256_of, write_json
from ditpareto.runtime import resolve_device
from ditpareto.study import FinetuneRecipe, ModelSpec, TrainConfig
from ditpareto.train import code_version, discard_state, is_main_process, run_training
from ditpareto.spec import MethodOptions


def run_id(**identity) -> str:
    """What is trained (plus the code version) as the id a saved state must match to be resumed."""
    identity = {**identity, "code": code_version()}  # a state never resumes under other code
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_set(data: str):
    """A training draw: images or latents (``prepare-data``), or clips (``prepare-clips``: its .mp4 beside it)."""
    from ditpareto.clipsets import is_clip_draw, load_clip_draw, video_path

    if is_clip_draw(data):
        return load_clip_draw(data, video_path(data))[0]
    return load_draw(data)


def pretrain(*, spec: ModelSpec, train: TrainConfig, data: str, state: str, log_csv: str, out: str,
             class_dropout: float = 0.1) -> dict:
    """Train a class-conditional DiT from scratch; its EMA weights in the official DiT layout.

    Example: python -m ditpareto pretrain --model dit-toy-2 --image-size 16 --in-channels 1 --num-classes 10
    --data train.npz --steps 20000 --warmup-steps 500 --schedule cosine --state s.pt --log-csv loss.csv --out base.pt
    """
    dataset = load_draw(data)
    torch.manual_seed(train.seed)  # the initialisation is part of the run: same seed, same weights
    model = build_dit(spec.name, spec.image_size, class_dropout_prob=class_dropout, **spec.overrides())
    train = dataclasses.replace(train, run_id=run_id(data=sha256_of(data), model=spec.name,
                                                     image_size=spec.image_size, class_dropout=class_dropout,
                                                     overrides=spec.overrides()))
    ema = run_training(model, dataset.as_model_input(), torch.from_numpy(dataset.labels), train, state, log_csv)
    if is_main_process():  # under torchrun every rank holds the same weights: rank 0 writes them
        atomic_save(ema.state_dict(), out)
        discard_state(state)
    return {"out": out, "steps": train.steps}


def convert(*, method: Method, options: MethodOptions, spec: ModelSpec, base: str, out: str) -> dict:
    """A pretrained DiT converted into a method's model (its initialisation).

    Example: python -m ditpareto convert --method flexidit --base base.pt --model dit-toy-2 --image-size 16
    --in-channels 1 --num-classes 10 --out converted.pt
    """
    model = load_model(base, spec.name, spec.image_size, **spec.overrides())
    torch.manual_seed(0)  # any randomly initialised new parameters are reproducible
    atomic_save(method.state_to_save(method.convert(model, options)), out)
    return {"method": method.name, "out": out, "options": options.to_dict()}


def finetune(*, method: Method, options: MethodOptions, spec: ModelSpec, recipe: FinetuneRecipe, checkpoint: str,
             data: str, state: str, log_csv: str, out: str, budget: str | None = None, device: str = "auto") -> dict:
    """Fine-tune a converted model with the shared recipe: the step count follows from the training-MAC budget
    (every term of the method's loss counted); a training record <out>.json beside the weights. Resumable.

    Trains on ``device`` in ``recipe.precision`` (``run_training``); the MACs are counted on the CPU.

    Example: python -m ditpareto finetune --method dydit --budget 0.50 --checkpoint converted.pt --data train.npz
    --model dit-toy-2 --image-size 16 --in-channels 1 --num-classes 10 --train-gmacs 21000 --state s.pt
    --log-csv loss.csv --out finetuned.pt
    """
    parsed = method.parse_budget(budget) if budget is not None else None
    target = resolve_device(device)  # before any work: a GPU asked for and missing stops here
    model = method.load_model(checkpoint, spec, options)  # the method decides what trains
    dataset = training_set(data)
    if recipe.batch_size > len(dataset.labels):
        raise InputError(f"--batch-size {recipe.batch_size} exceeds the {len(dataset.labels)} training images")
    x0 = dataset.as_model_input()[: recipe.batch_size]
    labels = torch.from_numpy(dataset.labels[: recipe.batch_size])
    macs_at = method.train_step_macs(model, x0, labels, options, parsed)
    if recipe.train_gmacs is not None:
        if not recipe.train_gmacs > 0:
            raise InputError(f"--train-gmacs must be > 0, got {recipe.train_gmacs}")
        steps, train_macs = steps_for_train_macs(macs_at, recipe.train_gmacs * 1e9)
    else:
        steps, train_macs = recipe.steps, float(sum(macs_at(i) for i in range(recipe.steps)))
    train = method.training_run(recipe.train_config(steps, run_id(
        method=method.name, options=options.to_dict(), budget=budget, spec=spec, checkpoint=sha256_of(checkpoint),
        data=sha256_of(data)), str(target)), options)
    start = time.perf_counter()
    ema = method.finetune(model, dataset, options, parsed, train, state, log_csv)
    if is_main_process():  # under torchrun every rank holds the same weights: rank 0 writes them
        atomic_save(method.state_to_save(ema), out)
        record = {
            "method": method.name, "budget": budget, "options": options.to_dict(),
            "train_gmacs": train_macs / 1e9, "train_gmacs_budget": recipe.train_gmacs,
            "gmacs_per_step_first": macs_at(0) / 1e9, "optimizer_steps": train.steps,
            "samples_seen": train.steps * train.batch_size, "batch_size": train.batch_size, "lr": train.lr,
            "schedule": train.schedule, "warmup_steps": train.warmup_steps, "min_lr_ratio": train.min_lr_ratio,
            "ema_decay": train.ema_decay, "seed": train.seed, "run_id": train.run_id, "precision": train.precision,
            "device": str(target), "device_requested": device,
            "wall_seconds_this_run": time.perf_counter() - start, "checkpoint_in": sha256_of(checkpoint),
            "data": sha256_of(data), "sha256": sha256_of(out), **provenance(),
        }
        write_json(record, str(out) + ".json")
        discard_state(state)
    return {"method": method.name, "budget": budget, "steps": train.steps, "train_gmacs": train_macs / 1e9,
            "out": out}
