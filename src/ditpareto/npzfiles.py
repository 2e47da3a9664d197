"""Reading and writing .npz files without torch: deterministic bytes, no pickle, checked sample files. The
light jobs (merging shards) import this alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ditpareto.errors import InputError


def save_npz(arrays: dict[str, np.ndarray], path: str | os.PathLike, compress: bool = True) -> None:
    """np.savez with fixed zip timestamps, written atomically: the same arrays give the same bytes (and sha256)."""
    import zipfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp.npz")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(tmp, "w", compression=method) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)
    os.replace(tmp, path)


def read_npz(path: str | os.PathLike, what: str = "dataset") -> dict[str, np.ndarray]:
    """Every array of an .npz, read without pickle; InputError naming the file when it is missing, truncated, not
    an npz, or holds objects."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # truncated zip, pickled objects, not an npz
        raise InputError(f"{what} {path} cannot be read ({type(exc).__name__}: {exc})") from None


def load_samples(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A sampling job's npz, checked: ``images`` uint8 (N, H, W, C), ``labels`` and ``indices`` integer (N,)."""
    data = read_npz(path, "samples")
    missing = [k for k in ("images", "labels", "indices") if k not in data]
    if missing:
        raise InputError(f"samples {path} lack {missing} (have {sorted(data)})")
    images, labels, indices = data["images"], data["labels"], data["indices"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise InputError(f"samples {path}: images must be uint8 (N, H, W, C) with C in (1, 3), got {images.dtype} "
                         f"{images.shape}")
    for name, values in (("labels", labels), ("indices", indices)):
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or len(values) != len(images):
            raise InputError(f"samples {path}: {name} must be {len(images)} integers, got {values.dtype} "
                             f"{values.shape}")
    return {"images": images, "labels": labels, "indices": indices}
