"""Loading and validating state dicts: every checkpoint is untrusted input."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ditpareto.errors import InputError


class CheckpointError(InputError):
    """A checkpoint file or state dict does not fit the expected model."""


def read_checkpoint(path: str | os.PathLike, allowed_globals: tuple = ()) -> dict:
    """``torch.load(..., weights_only=True)`` with errors that name the file and the problem; ``allowed_globals``:
    classes the file may hold besides tensors and containers (``torch.serialization.safe_globals``)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle of a forbidden type, not a torch file at all
        if "Weights only load failed" in str(exc):  # torch's advice (weights_only=False) would run the file's code
            raise CheckpointError(
                f"checkpoint {path} holds Python objects besides tensors and containers: refused, since loading "
                "them could run code from the file"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {(str(exc).splitlines() or ['empty'])[0]}); "
            "is it truncated or not a PyTorch file?"
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def extract_state_dict(obj: Mapping, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A bare state dict, or the ``ema`` (else ``model``) entry of a training checkpoint, as DiT's find_model does."""
    for key in ("ema", "model"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source} is not a state dict: entries {bad[:5]} are not tensors")
    return dict(obj)


def validate_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str = "checkpoint", what: str = "model"
) -> None:
    """Raise one CheckpointError naming every missing, unexpected and mis-shaped key."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    misshaped = [
        f"{k}: {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    nonfinite = [k for k, v in state.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
    problems = []
    if nonfinite:
        problems.append(f"non-finite values (NaN/Inf) in {_head(sorted(nonfinite))}")
    if missing:
        problems.append(f"missing keys {_head(missing)}")
    if extra:
        problems.append(f"unexpected keys {_head(extra)}")
    if misshaped:
        problems.append(f"mis-shaped {_head(misshaped)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {what}: " + "; ".join(problems))


def _head(items: list[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)} in all)"


def load_into(module: torch.nn.Module, path_or_state: str | os.PathLike | Mapping, what: str) -> torch.nn.Module:
    """Validate and load a checkpoint (path or state dict) into ``module``."""
    if isinstance(path_or_state, Mapping):
        source, obj = "state dict", path_or_state
    else:
        source, obj = f"checkpoint {path_or_state}", read_checkpoint(path_or_state)
    state = extract_state_dict(obj, source)
    validate_state_dict(state, module.state_dict(), source, what)
    module.load_state_dict(state)
    return module


def atomic_save(obj, path: str | os.PathLike) -> None:
    """Write to a temporary file and rename, so an interrupted write never leaves a corrupt checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
