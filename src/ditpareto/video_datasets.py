"""The paper's video datasets in the folder layouts Latte's loaders read (Vchitect/Latte ``datasets/``, 8ce59df),
and Latte's clip rule. Nothing is downloaded: ``root`` is a local copy.

- ``ffs`` (FaceForensics): ``<root>/train/videos/**/*.mp4``, unconditional.
- ``sky`` (SkyTimelapse): frame folders; every folder under ``<root>`` (``root`` included) whose own frames number
  more than 48 (Latte's num_frames * frame_interval, 16 * 3) is one video, the leaf clip folders of the real layout;
  unconditional.
- ``taichi`` (Taichi-HD): frame folders ``<root>/frames/train/<video>/<frame>.png``, unconditional.
- ``ucf101``: ``<root>/videos/<Class>/v_<Class>_gXX_cYY.avi``; the label is the class folder's index in sorted order.

Frames of a frame folder are sorted as Latte sorts them: by the integer after the last ``_`` of the name up to its
first dot (``..._0012.jpg`` -> 12, ``0000012.png`` -> 12), not by name.

A clip (Latte's ``TemporalRandomCrop`` then its index rule): a window of ``frames * interval`` frames starting at
``randint(0, max(0, total - span - 1))`` (Latte's bound, which never draws the last start ``total - span`` unless the
video is exactly ``span`` long), then for video files ``np.linspace(start, start + span - 1, frames, dtype=int)``
(FaceForensics, UCF101) and for frame folders every ``interval``-th frame from ``start`` (Sky and Taichi slice the
frame list ``[idx[0]:idx[-1] + 1:interval]``). Videos shorter than ``span`` are skipped (Latte would read them
with repeated frames). Frames are made ``size`` x ``size`` RGB uint8 with PIL bicubic (Latte uses torch bilinear
without antialiasing): short side to ``size`` then a centre crop (Latte's ``UCFCenterCropVideo``, used for ffs and
ucf101; Taichi-256 frames are already 256 x 256, left as they are), or for ``sky`` a centre square crop of the short
side then the resize (Latte's ``CenterCropResizeVideo``). Latte's training-time random horizontal flip is not applied.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ditpareto.errors import InputError
from ditpareto.study import VIDEO_LAYOUTS

log = logging.getLogger(__name__)

LAYOUT_PATTERNS = {
    "ffs": "<root>/train/videos/**/*.mp4",
    "sky": "<root>/**/<name>_<n>.jpg frame folders of more than 48 frames",
    "taichi": "<root>/frames/train/<video>/<frame>.png",
    "ucf101": "<root>/videos/<Class>/v_<Class>_gXX_cYY.avi",
}
FRAME_FOLDER_LAYOUTS = ("sky", "taichi")
UNCONDITIONAL = 0  # the label of every ffs, sky and taichi clip: datasets need labels >= 0, the model ignores it
DEFAULT_FRAMES = 16
DEFAULT_INTERVAL = 3
SKY_MIN_FRAMES = DEFAULT_FRAMES * DEFAULT_INTERVAL  # Latte keeps Sky folders of more than this many frames
IMAGE_EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG")  # Latte's is_image_file


@dataclass(frozen=True)
class VideoEntry:
    """One video: a file (``frame_files`` empty) or a frame folder (``frame_files`` its frames in order)."""

    layout: str
    path: Path
    label: int
    num_frames: int
    frame_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class VideoWindow:
    """One clip to cut: frame ``indices`` of ``entries[video]``."""

    video: int
    indices: tuple[int, ...]


def _check_layout(layout: str) -> None:
    if layout not in VIDEO_LAYOUTS:
        raise InputError(f"unknown video layout {layout!r}: expected one of {', '.join(VIDEO_LAYOUTS)}")


def frame_number(name: str) -> int:
    """Latte's frame sort key: the integer after the last ``_`` of the name up to its first dot."""
    try:
        return int(name.split(".")[0].split("_")[-1])
    except ValueError:
        raise InputError(f"frame {name} has no integer after its last '_' (e.g. name_0012.jpg)") from None


def _frame_files(folder: Path) -> tuple[Path, ...]:
    names = [entry.name for entry in os.scandir(folder) if entry.is_file() and entry.name.endswith(IMAGE_EXTENSIONS)]
    return tuple(folder / name for name in sorted(names, key=lambda name: (frame_number(name), name)))


def _video_length(path: Path) -> int:
    import decord

    try:
        return len(decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1))
    except (decord.DECORDError, RuntimeError) as error:
        raise InputError(f"{path} is not a readable video: {str(error).splitlines()[0]}") from None


def list_videos(layout: str, root: str | os.PathLike) -> list[VideoEntry]:
    """The videos of one layout under ``root`` in sorted path order (ucf101: by class, then name), with labels
    (``UNCONDITIONAL`` outside ucf101) and frame counts (decord's length for files, the frame count for folders)."""
    _check_layout(layout)
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{layout}: dataset root {root} does not exist (expected {LAYOUT_PATTERNS[layout]})")
    if layout == "ffs":
        videos = root / "train" / "videos"
        files = sorted(videos.rglob("*.mp4")) if videos.is_dir() else []
        entries = [VideoEntry(layout, path, UNCONDITIONAL, _video_length(path)) for path in files if path.is_file()]
    elif layout == "ucf101":
        videos = root / "videos"
        classes = sorted(entry.name for entry in os.scandir(videos) if entry.is_dir()) if videos.is_dir() else []
        entries = [VideoEntry(layout, path, label, _video_length(path))
                   for label, name in enumerate(classes) for path in sorted((videos / name).glob("*.avi"))
                   if path.is_file()]
    elif layout == "taichi":
        videos = root / "frames" / "train"
        folders = sorted(path for path in videos.iterdir() if path.is_dir()) if videos.is_dir() else []
        entries = [VideoEntry(layout, folder, UNCONDITIONAL, len(frames), frames)
                   for folder in folders if (frames := _frame_files(folder))]
    else:  # sky
        folders = sorted([root, *(path for path in root.rglob("*") if path.is_dir())])
        entries = [VideoEntry(layout, folder, UNCONDITIONAL, len(frames), frames)
                   for folder in folders if len(frames := _frame_files(folder)) > SKY_MIN_FRAMES]
    if not entries:
        raise InputError(f"{layout}: no videos under {root} (expected {LAYOUT_PATTERNS[layout]})")
    return entries


