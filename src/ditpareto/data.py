"""Datasets as independent draws, one .npz each: uint8 images (N, H, W, C) or SD-VAE latents (N, C, h, w), labels.

``glyphs`` (procedural digits, ``ditpareto.glyphs``) is the embedded default: training, FID reference, FID floor
and the feature extractor's sets are independent draws. ``digits`` (scikit-learn) is kept as an option;
``imagefolder`` (ImageNet's train folder layout: one sub-folder per class) is the paper setting: ADM centre-crop
preprocessing, then SD-VAE latents (``ditpareto.latents``); it has a ``train`` draw only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ditpareto.npzfiles import all_finite, memmap_member, read_npz, save_npz

# Independent draws of one study (``ditpareto.glyphs.DRAW_IDS``): one file each, resources/data/{draw}.npz.
from ditpareto.study import DRAWS  # noqa: E402,F401  (re-exported)


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
    """Scaled SD-VAE latents float32 with integer labels, a training set in the model's input space: images (N, C, h,
    w) or clips encoded frame by frame (N, F, C, h, w, Latte's layout)."""

    latents: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.latents.dtype != np.float32 or self.latents.ndim not in (4, 5):
            raise ValueError(f"latents must be float32 (N, C, h, w) or clips (N, F, C, h, w), got "
                             f"{self.latents.dtype} {self.latents.shape}")
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


def digits_draw(draw: str, image_size: int = 16, heldout_fraction: float = 0.3, split_seed: int = 0) -> ImageSet:
    """A draw of scikit-learn's digits (no independent draws exist: ``train``/``reference``/``extractor`` are the
    train split, ``floor``/``extractor_val`` the held-out split, as the study did before glyphs)."""
    splits = prepare_digits(image_size, heldout_fraction, split_seed)
    return splits["heldout" if draw in ("floor", "extractor_val") else "train"]


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


def save_draw(data: ImageSet | LatentSet, path: str | os.PathLike, attributes: dict | None = None,
              **metadata) -> None:
    """One draw in one .npz: ``images`` (uint8 N,H,W,C) or ``latents`` (float32 N,[F,]C,h,w), ``labels``, optional
    ``attr_<name>`` integer arrays (sample attributes) and metadata arrays."""
    arrays = {"images": data.images} if isinstance(data, ImageSet) else {"latents": data.latents}
    arrays["labels"] = data.labels
    arrays.update({f"attr_{k}": v for k, v in (attributes or {}).items()})
    arrays.update(metadata)
    save_npz(arrays, path, compress=isinstance(data, ImageSet))


def _checked_npz(path: Path) -> dict[str, np.ndarray]:
    return read_npz(path, "dataset")


def load_draw(path: str | os.PathLike) -> ImageSet | LatentSet:
    """A prepared draw (``prepare-data``), checked: keys, dtypes, shapes, finite latents, integer labels. Latents
    stored uncompressed are memory-mapped (``memmap_member``)."""
    from ditpareto.errors import InputError

    path = Path(path)
    latents = memmap_member(path, "latents") if path.is_file() else None
    if latents is not None:
        try:
            with np.load(path, allow_pickle=False) as archive:
                data = {"latents": latents, **({"labels": archive["labels"]} if "labels" in archive else {})}
        except Exception as exc:  # a damaged labels member
            raise InputError(f"dataset {path} cannot be read ({type(exc).__name__}: {exc})") from None
    else:
        data = _checked_npz(path)
    if "labels" not in data or not ({"images", "latents"} & set(data)):
        raise InputError(f"dataset {path} needs `images` or `latents` and `labels`, has {sorted(data)}")
    labels = data["labels"]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise InputError(f"dataset {path}: labels must be non-negative integers (N,), got {labels.dtype} "
                         f"{labels.shape}")
    try:
        if "images" in data:
            return ImageSet(data["images"], labels.astype(np.int64))
        if data["latents"].dtype != np.float32 or not all_finite(data["latents"]):
            raise InputError(f"dataset {path}: latents must be finite float32 values")
        return LatentSet(data["latents"], labels.astype(np.int64))
    except ValueError as exc:
        raise InputError(f"dataset {path}: {exc}") from None


def load_attributes(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ``attr_<name>`` arrays of a draw (sample attributes for the feature extractor's auxiliary heads)."""
    data = _checked_npz(Path(path))
    return {k[len("attr_"):]: v.astype(np.int64) for k, v in data.items() if k.startswith("attr_")}
