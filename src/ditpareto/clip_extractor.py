"""The FVD-toy feature extractor: a small (2+1)D CNN trained here on the labels the clip generator knows (digit,
motion direction, speed, bounce count, background), and its validation.

Each block factorises a 3-D convolution into a spatial (1, 3, 3) and a temporal (3, 1, 1) one (R(2+1)D). Motion
heads need temporal features, so the 64-d penultimate features respond to frame order, frozen frames and jitter;
time reversal keeps the distribution of bouncing clips and must not move it (``validate_clip_features``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

from ditpareto.errors import InputError
from ditpareto.glyph_clips import DIRECTION_BINS, MAX_BOUNCES, SPEED_BINS
from ditpareto.glyph_extractor import fit_heads
from ditpareto.metrics import fid_from_features
from ditpareto.models.checkpoint import atomic_save, load_into

# attribute -> number of classes (ditpareto.glyph_clips)
CLIP_HEADS = {"digit": 10, "direction_bin": DIRECTION_BINS, "speed_bin": SPEED_BINS, "bounces": MAX_BOUNCES + 1,
              "background": 3}
# Validation: each perturbation's Fréchet distance over the floor's (independent real clips), and its bound.
PERTURBATIONS = {"shuffled": (">=", 10.0), "frozen": (">=", 10.0), "jittered": (">=", 10.0), "reversed": ("<=", 2.0)}


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(),
            nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0)), nn.ReLU()]


class ClipCNN(nn.Module):
    """(2+1)D CNN for grey clips (N, 1, T, H, W) in [0, 1]; 64-d batch-normalised penultimate features, one linear
    head per clip attribute."""

    feature_dim = 64

    def __init__(self, heads: dict[str, int] | None = None):
        super().__init__()
        self.head_sizes = dict(heads or CLIP_HEADS)
        self.body = nn.Sequential(
            *_block(1, 16), nn.MaxPool3d((1, 2, 2)),
            *_block(16, 32), nn.MaxPool3d(2),
            *_block(32, 64), nn.AdaptiveAvgPool3d((4, 2, 2)),
            nn.Flatten(), nn.Linear(64 * 16, self.feature_dim, bias=False),
            nn.BatchNorm1d(self.feature_dim, affine=False), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({name: nn.Linear(self.feature_dim, n) for name, n in self.head_sizes.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.features(x)
        return {name: head(feat) for name, head in self.heads.items()}


def clip_float(clips: np.ndarray) -> torch.Tensor:
    """uint8 clips (N, T, H, W, C) -> float (N, 1, T, H, W) in [0, 1], averaging colour channels."""
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5:
        raise InputError(f"clips must be a uint8 array (N, T, H, W, C), got {getattr(clips, 'shape', None)}")
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float().mean(dim=1, keepdim=True) / 255.0


def _targets(attributes: dict[str, np.ndarray], count: int, what: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, classes in CLIP_HEADS.items():
        values = attributes.get(name)
        if values is None:
            raise InputError(f"{what} has no attribute {name!r} (a clip draw from prepare-clips has them)")
        values = torch.as_tensor(np.asarray(values), dtype=torch.long)
        if len(values) != count or values.min() < 0 or values.max() >= classes:
            raise InputError(f"{what}: attribute {name!r} needs {count} values in [0, {classes})")
        out[name] = values
    return out


def train_clip_cnn(clips: np.ndarray, attributes: dict, val_clips: np.ndarray, val_attributes: dict,
                   steps: int = 800, seed: int = 0, batch_size: int = 64, lr: float = 3e-3) -> tuple[ClipCNN, dict]:
    """The extractor (``glyph_extractor.fit_heads``: deterministic given ``seed``) and its validation accuracy per
    head."""
    targets = _targets(attributes, len(clips), "extractor clip draw")
    model = fit_heads(ClipCNN, clip_float(clips), targets, steps, seed, batch_size, lr, "clip extractor")
    return model, head_accuracies(model, val_clips, val_attributes)


@torch.no_grad()
def head_accuracies(model: ClipCNN, clips: np.ndarray, attributes: dict) -> dict[str, float]:
    targets = _targets(attributes, len(clips), "validation clip draw")
    preds = {name: [] for name in CLIP_HEADS}
    for start in range(0, len(clips), 250):
        out = model(clip_float(clips[start:start + 250]))
        for name in CLIP_HEADS:
            preds[name].append(out[name].argmax(1))
    return {f"{name}_accuracy": float((torch.cat(preds[name]) == targets[name]).float().mean()) for name in CLIP_HEADS}


@torch.no_grad()
def clip_features(model: ClipCNN, clips: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """(N, 64) float64 penultimate features of uint8 clips (N, T, H, W, C)."""
    model.eval()
    parts = [model.features(clip_float(clips[s:s + batch_size])).double().numpy()
             for s in range(0, len(clips), batch_size)]
    return np.concatenate(parts)


def perturb(clips: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """The validation's perturbations of real clips: frames in random order (``shuffled``), the first frame held
    (``frozen``), every frame shifted by an independent -1/0/+1 pixel in x and y, edge-padded (``jittered``), or
    played backwards (``reversed``)."""
    rng = np.random.default_rng(seed)
    n, t = clips.shape[:2]
    if kind == "shuffled":
        order = np.argsort(rng.random((n, t)), axis=1)
        return np.take_along_axis(clips, order[:, :, None, None, None], axis=1)
    if kind == "frozen":
        return np.repeat(clips[:, :1], t, axis=1)
    if kind == "reversed":
        return clips[:, ::-1].copy()
    if kind == "jittered":
        padded = np.pad(clips, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        h, w = clips.shape[2:4]
        dy, dx = rng.integers(0, 3, size=(2, n, t))
        out = np.empty_like(clips)
        for i in range(n):
            for f in range(t):
                out[i, f] = padded[i, f, dy[i, f]:dy[i, f] + h, dx[i, f]:dx[i, f] + w]
        return out
    raise InputError(f"unknown perturbation {kind!r}; choose one of {sorted(PERTURBATIONS)}")


def validate_clip_features(model: ClipCNN, reference: np.ndarray, floor: np.ndarray, seed: int = 0) -> list[dict]:
    """One row per perturbation of the floor clips: its FVD-toy against the reference, over the floor's own (an
    independent real draw), and whether it meets its bound (``PERTURBATIONS``)."""
    ref = clip_features(model, reference)
    base = fid_from_features(clip_features(model, floor), ref)
    rows = [{"perturbation": "none (floor)", "fvd_toy": base, "ratio_to_floor": 1.0, "bound": "", "passed": True}]
    for kind, (op, bound) in PERTURBATIONS.items():
        value = fid_from_features(clip_features(model, perturb(floor, kind, seed)), ref)
        ratio = value / base
        rows.append({"perturbation": kind, "fvd_toy": value, "ratio_to_floor": ratio, "bound": f"{op} {bound:g}x",
                     "passed": bool(ratio >= bound if op == ">=" else ratio <= bound)})
    return rows


def save_clip_cnn(model: ClipCNN, path: str | os.PathLike) -> None:
    atomic_save(model.state_dict(), path)


def load_clip_cnn(path: str | os.PathLike) -> ClipCNN:
    """Load and validate (weights_only; keys and shapes) an extractor saved by :func:`save_clip_cnn`."""
    return load_into(ClipCNN(), path, what="clip feature extractor").eval().requires_grad_(False)
