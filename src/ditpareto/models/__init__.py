"""Model registry and loading."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ditpareto.models.checkpoint import CheckpointError, load_into
from ditpareto.archs import DIT_ARCHS, LATTE_ARCHS, DiTConfig, LatteConfig, dit_config, model_config
from ditpareto.models.dit import DiT

__all__ = ["DIT_ARCHS", "CheckpointError", "DiT", "DiTConfig", "build_dit", "build_model", "dit_config", "load_dit",
           "load_model", "model_config"]


def build_dit(name: str, image_size: int = 256, **overrides) -> DiT:
    """A freshly initialised registered DiT (``overrides``: in_channels, num_classes, learn_sigma, ...)."""
    return DiT(dit_config(name, image_size, **overrides))


def load_dit(path_or_state_dict: str | os.PathLike | Mapping, name: str, image_size: int = 256, **overrides) -> DiT:
    """Build ``name`` at ``image_size`` and load weights in the official DiT layout, checking keys and shapes."""
    model = build_dit(name, image_size, **overrides)
    return load_into(model, path_or_state_dict, what=f"{name} at image size {image_size}")


def build_model(name: str, image_size: int = 256, **overrides):
    """A freshly initialised registered model: a DiT, or a Latte model for a video arch."""
    config = model_config(name, image_size, **overrides)
    if isinstance(config, LatteConfig):
        from ditpareto.models.latte import Latte

        return Latte(config)
    return DiT(config)


def load_model(path_or_state_dict: str | os.PathLike | Mapping, name: str, image_size: int = 256, **overrides):
    """Build ``name`` (DiT or Latte) at ``image_size`` and load its weights (official layout), checking keys and
    shapes."""
    model = build_model(name, image_size, **overrides)
    return load_into(model, path_or_state_dict, what=f"{name} at image size {image_size}")
