"""Procedural video: bouncing glyphs. One digit of the image study's renderer (``ditpareto.glyphs``) moves at
constant velocity with elastic bounces and a slow spin over a static textured background, 16 frames per clip.

Frames are rendered at 32 x 32 (an H.264 frame of 16 x 16 is a single macroblock), written as H.264 and read
back with decord (``ditpareto.videoio``), then box-downsampled to 16 x 16: the same path generated clips take.
Clip ``i`` of draw ``d`` uses its own generator ``SeedSequence([seed, CLIP_DRAW_IDS[d], i])``, so no draw depends
on its size and no two draws share a stream. The labels the generator knows (digit, motion direction, speed,
bounce count, background) train the FVD-toy feature extractor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ditpareto.errors import InputError
from ditpareto.study import DRAWS
from ditpareto.glyphs import SUPERSAMPLE, GlyphSettings, _background, _render_batch, _sample_params

# Ids apart from the image draws' (glyphs.DRAW_IDS): a clip never shares a stream with an image.
CLIP_DRAW_IDS = {draw: 10 + i for i, draw in enumerate(DRAWS)}  # train 10, reference 11, ... extractor_val 14
FRAMES = 16
RENDER_SIZE = 32  # encoded frame side; clips are downsampled to RENDER_SIZE // DOWNSAMPLE after decoding
DOWNSAMPLE = 2
DIRECTION_BINS = 8
SPEED_BINS = 3
MAX_BOUNCES = 4  # the bounce label saturates: 0, 1, 2, 3, 4 or more
WALL = 1.25  # reflection walls in shift units
ATTRIBUTES = ("digit", "direction_bin", "speed_bin", "bounces", "background")


@dataclass(frozen=True)
class MotionSettings:
    """Motion ranges of a clip (the defaults are the toy video study's; a change makes another dataset)."""

    frames: int = FRAMES
    speed_px: tuple[float, float] = (0.5, 1.5)  # pixels per frame at the 16-px output side
    spin_deg: float = 1.0  # |angular velocity| up to this many degrees per frame
    glyph: GlyphSettings = GlyphSettings(scale=(0.4, 0.6))  # smaller than the image study's: room to move


@dataclass
class ClipDraw:
    """uint8 clips (N, T, H, W, 1) at the render side (before encoding), labels (digits) and attributes."""

    clips: np.ndarray
    labels: np.ndarray
    attributes: dict[str, np.ndarray]


def _bounce(start: float, velocity: float, frames: int, wall: float) -> tuple[np.ndarray, int]:
    """Positions in [-wall, wall] over ``frames`` frames of a point moving at ``velocity`` per frame, reflected
    at the walls, and the number of reflections."""
    positions, x, v, bounces = np.zeros(frames), start, velocity, 0
    for t in range(frames):
        positions[t] = x
        x += v
        while abs(x) > wall:
            x = math.copysign(2 * wall, x) - x
            v, bounces = -v, bounces + 1
    return positions, bounces


def _clip_params(rng: np.random.Generator, settings: MotionSettings, size: int) -> tuple[list[dict], dict]:
    """Per-frame render parameters (shared background, moving glyph) and the clip's labels."""
    base = _sample_params(rng, settings.glyph)
    angle = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(*settings.speed_px)
    spin = rng.uniform(-settings.spin_deg, settings.spin_deg)
    room = (1 - base["scale"]) * 0.8  # one shift unit of glyphs._render_batch, in frame units (frame side = 2)
    step = speed * 2 / (size // DOWNSAMPLE) / room  # pixels per frame -> shift units per frame
    # the walls: the glyph's box may touch the frame's edge (the image study keeps it 20 % inside)
    xs, bx = _bounce(base["shift"][0], step * math.cos(angle), settings.frames, WALL)
    ys, by = _bounce(base["shift"][1], step * math.sin(angle), settings.frames, WALL)
    frames = [{**base, "shift": np.array([xs[t], ys[t]]), "rotation": base["rotation"] + spin * t}
              for t in range(settings.frames)]
    lo, hi = settings.speed_px
    labels = {
        "digit": base["digit"],
        "direction_bin": int(angle / (2 * math.pi) * DIRECTION_BINS) % DIRECTION_BINS,
        "speed_bin": min(SPEED_BINS - 1, int((speed - lo) / (hi - lo) * SPEED_BINS)),
        "bounces": min(MAX_BOUNCES, bx + by),
        "background": base["background"],
    }
    return frames, labels


def draw_clips(draw: str, n: int, seed: int = 0, settings: MotionSettings | None = None,
               size: int = RENDER_SIZE, chunk: int = 64, progress: bool = False) -> ClipDraw:
    """``n`` clips of the named draw (``CLIP_DRAW_IDS``) at the render side: clip i depends only on
    (seed, draw, i)."""
    if draw not in CLIP_DRAW_IDS:
        raise InputError(f"unknown clip draw {draw!r}; choose one of {sorted(CLIP_DRAW_IDS)}")
    if n < 1 or size < 16 or size % (2 * DOWNSAMPLE):
        raise InputError(f"a clip draw needs n >= 1 and a render side >= 16 divisible by {2 * DOWNSAMPLE}, "
                         f"got n={n}, size={size}")
    settings = settings or MotionSettings()
    t = settings.frames
    clips = np.zeros((n, t, size, size, 1), dtype=np.uint8)
    attributes = {k: np.zeros(n, dtype=np.int64) for k in ATTRIBUTES}
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"clips:{draw}", unit_scale=chunk, mininterval=5)
    for start in starts:
        stop = min(n, start + chunk)
        frames, firsts = [], []
        for i in range(start, stop):
            rng = np.random.default_rng(np.random.SeedSequence([seed, CLIP_DRAW_IDS[draw], i]))
            clip_frames, labels = _clip_params(rng, settings, size)
            frames += clip_frames
            firsts.append(clip_frames[0])
            for k in ATTRIBUTES:
                attributes[k][i] = labels[k]
        background = _background(firsts, size * SUPERSAMPLE).repeat_interleave(t, dim=0)  # static: once a clip
        batch = _render_batch(frames, size, background)  # (B*T, size, size) in [0, 1]
        clips[start:stop, ..., 0] = (batch * 255).round().to(torch.uint8).numpy().reshape(stop - start, t, size, size)
    return ClipDraw(clips, attributes["digit"].copy(), attributes)


def downsample(clips: np.ndarray, factor: int = DOWNSAMPLE) -> np.ndarray:
    """Box-downsampled clips (N, T, H/f, W/f, C) uint8 (after decoding: the study's frame side)."""
    n, t, h, w, c = clips.shape
    x = torch.from_numpy(clips).float().reshape(n * t, h, w, c).permute(0, 3, 1, 2)
    x = F.avg_pool2d(x, factor).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).reshape(n, t, h // factor, w // factor, c).numpy()


def static_token_fraction(clips: np.ndarray, patch: int = 2) -> float:
    """Share of patch x patch tokens (after the first frame) that equal the same token one frame earlier within
    2/255: the temporally redundant tokens a video method may skip."""
    x = torch.from_numpy(clips).float() / 255.0  # (N, T, H, W, C)
    n, t, h, w, c = x.shape
    change = (x[:, 1:] - x[:, :-1]).abs().reshape(n, t - 1, h // patch, patch, w // patch, patch, c).amax(dim=(3, 5, 6))
    return float((change < 2 / 255).float().mean())
