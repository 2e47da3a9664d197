"""Clips to and from H.264 mp4: written with PyAV (libx264, yuv420p), read back with decord's ``VideoReader``.

Real and generated clips take the same path, so the codec's error is the same on both sides of a metric. A file
holds N clips of T frames back to back; every clip starts a closed group of pictures (keyframe every T frames,
no B-frames, no scene-cut keyframes), so a clip decodes the same whatever its neighbours. One encoder thread:
the same frames give the same bytes on every machine with the same PyAV build.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ditpareto.errors import InputError

CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"
DEFAULT_QP = 10  # constant quantiser, near-lossless on 8-bit frames (CRF would carry rate state across clips)
DEFAULT_FPS = 8


def _check_clips(clips: np.ndarray) -> None:
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] not in (1, 3):
        raise InputError(f"clips must be a uint8 array (N, T, H, W, C) with C in (1, 3), got "
                         f"{getattr(clips, 'dtype', None)} {getattr(clips, 'shape', None)}")
    n, t, h, w, _ = clips.shape
    if n < 1 or t < 1:
        raise InputError(f"clips must hold at least one frame, got shape {clips.shape}")
    if h % 2 or w % 2 or h < 16 or w < 16:
        raise InputError(f"H.264 {PIXEL_FORMAT} frames must be at least 16 x 16 with even sides, got {h} x {w}: "
                         "render larger and downsample after decoding")


def write_clips(path: str | os.PathLike, clips: np.ndarray, fps: int = DEFAULT_FPS, qp: int = DEFAULT_QP) -> None:
    """Write clips (N, T, H, W, C) uint8 as one H.264 mp4, one closed GOP per clip; atomically (a partial file is
    never left under ``path``)."""
    import av

    _check_clips(clips)
    n, t, h, w, c = clips.shape
    path = Path(path)
    partial = path.with_name(path.name + ".partial.mp4")
    with av.open(str(partial), mode="w") as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, PIXEL_FORMAT
        stream.codec_context.thread_count = 1
        # a constant quantiser and no look-ahead: a clip's bytes depend on its own frames alone
        stream.options = {"qp": str(qp), "g": str(t), "keyint_min": str(t), "sc_threshold": "0", "bf": "0",
                          "threads": "1", "x264-params": "rc-lookahead=0:mbtree=0:sync-lookahead=0"}
        for frame in clips.reshape(n * t, h, w, c):
            rgb = np.repeat(frame, 3, axis=-1) if c == 1 else frame
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(partial, path)


def read_clips(path: str | os.PathLike, frames_per_clip: int, channels: int = 1,
               clips: list[int] | None = None) -> np.ndarray:
    """Clips (N, T, H, W, channels) uint8 decoded with decord from a file of ``write_clips``; ``clips`` picks some
    by index (all by default). One channel is the mean of the decoded RGB (a grey clip's luma)."""
    import decord

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file {path} does not exist")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as error:
        raise InputError(f"{path} is not a readable video: {str(error).splitlines()[0]}") from None
    total = len(reader)
    if total % frames_per_clip:
        raise InputError(f"{path} has {total} frames, not a whole number of {frames_per_clip}-frame clips")
    count = total // frames_per_clip
    picks = list(range(count)) if clips is None else list(clips)
    if any(not 0 <= i < count for i in picks):
        raise InputError(f"{path} holds {count} clips; asked for clips {picks}")
    indices = [i * frames_per_clip + f for i in picks for f in range(frames_per_clip)]
    frames = reader.get_batch(indices).asnumpy()  # (F, H, W, 3) uint8
    if channels == 1:
        frames = np.rint(frames.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
    elif channels != 3:
        raise InputError(f"channels must be 1 or 3, got {channels}")
    return frames.reshape(len(picks), frames_per_clip, *frames.shape[1:])


def codec_roundtrip(clips: np.ndarray, workdir: str | os.PathLike, fps: int = DEFAULT_FPS,
                    qp: int = DEFAULT_QP) -> np.ndarray:
    """The clips after an H.264 encode and a decord decode (the path every real and generated clip takes)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "clips.mp4"
        write_clips(path, clips, fps=fps, qp=qp)
        return read_clips(path, clips.shape[1], channels=clips.shape[-1])