def draw_start(num_frames: int, span: int, rng: np.random.Generator) -> int:
    """Latte's ``TemporalRandomCrop`` start: uniform over ``0 .. max(0, num_frames - span - 1)``."""
    return int(rng.integers(0, max(0, num_frames - span - 1) + 1))


def clip_indices(layout: str, start: int, frames: int = DEFAULT_FRAMES, interval: int = DEFAULT_INTERVAL) -> np.ndarray:
    """The ``frames`` frame indices of a clip whose window starts at ``start``: ``linspace`` over the window for video
    files (ffs, ucf101), every ``interval``-th frame for frame folders (sky, taichi), as Latte's loaders index."""
    _check_layout(layout)
    span = frames * interval
    if layout in FRAME_FOLDER_LAYOUTS:
        return start + interval * np.arange(frames)
    return np.linspace(start, start + span - 1, frames, dtype=int)


def clip_windows(entries: list[VideoEntry], count: int, frames: int = DEFAULT_FRAMES,
                 interval: int = DEFAULT_INTERVAL, seed: int = 0) -> list[VideoWindow]:
    """``count`` clip windows: the videos of at least ``frames * interval`` frames (the others skipped, counted and
    logged) in one seeded permutation, cycled (clip k is from video ``order[k % n]``, so up to n clips come from n
    different videos), each clip's start then drawn in turn from the same ``numpy`` Generator."""
    span = frames * interval
    usable = [i for i, entry in enumerate(entries) if entry.num_frames >= span]
    skipped = len(entries) - len(usable)
    if skipped:
        log.warning("skipped %d of %d videos shorter than %d frames (%d frames at interval %d)",
                    skipped, len(entries), span, frames, interval)
    if not usable:
        raise InputError(f"no video holds {span} frames ({frames} frames at interval {interval}); longest has "
                         f"{max((entry.num_frames for entry in entries), default=0)}")
    rng = np.random.default_rng(seed)
    order = [usable[i] for i in rng.permutation(len(usable))]
    windows = []
    for k in range(count):
        video = order[k % len(order)]
        start = draw_start(entries[video].num_frames, span, rng)
        windows.append(VideoWindow(video, tuple(int(i) for i in clip_indices(entries[video].layout, start, frames,
                                                                             interval))))
    return windows


def square_frame(image: Image.Image, size: int, crop_first: bool = False) -> np.ndarray:
    """An RGB frame as (size, size, 3) uint8: short side to ``size`` (PIL bicubic) then a centre crop, or with
    ``crop_first`` a centre square of the short side then the resize. Offsets round as Latte's ``center_crop``."""
    image = image.convert("RGB")
    width, height = image.size
    short = min(width, height)
    if crop_first:
        left, top = int(round((width - short) / 2.0)), int(round((height - short) / 2.0))
        image = image.crop((left, top, left + short, top + short))
        return np.asarray(image.resize((size, size), Image.BICUBIC) if short != size else image, dtype=np.uint8)
    new_width, new_height = width * size // short, height * size // short  # the short side becomes size exactly
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.BICUBIC)
    left, top = int(round((new_width - size) / 2.0)), int(round((new_height - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def read_window(entry: VideoEntry, indices, size: int) -> np.ndarray:
    """Frames ``indices`` of one video as (F, size, size, 3) uint8: decord ``get_batch`` for files, PIL for frame
    folders; squared as Latte squares that layout (see the module docstring)."""
    indices = [int(i) for i in indices]
    if any(not 0 <= i < entry.num_frames for i in indices):
        raise InputError(f"{entry.path} has {entry.num_frames} frames; asked for frames {indices}")
    crop_first = entry.layout == "sky"
    if entry.frame_files:
        squared = []
        for i in indices:
            with Image.open(entry.frame_files[i]) as image:
                squared.append(square_frame(image, size, crop_first))
        return np.stack(squared)
    import decord

    reader = decord.VideoReader(str(entry.path), ctx=decord.cpu(0), num_threads=1)
    return np.stack([square_frame(Image.fromarray(frame), size, crop_first)
                     for frame in reader.get_batch(indices).asnumpy()])


def sample_clips(entries: list[VideoEntry], count: int, frames: int = DEFAULT_FRAMES, interval: int = DEFAULT_INTERVAL,
                 size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` clips (N, frames, size, size, 3) uint8 and their labels (N,) int64, cut as ``clip_windows`` plans."""
    from tqdm.auto import tqdm

    windows = clip_windows(entries, count, frames, interval, seed)
    clips = np.empty((count, frames, size, size, 3), dtype=np.uint8)
    for k, window in enumerate(tqdm(windows, desc="video clips", disable=count < 2, mininterval=5)):
        clips[k] = read_window(entries[window.video], window.indices, size)
    labels = np.array([entries[window.video].label for window in windows], dtype=np.int64)
    return clips, labels
