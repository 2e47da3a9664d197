"""Training loop shared by pretraining and the methods' fine-tunes: AdamW, EMA, loss CSV, resumable state.

Under torchrun (WORLD_SIZE > 1) the same loop trains data-parallel: see ``run_training``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.errors import InputError, TrainingDiverged
from ditpareto.models.checkpoint import atomic_save, read_checkpoint
from ditpareto.runtime import describe, precision_scope, resolve_device
from ditpareto.study import TrainConfig

log = logging.getLogger(__name__)


# Settings that change neither the weights nor the trajectory: a resume may differ in these. More steps than the
# saved run also resume under a constant learning rate (N steps then M - N more equal M steps); a decaying schedule
# depends on the total, so there the step count must match.
_RESUME_FREE = ("steps", "checkpoint_every", "log_every", "snapshot_every", "device")


def _resume_identity(config: dict) -> dict:
    free = _RESUME_FREE if config.get("schedule", "constant") == "constant" else _RESUME_FREE[1:]
    return {k: v for k, v in config.items() if k not in free}


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) in a plain process."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True in a plain process and on torchrun's rank 0: the one process that writes outputs."""
    return distributed_env()[0] == 0


STATE_KEYS = ("model", "ema", "opt", "rng", "step", "config")


def _saved_state(state_path: Path, config: TrainConfig) -> tuple[dict | None, bool]:
    """(state, stale): the saved state at ``state_path`` (None when there is none) and whether it belongs to another
    run (other settings or run_id, another number of processes, or more steps than ``config.steps``). A state that
    cannot be read or lacks a field is set aside as ``<state>.damaged`` (never deleted) and the run starts over."""
    if not state_path.exists():
        return None, False
    try:
        state = read_checkpoint(state_path)
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise InputError(f"training state {state_path} lacks {missing}")
        int(state["step"])
    except (InputError, TypeError, ValueError) as exc:
        kept = state_path.with_name(state_path.name + ".damaged")
        try:
            os.replace(state_path, kept)
            log.warning("%s; kept as %s, starting from step 0", str(exc).splitlines()[0], kept)
        except OSError:  # another rank moved it first
            pass
        return None, False
    same = _resume_identity(state.get("config", {})) == _resume_identity(asdict(config))
    same = same and int(state.get("world_size", 1)) == distributed_env()[1]  # each rank resumes its own RNG
    return state, not same or int(state["step"]) > config.steps


def discard_state(state_path: str | os.PathLike) -> None:
    """Retire a finished run's state once its outputs are written (kept as ``<state>.done``, its running curve
    removed, the states earlier attempts set aside deleted): a rerun (forced, or after a code change) trains again
    instead of "resuming" at the last step and writing the old weights."""
    path = Path(state_path)
    if path.exists():
        os.replace(path, path.with_name(path.name + ".done"))
    path.with_name(path.stem + ".loss.csv").unlink(missing_ok=True)
    # states set aside by earlier attempts are past their use once a run completes (each ~11 GB at DiT-XL/2)
    for suffix in (".stale", ".damaged"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def code_version() -> str:
    """sha256 of the package's Python sources: part of a training run's identity (a state never resumes under
    other code)."""
    import hashlib

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def snapshot_path(state_path: str | os.PathLike, step: int) -> Path:
    """Where ``snapshot_every`` keeps the EMA weights of ``step``: <state dir>/snapshots/ema-step<step>.pt."""
    return Path(state_path).parent / "snapshots" / f"ema-step{step:07d}.pt"


def resume_step(state_path: str | os.PathLike, config: TrainConfig) -> int | None:
    """The step a run with ``config`` resumes from at ``state_path``: 0 when there is no state, None when the state
    belongs to another run."""
    state, stale = _saved_state(Path(state_path), config)
    return None if stale else int(state["step"]) if state else 0


# loss_fn(model, x0, y, diffusion) -> dict with a scalar "loss" and optional extra scalars to log.
LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, GaussianDiffusion], dict]


def diffusion_loss(model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, diffusion: GaussianDiffusion) -> dict:
    """DiT's objective at a uniformly drawn timestep."""
    t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],))
    terms = diffusion.training_losses(model, x0, t, {"y": y}, torch.randn_like(x0))
    out = {"loss": terms["loss"].mean(), "mse": terms["mse"].mean().detach()}
    if "vb" in terms:
        out["vb"] = terms["vb"].mean().detach()
    return out


class Preempted(SystemExit):
    """Raised after SIGTERM (what SLURM sends before a time limit) once the state is saved: rerun to resume."""

    def __init__(self, step: int):
        super().__init__(128 + signal.SIGTERM)
        self.step = step


