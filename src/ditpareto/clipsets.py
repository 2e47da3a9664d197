"""Clip draws on disk: the frames as one H.264 mp4 (``videoio``), the labels and attributes in an .npz beside it.

Loading decodes with decord and box-downsamples to the study's frame side, so training, reference, floor and
generated clips all pass through the same codec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ditpareto.errors import InputError
from ditpareto.npzfiles import read_npz, save_npz


@dataclass
class ClipSet:
    """uint8 clips (N, T, H, W, C) with integer labels; ``render_factor``: how much larger they were encoded."""

    clips: np.ndarray
    labels: np.ndarray
    render_factor: int = 1

    def __post_init__(self):
        if self.clips.dtype != np.uint8 or self.clips.ndim != 5:
            raise ValueError(f"clips must be uint8 (N, T, H, W, C), got {self.clips.dtype} {self.clips.shape}")
        if len(self.clips) != len(self.labels):
            raise ValueError(f"{len(self.clips)} clips but {len(self.labels)} labels")

    def as_model_input(self) -> torch.Tensor:
        """Float tensor (N, T, C, H, W) in [-1, 1] (Latte's layout)."""
        return torch.from_numpy(self.clips).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0

    def frames(self) -> np.ndarray:
        """Every frame as an image (N*T, H, W, C): per-frame FID and an image base's training set."""
        return self.clips.reshape(-1, *self.clips.shape[2:])


def save_clip_draw(clips: np.ndarray, labels: np.ndarray, attributes: dict, npz: str | os.PathLike,
                   video: str | os.PathLike, downsample: int) -> None:
    """Render-side clips (N, T, H, W, C) to ``video`` (H.264) and their labels, attributes and the downsampling
    factor to ``npz``."""
    from ditpareto.videoio import write_clips

    write_clips(video, clips)
    arrays = {"labels": np.asarray(labels, np.int64), "frames_per_clip": np.array(clips.shape[1]),
              "downsample": np.array(downsample), "channels": np.array(clips.shape[-1])}
    arrays.update({f"attr_{k}": np.asarray(v, np.int64) for k, v in attributes.items()})
    save_npz(arrays, npz)


def load_clip_draw(npz: str | os.PathLike, video: str | os.PathLike) -> tuple[ClipSet, dict[str, np.ndarray]]:
    """A clip draw (``prepare-clips``) decoded and downsampled, checked against its labels; and its attributes."""
    from ditpareto.glyph_clips import downsample
    from ditpareto.videoio import read_clips

    data = read_npz(npz, "clip draw")
    missing = {"labels", "frames_per_clip", "downsample", "channels"} - set(data)
    if missing:
        raise InputError(f"clip draw {npz} lacks {sorted(missing)} (write it with prepare-clips)")
    labels = data["labels"]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise InputError(f"clip draw {npz}: labels must be non-negative integers (N,), "
                         f"got {labels.dtype} {labels.shape}")
    clips = read_clips(video, int(data["frames_per_clip"]), channels=int(data["channels"]))
    if len(clips) != len(labels):
        raise InputError(f"{video} holds {len(clips)} clips but {npz} labels {len(labels)}")
    factor = int(data["downsample"])
    if factor > 1:
        clips = downsample(clips, factor)
    attributes = {k[len("attr_"):]: v.astype(np.int64) for k, v in data.items() if k.startswith("attr_")}
    return ClipSet(clips, labels.astype(np.int64), factor), attributes


def is_clip_draw(npz: str | os.PathLike) -> bool:
    """Whether an .npz is a clip draw (its frames in an .mp4 beside it), not an image or latent draw."""
    try:
        with np.load(npz, allow_pickle=False) as archive:
            return "frames_per_clip" in archive.files
    except (OSError, ValueError):
        return False  # the draw's own loader names what is wrong


def video_path(npz: str | os.PathLike) -> Path:
    """The mp4 beside a clip draw's .npz (``<stem>.mp4``)."""
    return Path(npz).with_suffix(".mp4")


def through_codec(clips: np.ndarray, factor: int, workdir: str | os.PathLike) -> np.ndarray:
    """Study-side clips (N, T, h, w, C) the way real clips reach the metrics: up to the render side (nearest),
    H.264 and decord, box-downsampled back."""
    from ditpareto.glyph_clips import downsample
    from ditpareto.videoio import codec_roundtrip

    up = clips.repeat(factor, axis=2).repeat(factor, axis=3) if factor > 1 else clips
    decoded = codec_roundtrip(np.ascontiguousarray(up), workdir)
    return downsample(decoded, factor) if factor > 1 else decoded
