"""Datasets as uint8 image arrays (N, H, W, C) plus labels, stored in one .npz per dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("digits",)


@dataclass
class ImageSet:
    """uint8 images (N, H, W, C) with integer labels."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def as_model_input(self) -> torch.Tensor:
        """Float tensor (N, C, H, W) in [-1, 1]."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def prepare_digits(image_size: int = 16, heldout_fraction: float = 0.3, split_seed: int = 0) -> dict[str, ImageSet]:
    """scikit-learn's digits (ships in the wheel: offline), upsampled from 8x8, stratified train/held-out split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    digits = load_digits()
    pixels = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    if image_size != 8:
        pixels = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    labels = digits.target.astype(np.int64)
    train_idx, heldout_idx = train_test_split(
        np.arange(len(labels)), test_size=heldout_fraction, random_state=split_seed, stratify=labels
    )
    return {
        "train": ImageSet(images[np.sort(train_idx)], labels[np.sort(train_idx)]),
        "heldout": ImageSet(images[np.sort(heldout_idx)], labels[np.sort(heldout_idx)]),
    }


def save_splits(splits: dict[str, ImageSet], path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, split in splits.items():
        arrays[f"{name}_images"] = split.images
        arrays[f"{name}_labels"] = split.labels
    tmp = Path(str(path) + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_split(path: str | os.PathLike, split: str) -> ImageSet:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {path} does not exist")
    with np.load(path) as data:
        if f"{split}_images" not in data:
            raise KeyError(f"dataset {path} has no split {split!r} (has {sorted(data.files)})")
        return ImageSet(data[f"{split}_images"], data[f"{split}_labels"])
