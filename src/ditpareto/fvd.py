"""The paper-scale FVD as StyleGAN-V computes it (``fvd2048_16f``, the protocol Latte reports): the TorchScript
I3D (Kinetics-400) called on uint8 clips (N, 3, T, H, W) with ``rescale=True, resize=True, return_features=True``
(400-d features before the softmax), 2 048 real and 2 048 generated clips of 16 frames, real clips cut from the
training split's videos at a frame stride (3 in Latte's evaluation) with a random start, videos too short for one
clip discarded; the Fréchet distance of the two Gaussians. The detector is a local file (never downloaded).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ditpareto.errors import InputError

I3D_KWARGS = {"rescale": True, "resize": True, "return_features": True}
I3D_FEATURES = 400
FVD_CLIPS = 2048  # one Latte revision uses 20 480 under the same name: the count is pinned and recorded
FVD_FRAMES = 16
REAL_STRIDE = 3  # Latte's evaluation: real clips take every 3rd frame; generated clips are used as sampled


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The StyleGAN-V I3D TorchScript detector from a local file, checked: a TorchScript archive whose forward
    takes the StyleGAN-V keyword arguments and returns finite (N, 400) features on a probe clip."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"I3D detector {path} does not exist (a local copy of StyleGAN-V's i3d_torchscript.pt; "
                         "weights are never downloaded)")
    try:
        with warnings.catch_warnings():  # the official detector is TorchScript, deprecated in torch >= 2.10
            warnings.simplefilter("ignore", DeprecationWarning)
            detector = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:120]
        raise InputError(f"I3D detector {path} is not a TorchScript archive ({reason})") from None
    probe = torch.zeros(1, 3, FVD_FRAMES, 64, 64, dtype=torch.uint8, device=device)
    try:
        with torch.no_grad():
            out = detector(probe, **I3D_KWARGS)
    except RuntimeError as exc:
        raise InputError(f"I3D detector {path} does not take StyleGAN-V's call (uint8 clips, "
                         f"{', '.join(I3D_KWARGS)}): {str(exc).splitlines()[0][:160]}") from None
    if not torch.is_tensor(out) or tuple(out.shape) != (1, I3D_FEATURES) or not bool(torch.isfinite(out).all()):
        raise InputError(f"I3D detector {path} returned {getattr(out, 'shape', type(out))} on a probe clip; "
                         f"expected finite (1, {I3D_FEATURES}) features")
    return detector


@torch.no_grad()
def i3d_features(detector, clips: np.ndarray, batch_size: int = 8, device: str | torch.device = "cpu") -> np.ndarray:
    """(N, 400) float64 I3D features of uint8 clips (N, T, H, W, C), grey repeated to RGB, as StyleGAN-V feeds
    them: (N, 3, T, H, W) uint8."""
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] not in (1, 3):
        raise InputError(f"FVD needs uint8 clips (N, T, H, W, C) with C in (1, 3), got {getattr(clips, 'shape', None)}")
    parts = []
    for start in range(0, len(clips), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(clips[start:start + batch_size])).permute(0, 4, 1, 2, 3)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1, 1)
        parts.append(detector(x.to(device), **I3D_KWARGS).double().cpu().numpy())
    return np.concatenate(parts)


@dataclass(frozen=True)
class ClipWindow:
    """One real clip: ``frames`` frames of video ``video`` starting at ``start``, every ``stride``-th frame."""

    video: int
    start: int
    frames: int
    stride: int

    @property
    def indices(self) -> list[int]:
        return [self.start + i * self.stride for i in range(self.frames)]


def real_clip_windows(lengths: list[int], count: int = FVD_CLIPS, frames: int = FVD_FRAMES,
                      stride: int = REAL_STRIDE, seed: int = 0) -> list[ClipWindow]:
    """``count`` real clips from videos of the given frame counts: videos too short for one clip are discarded,
    the rest taken in order (cycling when there are fewer videos than clips), each at a uniformly drawn start
    (seeded: the same windows on every run)."""
    span = (frames - 1) * stride + 1
    usable = [i for i, n in enumerate(lengths) if n >= span]
    if not usable:
        raise InputError(f"no video holds {frames} frames at stride {stride} ({span} frames); longest has "
                         f"{max(lengths, default=0)}")
    rng = np.random.default_rng(seed)
    windows = []
    for k in range(count):
        video = usable[k % len(usable)]
        windows.append(ClipWindow(video, int(rng.integers(0, lengths[video] - span + 1)), frames, stride))
    return windows
