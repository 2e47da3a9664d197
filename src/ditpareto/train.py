"""Training loop shared by pretraining and the methods' fine-tunes: AdamW, EMA, loss CSV, resumable state."""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.models.checkpoint import atomic_save, read_checkpoint

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings of one training run."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    # What is trained (method, options, budget, input checkpoint...): a saved state resumes only a run with the
    # same run_id and settings, so a changed config never continues a stale run.
    run_id: str = ""

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.ema_decay < 1:
            raise ValueError(f"invalid training settings: {self}")


# Settings that change neither the weights nor the trajectory: a resume may differ in these. More steps than the
# saved run also resume (constant learning rate: N steps then M - N more equal M steps).
_RESUME_FREE = ("steps", "checkpoint_every", "log_every")


def _resume_identity(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _RESUME_FREE}


def _saved_state(state_path: Path, config: TrainConfig) -> tuple[dict | None, bool]:
    """(state, stale): the saved state at ``state_path`` (None when there is none) and whether it belongs to another
    run (other settings or run_id, or more steps than ``config.steps``)."""
    if not state_path.exists():
        return None, False
    state = read_checkpoint(state_path)
    same = _resume_identity(state.get("config", {})) == _resume_identity(asdict(config))
    return state, not same or int(state["step"]) > config.steps


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
    """Train ``model`` on (x0, labels) and return its EMA copy.

    Resumes from ``state_path`` when it exists (model, EMA, optimizer, RNG, step), checkpoints atomically every
    ``checkpoint_every`` steps, appends one CSV row per ``log_every`` steps. On SIGTERM it finishes the current
    step, saves the state and raises ``Preempted`` (exit status 143); a rerun resumes with identical results.
    """
    diffusion = diffusion or GaussianDiffusion.base()
    torch.manual_seed(config.seed)
    params = trainable if trainable is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    state_path, log_csv = Path(state_path), Path(log_csv)
    state, stale = _saved_state(state_path, config)
    start = 0
    if stale:
        kept = state_path.with_name(state_path.name + ".stale")
        os.replace(state_path, kept)
        log.warning("%s belongs to a run with other settings: kept as %s, starting from step 0", state_path, kept)
    elif state is not None:
        start = int(state["step"])
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", state_path, start)
    if start:
        _truncate_log(log_csv, start)  # rows written after the last checkpoint are written again
    elif log_csv.exists():
        log_csv.unlink()  # a fresh run starts a fresh loss curve

    def save_state(step: int) -> None:
        atomic_save(
            {"model": model.state_dict(), "ema": ema.state_dict(), "opt": optimizer.state_dict(),
             "rng": torch.get_rng_state(), "step": step, "config": asdict(config)},
            state_path,
        )

    log_csv.parent.mkdir(parents=True, exist_ok=True)
    model.train()
    n = x0.shape[0]
    writer_file = open(log_csv, "a", newline="")
    writer = None
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.callback(writer_file.close)
        sigterm = stack.enter_context(_sigterm_flag())
        for step in tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train", mininterval=5):
            idx = torch.randint(0, n, (config.batch_size,))
            terms = loss_fn(model, x0[idx], labels[idx], diffusion)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            update_ema(ema, model, config.ema_decay)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                row = {"step": done, **{k: float(v.detach()) for k, v in terms.items()},
                       "steps_per_s": (done - start) / (time.perf_counter() - t0)}
                if writer is None:
                    writer = csv.DictWriter(writer_file, fieldnames=list(row))
                    if writer_file.tell() == 0:
                        writer.writeheader()
                writer.writerow(row)
                writer_file.flush()
                log.info("(step=%07d) loss %.4f, %.2f steps/s", done, row["loss"], row["steps_per_s"])
            if sigterm["set"] and done < config.steps:
                save_state(done)
                log.warning("SIGTERM: state saved at step %d in %s; rerun to resume", done, state_path)
                raise Preempted(done)
            if done % config.checkpoint_every == 0 and done < config.steps:
                save_state(done)
    save_state(config.steps)
    return ema
