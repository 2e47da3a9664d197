"""Procedural glyphs: digits rendered from the TrueType faces inside matplotlib's wheel, augmented, on textured
low-contrast backgrounds. Seeded and offline; every draw is independent, so nothing can be memorised.

Sample ``i`` of draw ``d`` uses its own numpy generator ``SeedSequence([seed, DRAW_IDS[d], i])``: a draw does not
depend on its size or on chunking, and two draws never share a random stream.

Per sample (all at 4x the target side, then box-downsampled: real anti-aliasing):
  face (21 faces, 7 families, regular/bold x upright/italic), stroke thickening 0/1/2 (PIL stroke width),
  glyph height 0.55-0.9 of the frame, rotation +-15 deg (5 bins), shear +-0.2, translation inside the frame,
  a smooth elastic field (4x4 control points, bicubic), glyph intensity, and one of three background textures
  (blobs: low-pass noise; grain: band-pass noise; stripes: a grating) at 15-30 % contrast.
The attributes are kept for the FID feature extractor's auxiliary heads (``ditpareto.metrics``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ditpareto.errors import InputError

# Independent draws of one study: training, FID reference statistics, the FID floor, and the extractor's training
# and validation sets. Ids are fixed: adding a draw never changes another.
DRAW_IDS = {"train": 0, "reference": 1, "floor": 2, "extractor": 3, "extractor_val": 4}

# (file, family, bold, italic): every face checked at build time to render ten distinct digits.
FACES = (
    ("DejaVuSans.ttf", "dejavu-sans", 0, 0),
    ("DejaVuSans-Bold.ttf", "dejavu-sans", 1, 0),
    ("DejaVuSans-Oblique.ttf", "dejavu-sans", 0, 1),
    ("DejaVuSans-BoldOblique.ttf", "dejavu-sans", 1, 1),
    ("DejaVuSansMono.ttf", "dejavu-mono", 0, 0),
    ("DejaVuSansMono-Bold.ttf", "dejavu-mono", 1, 0),
    ("DejaVuSansMono-Oblique.ttf", "dejavu-mono", 0, 1),
    ("DejaVuSansMono-BoldOblique.ttf", "dejavu-mono", 1, 1),
    ("DejaVuSerif.ttf", "dejavu-serif", 0, 0),
    ("DejaVuSerif-Bold.ttf", "dejavu-serif", 1, 0),
    ("DejaVuSerif-Italic.ttf", "dejavu-serif", 0, 1),
    ("DejaVuSerif-BoldItalic.ttf", "dejavu-serif", 1, 1),
    ("STIXGeneral.ttf", "stix", 0, 0),
    ("STIXGeneralBol.ttf", "stix", 1, 0),
    ("STIXGeneralItalic.ttf", "stix", 0, 1),
    ("STIXGeneralBolIta.ttf", "stix", 1, 1),
    ("cmr10.ttf", "cm-roman", 0, 0),
    ("cmb10.ttf", "cm-roman", 1, 0),
    ("cmti10.ttf", "cm-roman", 0, 1),
    ("cmss10.ttf", "cm-sans", 0, 0),
    ("cmtt10.ttf", "cm-mono", 0, 0),
)
FAMILIES = tuple(sorted({family for _, family, _, _ in FACES}))
BACKGROUNDS = ("blobs", "grain", "stripes")
STROKES = (0, 1, 2)  # PIL stroke width at the glyph cache's size
ROTATION_BINS = 5
SUPERSAMPLE = 4
_CACHE_SIZE = 96  # glyph cache canvas (pixels); the glyph is about 64 px tall in it
_FLAT_STD = 2 / 255  # a token whose pixels vary less than this is "flat"


@dataclass(frozen=True)
class GlyphSettings:
    """Augmentation ranges (the defaults are the study's; a change makes another dataset)."""

    scale: tuple[float, float] = (0.55, 0.9)  # glyph height / frame
    rotation_deg: float = 15.0
    shear: float = 0.2
    elastic: float = 0.035  # displacement std at the 4x4 control points, in frames / 2 (grid_sample units)
    contrast: tuple[float, float] = (0.15, 0.30)  # background peak-to-peak, of the full range
    background_level: tuple[float, float] = (0.15, 0.45)
    glyph_level: tuple[float, float] = (0.75, 1.0)


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_record() -> list[dict]:
    """Every face used: file, family, style and sha256 (the dataset record names them)."""
    out = []
    for name, family, bold, italic in FACES:
        path = font_dir() / name
        out.append({"file": name, "family": family, "bold": bool(bold), "italic": bool(italic),
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return out


def renderer_versions() -> dict:
    import matplotlib
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, "freetype": features.version("freetype2"), "matplotlib": matplotlib.__version__,
            "numpy": np.__version__, "torch": torch.__version__}


def _render(face: int, digit: int, stroke: int) -> np.ndarray:
    """Coverage in [0, 1] of one digit, centred on its bounding box in a _CACHE_SIZE square (float32)."""
    from PIL import Image, ImageDraw

    font = _font(face)
    canvas = Image.new("L", (2 * _CACHE_SIZE, 2 * _CACHE_SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((_CACHE_SIZE // 2, _CACHE_SIZE // 2), str(digit), fill=255, font=font, stroke_width=stroke,
              stroke_fill=255)
    box = canvas.getbbox()
    if box is None:
        raise InputError(f"font {FACES[face][0]} renders digit {digit} empty")
    glyph = np.asarray(canvas.crop(box), dtype=np.float32) / 255.0
    h, w = glyph.shape
    out = np.zeros((_CACHE_SIZE, _CACHE_SIZE), dtype=np.float32)
    top, left = (_CACHE_SIZE - h) // 2, (_CACHE_SIZE - w) // 2
    out[top:top + h, left:left + w] = glyph
    return out


@lru_cache(maxsize=None)
def _font(face: int):
    from PIL import ImageFont

    path = font_dir() / FACES[face][0]
    if not path.is_file():
        raise InputError(f"font {path} is missing from matplotlib's wheel (matplotlib {_mpl_version()})")
    # size chosen so that a digit is about 64 px tall (digits are ~0.73 em)
    return ImageFont.truetype(str(path), 88)


def _mpl_version() -> str:
    import matplotlib

    return matplotlib.__version__


@lru_cache(maxsize=None)
def glyph_cache() -> tuple[torch.Tensor, torch.Tensor]:
    """(masks (faces, strokes, 10, S, S), heights (faces, strokes, 10) as a fraction of S): every glyph rendered
    once. Each face must render ten non-empty, pairwise distinct digits."""
    masks = np.zeros((len(FACES), len(STROKES), 10, _CACHE_SIZE, _CACHE_SIZE), dtype=np.float32)
    heights = np.zeros(masks.shape[:3], dtype=np.float32)
    for f in range(len(FACES)):
        for s, stroke in enumerate(STROKES):
            for d in range(10):
                glyph = _render(f, d, stroke)
                rows = np.nonzero(glyph.max(axis=1) > 0.5)[0]
                masks[f, s, d], heights[f, s, d] = glyph, (rows[-1] - rows[0] + 1) / _CACHE_SIZE
        plain = masks[f, 0].reshape(10, -1)
        same = [(a, b) for a in range(10) for b in range(a + 1, 10) if np.abs(plain[a] - plain[b]).max() < 0.1]
        if same:
            raise InputError(f"font {FACES[f][0]} does not render ten distinct digits: {same} look the same")
    return torch.from_numpy(masks), torch.from_numpy(heights)


@dataclass
class GlyphDraw:
    """uint8 images (N, H, W, 1), digit labels and the attributes of each sample."""

    images: np.ndarray
    labels: np.ndarray
    attributes: dict[str, np.ndarray]


def _sample_params(rng: np.random.Generator, settings: GlyphSettings) -> dict:
    return {
        "digit": int(rng.integers(10)),
        "face": int(rng.integers(len(FACES))),
        "stroke": int(rng.integers(len(STROKES))),
        "scale": rng.uniform(*settings.scale),
        "rotation": rng.uniform(-settings.rotation_deg, settings.rotation_deg),
        "shear": rng.uniform(-settings.shear, settings.shear),
        "shift": rng.uniform(-1, 1, size=2),
        "elastic": rng.normal(0, settings.elastic, size=(2, 4, 4)),
        "glyph_level": rng.uniform(*settings.glyph_level),
        "background": int(rng.integers(len(BACKGROUNDS))),
        "background_level": rng.uniform(*settings.background_level),
        "contrast": rng.uniform(*settings.contrast),
        "texture_noise": rng.standard_normal(size=(64, 64)),
        "stripe": (rng.uniform(0, math.pi), rng.uniform(2.0, 5.0), rng.uniform(0, 2 * math.pi)),
    }


def _textures(params: list[dict], side: int) -> torch.Tensor:
    """Backgrounds (B, side, side) with zero mean and unit peak-to-peak, one kind per sample."""
    noise = torch.from_numpy(np.stack([p["texture_noise"] for p in params])).float().unsqueeze(1)  # (B,1,64,64)
    blobs = F.interpolate(F.avg_pool2d(noise, 8), size=(side, side), mode="bicubic", align_corners=False)
    fine = F.interpolate(F.avg_pool2d(noise, 2), size=(side, side), mode="bilinear", align_corners=False)
    grain = fine - F.interpolate(F.avg_pool2d(noise, 8), size=(side, side), mode="bilinear", align_corners=False)
    coords = torch.linspace(-1, 1, side)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    stripes = []
    for p in params:
        angle, cycles, phase = p["stripe"]
        wave = torch.sin(math.pi * cycles * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
        stripes.append(wave)
    stripes = torch.stack(stripes).unsqueeze(1) + 0.15 * fine
    kinds = torch.tensor([p["background"] for p in params]).view(-1, 1, 1, 1)
    texture = torch.where(kinds == 0, blobs, torch.where(kinds == 1, grain, stripes)).squeeze(1)
    flat = texture.flatten(1)
    texture = texture - flat.mean(1).view(-1, 1, 1)
    span = (flat.max(1).values - flat.min(1).values).clamp_min(1e-6)
    return texture / span.view(-1, 1, 1)


def _background(params: list[dict], side: int) -> torch.Tensor:
    """Backgrounds (B, side, side) at the supersampled side: level + contrast x texture."""
    level = torch.tensor([p["background_level"] for p in params]).view(-1, 1, 1)
    contrast = torch.tensor([p["contrast"] for p in params]).view(-1, 1, 1)
    return level + contrast * _textures(params, side)


def _render_batch(params: list[dict], image_size: int, background: torch.Tensor | None = None) -> torch.Tensor:
    """Images (B, image_size, image_size) in [0, 1]; ``background`` (B, side, side) if already made (a clip's
    frames share one)."""
    masks, heights = glyph_cache()
    side = image_size * SUPERSAMPLE
    glyphs = torch.stack([masks[p["face"], p["stroke"], p["digit"]] for p in params]).unsqueeze(1)
    # Output pixel (x, y) in [-1, 1] reads the cache at A (x, y) + b + elastic: A undoes scale, rotation, shear.
    thetas = []
    for p in params:
        zoom = p["scale"] / float(heights[p["face"], p["stroke"], p["digit"]])  # cache units -> frame units
        angle = math.radians(p["rotation"])
        rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        shear = torch.tensor([[1.0, p["shear"]], [0.0, 1.0]])
        forward = zoom * rot @ shear  # cache -> frame
        inverse = torch.linalg.inv(forward)
        room = (1 - p["scale"]) * 0.8  # translation keeps the glyph mostly inside
        shift = torch.tensor(p["shift"], dtype=torch.float32) * room
        thetas.append(torch.cat([inverse, (-inverse @ shift).unsqueeze(1)], dim=1))
    theta = torch.stack(thetas).float()
    grid = F.affine_grid(theta, (len(params), 1, side, side), align_corners=False)
    elastic = torch.from_numpy(np.stack([p["elastic"] for p in params])).float()
    field = F.interpolate(elastic, size=(side, side), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    coverage = F.grid_sample(glyphs, grid + field, mode="bilinear", padding_mode="zeros", align_corners=False)
    coverage = coverage.squeeze(1).clamp(0, 1)
    if background is None:
        background = _background(params, side)
    ink = torch.tensor([p["glyph_level"] for p in params]).view(-1, 1, 1)
    image = background * (1 - coverage) + ink * coverage
    return F.avg_pool2d(image.unsqueeze(1), SUPERSAMPLE).squeeze(1).clamp(0, 1)


def draw_glyphs(draw: str, n: int, image_size: int = 16, seed: int = 0, settings: GlyphSettings | None = None,
                chunk: int = 1024, progress: bool = False) -> GlyphDraw:
    """``n`` samples of the named draw (``DRAW_IDS``): sample i depends only on (seed, draw, i)."""
    if draw not in DRAW_IDS:
        raise InputError(f"unknown glyph draw {draw!r}; choose one of {sorted(DRAW_IDS)}")
    if n < 1 or image_size < 4:
        raise InputError(f"a glyph draw needs n >= 1 and image_size >= 4, got n={n}, image_size={image_size}")
    settings = settings or GlyphSettings()
    images = np.zeros((n, image_size, image_size, 1), dtype=np.uint8)
    keys = ("digit", "face", "stroke", "background", "rotation_bin")
    attributes = {k: np.zeros(n, dtype=np.int64) for k in keys}
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"glyphs:{draw}", unit_scale=chunk, mininterval=5)
    for start in starts:
        stop = min(n, start + chunk)
        params = [_sample_params(np.random.default_rng(np.random.SeedSequence([seed, DRAW_IDS[draw], i])), settings)
                  for i in range(start, stop)]
        batch = _render_batch(params, image_size)
        images[start:stop, ..., 0] = (batch * 255).round().to(torch.uint8).numpy()
        for k in keys[:-1]:
            attributes[k][start:stop] = [p[k] for p in params]
        bins = [min(ROTATION_BINS - 1, int((p["rotation"] + settings.rotation_deg) / (2 * settings.rotation_deg)
                                           * ROTATION_BINS)) for p in params]
        attributes["rotation_bin"][start:stop] = bins
    attributes["family"] = np.array([FAMILIES.index(FACES[f][1]) for f in attributes["face"]], dtype=np.int64)
    attributes["style"] = np.array([2 * FACES[f][2] + FACES[f][3] for f in attributes["face"]], dtype=np.int64)
    return GlyphDraw(images, attributes["digit"].copy(), attributes)


def flat_token_fraction(images: np.ndarray, patch: int = 2) -> float:
    """Share of patch x patch tokens whose pixel std is below 2/255 (flat background)."""
    x = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255.0
    tokens = F.unfold(x, kernel_size=patch, stride=patch)  # (N, C*p*p, L)
    return float((tokens.std(dim=1, unbiased=False) < _FLAT_STD).float().mean())
