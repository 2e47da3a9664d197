"""Datasets stored in one .npz each: uint8 image arrays (N, H, W, C) or SD-VAE latents (N, C, h, w), plus labels.

``digits`` (scikit-learn, pixels) is the embedded default; ``imagefolder`` (ImageNet's train folder layout: one
sub-folder per class) is the paper setting: ADM centre-crop preprocessing, then SD-VAE latents (``ditpareto.latents``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("digits", "imagefolder")


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


@dataclass
class LatentSet:
    """Scaled SD-VAE latents (N, C, h, w) float32 with integer labels: a training set in the model's input space."""

    latents: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.latents.dtype != np.float32 or self.latents.ndim != 4:
            raise ValueError(f"latents must be float32 (N, C, h, w), got {self.latents.dtype} {self.latents.shape}")
        if len(self.latents) != len(self.labels):
            raise ValueError(f"{len(self.latents)} latents but {len(self.labels)} labels")

    def as_model_input(self) -> torch.Tensor:
        return torch.from_numpy(self.latents)


def center_crop_arr(image, image_size: int) -> np.ndarray:
    """ADM's preprocessing (guided-diffusion, used by DiT): halve with a box filter while the short side is at least
    twice ``image_size``, resize the short side to ``image_size`` (bicubic), then crop the centre square."""
    from PIL import Image

    while min(*image.size) >= 2 * image_size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = image_size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image.convert("RGB"))
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def image_folder(root: str | os.PathLike, image_size: int, max_per_class: int | None = None):
    """torchvision's ImageFolder over ``root`` (class sub-folders, sorted: ImageNet's label order) yielding
    ADM-cropped uint8 (H, W, 3) arrays; ``max_per_class`` keeps the first N files of each class (sorted)."""
    import ditpareto.compat  # noqa: F401  (before torchvision)
    from torchvision.datasets import ImageFolder

    from ditpareto.errors import InputError

    if not Path(root).is_dir():
        raise InputError(f"image folder {root} does not exist (config key dataset.path)")
    try:
        folder = ImageFolder(str(root), transform=lambda image: center_crop_arr(image, image_size))
    except (FileNotFoundError, RuntimeError) as exc:
        raise InputError(f"image folder {root}: {exc}") from None
    if max_per_class is not None:
        kept, counts = [], {}
        for path, label in folder.samples:
            if counts.get(label, 0) < max_per_class:
                kept.append((path, label))
                counts[label] = counts.get(label, 0) + 1
        folder.samples = folder.imgs = kept
        folder.targets = [label for _, label in kept]
    return folder


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


def save_latents(latents: LatentSet, path: str | os.PathLike, **metadata) -> None:
    """The train split as latents (``train_latents``, ``train_labels``) plus metadata arrays, written atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp.npz")
    np.savez(tmp, train_latents=latents.latents, train_labels=latents.labels, **metadata)
    os.replace(tmp, path)


def load_split(path: str | os.PathLike, split: str) -> ImageSet | LatentSet:
    """A split of a prepared dataset: images (``{split}_images``) or latents (``{split}_latents``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {path} does not exist")
    with np.load(path) as data:
        if f"{split}_latents" in data:
            return LatentSet(data[f"{split}_latents"], data[f"{split}_labels"])
        if f"{split}_images" not in data:
            raise KeyError(f"dataset {path} has no split {split!r} (has {sorted(data.files)})")
        return ImageSet(data[f"{split}_images"], data[f"{split}_labels"])
