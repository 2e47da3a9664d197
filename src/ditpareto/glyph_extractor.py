"""The FID feature extractor of the glyphs study: a small CNN trained here with one head per sample attribute.

Heads: digit, font family, weight/slant, rotation bin and background texture. Telling fonts and styles apart needs
stroke detail (serifs, weight, terminals), as Inception's classes need texture, so the 64-d penultimate features
respond to blur, resampling, noise and shifts that a digit-only classifier ignores (``ditpareto.calibration``
measures that). No shift augmentation: a shift must change the features.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ditpareto.data import ImageSet
from ditpareto.errors import InputError
from ditpareto.models.checkpoint import atomic_save, load_into

# attribute -> number of classes (ditpareto.glyphs: 7 families, 4 styles, 5 rotation bins, 3 backgrounds)
HEADS = {"digit": 10, "family": 7, "style": 4, "rotation_bin": 5, "background": 3}


class GlyphCNN(nn.Module):
    """CNN for grey (N, 1, H, W) images in [0, 1]; 64-d batch-normalised penultimate features, one linear head per
    attribute. The digit head's logits serve the Inception Score."""

    feature_dim = 64

    def __init__(self, heads: dict[str, int] | None = None):
        super().__init__()
        self.head_sizes = dict(heads or HEADS)
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(128 * 16, self.feature_dim, bias=False),
            nn.BatchNorm1d(self.feature_dim, affine=False), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({name: nn.Linear(self.feature_dim, n) for name, n in self.head_sizes.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.heads["digit"](features)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.features(x)
        return {name: head(feat) for name, head in self.heads.items()}


def grey_float(images: np.ndarray | torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 images -> float (N, 1, H, W) in [0, 1], averaging colour channels."""
    x = torch.as_tensor(images)
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    return x.float().mean(dim=1, keepdim=True) / 255.0


def _targets(data: ImageSet, attributes: dict[str, np.ndarray], what: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, classes in HEADS.items():
        values = data.labels if name == "digit" else attributes.get(name)
        if values is None:
            raise InputError(f"{what} has no attribute {name!r} (a glyphs draw from prepare-data has them)")
        values = torch.as_tensor(np.asarray(values), dtype=torch.long)
        if len(values) != len(data.labels) or values.min() < 0 or values.max() >= classes:
            raise InputError(f"{what}: attribute {name!r} needs {len(data.labels)} values in [0, {classes})")
        out[name] = values
    return out


@torch.no_grad()
def head_accuracies(model: GlyphCNN, data: ImageSet, attributes: dict[str, np.ndarray]) -> dict[str, float]:
    model.eval()
    targets = _targets(data, attributes, "validation draw")
    x = grey_float(data.images)
    preds = {name: [] for name in HEADS}
    for start in range(0, len(x), 1000):
        out = model(x[start:start + 1000])
        for name in HEADS:
            preds[name].append(out[name].argmax(1))
    return {f"{name}_accuracy": float((torch.cat(preds[name]) == targets[name]).float().mean()) for name in HEADS}


def train_glyph_cnn(train: ImageSet, train_attributes: dict, val: ImageSet, val_attributes: dict, steps: int = 1500,
                    seed: int = 0, batch_size: int = 256, lr: float = 3e-3) -> tuple[GlyphCNN, dict]:
    """Adam, cosine learning rate, the sum of the heads' cross-entropies (``fit_heads``)."""
    targets = _targets(train, train_attributes, "extractor draw")
    model = fit_heads(GlyphCNN, grey_float(train.images), targets, steps, seed, batch_size, lr, "glyph extractor")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stats = head_accuracies(model, val, val_attributes)
    finally:
        torch.set_num_threads(threads)
    return model, stats


def fit_heads(make_model, x: torch.Tensor, targets: dict[str, torch.Tensor], steps: int, seed: int,
              batch_size: int, lr: float, desc: str) -> nn.Module:
    """Train ``make_model()`` (a module returning one logit tensor per head) with Adam, a cosine learning rate and
    the sum of the heads' cross-entropies; deterministic given ``seed`` (one thread, a forked RNG: the weights do
    not depend on the machine's thread count, and the caller's RNG is untouched). Returned in eval mode, frozen."""
    if steps < 1 or batch_size < 1:
        raise InputError(f"extractor training needs steps >= 1 and batch_size >= 1, got {steps}, {batch_size}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = make_model()
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        order, cursor = torch.randperm(len(x), generator=generator), 0
        for step in tqdm(range(steps), desc=desc, mininterval=5):
            if cursor + batch_size > len(x):
                order, cursor = torch.randperm(len(x), generator=generator), 0
            idx = order[cursor:cursor + batch_size]
            cursor += batch_size
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            model.train()
            out = model(x[idx])
            loss = sum(F.cross_entropy(out[name], targets[name][idx]) for name in targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return model.eval().requires_grad_(False)
    finally:
        torch.set_num_threads(threads)


def save_glyph_cnn(model: GlyphCNN, path: str | os.PathLike) -> None:
    atomic_save(model.state_dict(), path)


def load_glyph_cnn(path: str | os.PathLike) -> GlyphCNN:
    """Load and validate (weights_only; keys and shapes) an extractor saved by :func:`save_glyph_cnn`."""
    return load_into(GlyphCNN(), path, what="glyph feature extractor").eval().requires_grad_(False)
