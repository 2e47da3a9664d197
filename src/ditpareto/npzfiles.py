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


def read_npz(path: str | os.PathLike, what: str = "dataset", mapped: tuple[str, ...] = (),
             remedy: str = "make it again") -> dict[str, np.ndarray]:
    """Every array of an .npz, read without pickle; InputError naming the file when it is missing, truncated, not
    an npz, or holds objects. Members named in ``mapped`` are memory-mapped where stored uncompressed
    (``memmap_member``: CRC-checked, read from the page cache on demand, not copied)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            maps = {k: memmap_member(path, k, what, remedy) for k in mapped if k in data.files}
            return {k: data[k] if maps.get(k) is None else maps[k] for k in data.files}
    except InputError:
        raise
    except Exception as exc:  # truncated zip, pickled objects, not an npz
        raise InputError(f"{what} {path} cannot be read ({type(exc).__name__}: {exc})") from None


def memmap_member(path: str | os.PathLike, name: str, what: str = "dataset",
                  remedy: str = "prepare the draw again") -> np.ndarray | None:
    """An uncompressed .npz member as a copy-on-write memory map (None when it is compressed or absent): the latent
    training set is read from the page cache on demand and shared by every process on a node, not copied into each
    rank's memory (21 GB at 256 px, 84 GB at 512 px as float32). The member is checked against the zip's CRC-32
    first (one chunked read: a map would skip the check np.load makes), InputError when it fails."""
    import struct
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{name}.npy")
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        if _member_crc(handle, start, info.file_size) != info.CRC:  # the zip's own digest, which a map skips
            raise InputError(f"{what} {path}: member {name}.npy fails its CRC-32 check (a damaged copy); "
                             f"{remedy}")
        handle.seek(start)
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(handle)
        offset = handle.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order="F" if fortran else "C")


def _member_crc(handle, start: int, size: int, chunk: int = 1 << 26) -> int:
    """CRC-32 of ``size`` bytes from ``start`` (a stored zip member), read in 64 MiB chunks."""
    import zlib

    handle.seek(start)
    crc, left = 0, size
    while left > 0:
        block = handle.read(min(chunk, left))
        if not block:
            break
        crc, left = zlib.crc32(block, crc), left - len(block)
    return crc


def all_finite(array: np.ndarray, chunk: int = 4096) -> bool:
    """Whether every value is finite, checked in row chunks (a memory map is not copied whole)."""
    return all(np.isfinite(array[i:i + chunk]).all() for i in range(0, len(array), chunk))


def load_samples(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A sampling job's npz, checked: ``images`` uint8 (N, H, W, C) or clips (N, F, H, W, C), ``labels`` and
    ``indices`` integer (N,)."""
    data = read_npz(path, "samples")
    missing = [k for k in ("images", "labels", "indices") if k not in data]
    if missing:
        raise InputError(f"samples {path} lack {missing} (have {sorted(data)})")
    images, labels, indices = data["images"], data["labels"], data["indices"]
    if images.dtype != np.uint8 or images.ndim not in (4, 5) or images.shape[-1] not in (1, 3):
        raise InputError(f"samples {path}: images must be uint8 (N, H, W, C) or clips (N, F, H, W, C) with C in "
                         f"(1, 3), got {images.dtype} {images.shape}")
    for name, values in (("labels", labels), ("indices", indices)):
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or len(values) != len(images):
            raise InputError(f"samples {path}: {name} must be {len(images)} integers, got {values.dtype} "
                             f"{values.shape}")
    return {"images": images, "labels": labels, "indices": indices}
