"""Shared fixtures: repository paths, an environment whose PATH has the venv, tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import ditpareto.compat  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def venv_env() -> dict:
    """Environment for subprocesses: the running interpreter's bin dir first on PATH (as an activated venv)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Random values for every trainable parameter (DiT's init zeroes adaLN and the output layer)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture
def tiny_spec():
    from ditpareto.methods import ModelSpec

    return ModelSpec("dit-micro-2", 16, in_channels=1, num_classes=10)


@pytest.fixture
def tiny_model(tiny_spec):
    from ditpareto.models import build_dit

    torch.manual_seed(0)
    return randomize_(build_dit(tiny_spec.name, tiny_spec.image_size, **tiny_spec.overrides())).eval()