@contextlib.contextmanager
def _sigterm_flag():
    """A dict whose "set" turns True on SIGTERM, while the block runs (main thread only; else never set)."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["set"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _truncate_log(log_csv: Path, step: int) -> None:
    if not log_csv.exists():
        return
    with open(log_csv, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if int(r[0]) <= step]
    if len(kept) < len(rows):
        with open(log_csv, "w", newline="") as f:
            csv.writer(f).writerows(kept)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_params = dict(ema.named_parameters())
    for name, param in model.named_parameters():
        if param.requires_grad:
            ema_params[name].mul_(decay).add_(param.detach(), alpha=1 - decay)


def _restore_problem(state: dict, model: torch.nn.Module, optimizer, world: int) -> str | None:
    """Why a saved state cannot be restored into ``model`` and ``optimizer`` (None when it can), checked before any
    of it is applied: a negative step, weights that do not fit the model, optimizer groups that do not match, RNG
    states that are not byte tensors for each rank."""
    from ditpareto.models.checkpoint import CheckpointError, validate_state_dict

    if int(state["step"]) < 0:
        return f"step {int(state['step'])} is negative"
    expected = model.state_dict()
    for key in ("model", "ema"):
        try:
            validate_state_dict(state[key], expected, f"its {key} weights")
        except (CheckpointError, AttributeError, TypeError) as exc:
            return str(exc)
    saved = state["opt"]
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or [len(g.get("params", [])) for g in groups] != \
            [len(g["params"]) for g in optimizer.param_groups] or not isinstance(saved.get("state"), dict):
        return "its optimizer groups do not match this run's"
    rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
    for rng in rngs:
        rng = {"cpu": rng} if torch.is_tensor(rng) else rng
        if not isinstance(rng, dict) or not all(torch.is_tensor(v) and v.dtype == torch.uint8 for v in rng.values()) \
                or "cpu" not in rng or rng["cpu"].numel() != torch.get_rng_state().numel():
            return "its RNG states are not those of a generator"
    if isinstance(state["rng"], list) and len(state["rng"]) != world:
        return f"it holds RNG states for {len(state['rng'])} processes, this run has {world}"
    return None


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state, device: torch.device) -> None:
    if torch.is_tensor(state):  # a state written before per-rank RNG states
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class LossModule(torch.nn.Module):
    """A training step's loss as one module: ``DistributedDataParallel`` wraps this, so its hooks see every forward
    that a method's loss runs on the model (model-specific forwards such as ``forward_masked`` or ``patch_size=``,
    complete-model passes), not only ``model.forward``. Parameters a step leaves unused on every rank keep no
    gradient (AdamW skips them, as in one process); used on some ranks only, they average with zeros."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, diffusion: GaussianDiffusion):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.diffusion = diffusion

    def forward(self, x0: torch.Tensor, y: torch.Tensor) -> dict:
        return self.loss_fn(self.model, x0, y, self.diffusion)


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (SIGTERM on one rank stops every rank at the same step)."""
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def run_training(
    model: torch.nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    state_path: str | os.PathLike,
    log_csv: str | os.PathLike,
    loss_fn: LossFn = diffusion_loss,
    diffusion: GaussianDiffusion | None = None,
    trainable: list[torch.nn.Parameter] | None = None,
) -> torch.nn.Module:
    """Train ``model`` on (x0, labels) and return its EMA copy (on the CPU).

    Resumes from ``state_path`` when it exists (model, EMA, optimizer, RNG, step), checkpoints atomically every
    ``checkpoint_every`` steps, appends one CSV row per ``log_every`` steps to a running curve beside the state
    (``<state>.loss.csv``, which survives a killed job as the state does) and copies it to ``log_csv`` at the end.
    On SIGTERM it finishes the current step, saves the state and raises ``Preempted`` (exit status 143); a rerun
    resumes with identical results.

    Under torchrun (WORLD_SIZE > 1) it trains data-parallel: each rank draws ``batch_size / world`` samples with
    its own RNG (seed + rank), DistributedDataParallel (around ``LossModule``) averages the gradients in backward()
    with overlapped bucketed all-reduces, rank 0 writes the state (with
    every rank's RNG) and the CSV. Runs on ``config.device`` (``cuda:LOCAL_RANK`` for a GPU, NCCL; the CPU with gloo)
    in ``config.precision`` (the loss under ``precision_scope``; weights, gradients and AdamW in float32).
    """
    rank, world, local_rank = distributed_env()
    if config.batch_size % world:
        raise InputError(f"batch size {config.batch_size} is not divisible by the {world} processes")
    device = resolve_device(config.device)
    if device.type == "cuda":
        device = torch.device(f"cuda:{local_rank}")
    if rank == 0:
        log.info("training on %s in %s", describe(device), config.precision)
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        ema = _train(model, x0, labels, config, Path(state_path), Path(log_csv), loss_fn,
                     diffusion or GaussianDiffusion.base(), trainable, rank, world, device)
    finally:
        if own_group:
            dist.destroy_process_group()
    model.to("cpu")
    return ema.to("cpu")


def _train(model, x0, labels, config, state_path, final_csv, loss_fn, diffusion, trainable, rank, world, device):
    # Snakemake deletes the outputs of a failed job: the curve is kept beside the state until the run completes.
    log_csv = state_path.with_name(state_path.stem + ".loss.csv")
    main = rank == 0
    torch.manual_seed(config.seed + rank)  # rank 0 draws exactly what a single process draws
    model.to(device)
    params = trainable if trainable is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    for group in optimizer.param_groups:  # the schedule scales each group's own peak
        group["peak_lr"] = group["lr"]
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    state, stale = _saved_state(state_path, config)
    problem = None if state is None or stale else _restore_problem(state, model, optimizer, world)
    if problem:
        if main:
            kept = state_path.with_name(state_path.name + ".damaged")
            os.replace(state_path, kept)
            log.warning("training state %s cannot be restored (%s): kept as %s, starting from step 0", state_path,
                        problem, kept)
        state = None
    start = 0
    if stale:
        if main:
            kept = state_path.with_name(state_path.name + ".stale")
            os.replace(state_path, kept)
            log.warning("%s belongs to a run with other settings: kept as %s, starting from step 0", state_path, kept)
    elif state is not None:
        start = int(state["step"])
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["opt"])
        rngs = state["rng"]
        _set_rng_state(rngs[rank] if isinstance(rngs, list) else rngs, device)
        if main:
            log.info("resumed from %s at step %d", state_path, start)
    step_loss = LossModule(model, loss_fn, diffusion)
    if world > 1:
        starts = [None] * world
        dist.all_gather_object(starts, start)
        if len(set(starts)) > 1:
            raise RuntimeError(f"ranks read different states from {state_path}: steps {starts}")
        # replicas start from rank 0's weights; gradients are averaged over the ranks in backward()
        step_loss = DistributedDataParallel(step_loss, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=True, broadcast_buffers=False)
    if main:
        if start:
            _truncate_log(log_csv, start)  # rows written after the last checkpoint are written again
        elif log_csv.exists():
            log_csv.unlink()  # a fresh run starts a fresh loss curve

    def save_state(step: int) -> None:
        rngs = [_rng_state(device)]
        if world > 1:
            rngs = [None] * world
            dist.all_gather_object(rngs, _rng_state(device))
        if main:
            atomic_save(
                {"model": model.state_dict(), "ema": ema.state_dict(), "opt": optimizer.state_dict(), "rng": rngs,
                 "world_size": world, "step": step, "config": asdict(config)},
                state_path,
            )
        if world > 1:
            dist.barrier()  # no rank exits before the state is on disk

    model.train()
    n, batch_size = x0.shape[0], config.batch_size // world
    writer_file = writer = None
    if main:
        log_csv.parent.mkdir(parents=True, exist_ok=True)
        writer_file = open(log_csv, "a", newline="")
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if writer_file is not None:
            stack.callback(writer_file.close)
        sigterm = stack.enter_context(_sigterm_flag())
        for step in tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train", mininterval=5,
                         disable=not main):
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * config.lr_factor(step)
            idx = torch.randint(0, n, (batch_size,))
            optimizer.zero_grad(set_to_none=True)
            with precision_scope(config.precision, device):
                terms = step_loss(x0[idx].to(device), labels[idx].to(device))
            diverged = not bool(torch.isfinite(terms["loss"].detach()))
            if _any_rank(diverged, device) if world > 1 else diverged:
                raise TrainingDiverged(
                    f"the training loss is not finite at step {step + 1} of {config.steps} (lr "
                    f"{optimizer.param_groups[0]['lr']:.3g}): stopped before the step; the last saved state "
                    f"({state_path}) holds the weights before it (a lower lr, or another precision, may help)")
            terms["loss"].backward()
            stop = _any_rank(sigterm["set"], device) if world > 1 else sigterm["set"]
            optimizer.step()
            update_ema(ema, model, config.ema_decay)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                if world > 1:  # the logged terms are means over the ranks, as DiT logs its loss
                    values = torch.stack([torch.as_tensor(v).detach().float().reshape(()).to(device)
                                          for v in terms.values()])
                    dist.all_reduce(values)
                    logged = dict(zip(terms, (values / world).tolist()))
                else:
                    logged = {k: float(v.detach()) for k, v in terms.items()}
                row = {"step": done, **logged, "lr": optimizer.param_groups[0]["lr"],
                       "steps_per_s": (done - start) / (time.perf_counter() - t0)}
                if main:
                    if writer is None:
                        writer = csv.DictWriter(writer_file, fieldnames=list(row))
                        if writer_file.tell() == 0:
                            writer.writeheader()
                    writer.writerow(row)
                    writer_file.flush()
                    log.info("(step=%07d) loss %.4f, %.2f steps/s", done, row["loss"], row["steps_per_s"])
            if stop and done < config.steps:
                save_state(done)
                if main:
                    log.warning("SIGTERM: state saved at step %d in %s; rerun to resume", done, state_path)
                raise Preempted(done)
            if done % config.checkpoint_every == 0 and done < config.steps:
                save_state(done)
            if main and config.snapshot_every and done % config.snapshot_every == 0:
                atomic_save(ema.state_dict(), snapshot_path(state_path, done))
    save_state(config.steps)
    if main:
        final_csv.parent.mkdir(parents=True, exist_ok=True)
        tmp = final_csv.with_name(final_csv.name + ".tmp")
        shutil.copyfile(log_csv, tmp)
        os.replace(tmp, final_csv)
    return ema
