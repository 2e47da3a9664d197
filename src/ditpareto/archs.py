"""Architecture shapes without torch: the DiT registry, FlexDiT's block layout and FlexiDiT's choices. The
workflow plans and checks a study with these alone (``snakemake -n`` needs no torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ditpareto.errors import InputError


@dataclass(frozen=True)
class DiTConfig:
    """Shape of a DiT: everything needed to rebuild the network from a state dict."""

    depth: int
    hidden_size: int
    num_heads: int
    patch_size: int
    input_size: int = 32
    in_channels: int = 4
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape in the model's input space: (C, H, W)."""
        return (self.in_channels, self.input_size, self.input_size)

    def to_dict(self) -> dict:
        return asdict(self)


# (depth, hidden_size, num_heads) of the official families.
_FAMILIES = {"xl": (28, 1152, 16), "l": (24, 1024, 16), "b": (12, 768, 12), "s": (12, 384, 6)}

# Path-safe names: these keys are wildcard values, CLI choices and schema enums.
DIT_ARCHS: dict[str, dict] = {
    f"dit-{family}-{patch}": dict(depth=d, hidden_size=h, num_heads=n, patch_size=patch)
    for family, (d, h, n) in _FAMILIES.items()
    for patch in (2, 4, 8)
}
# Tiny CPU models for the embedded default study and the tests.
DIT_ARCHS["dit-tiny-2"] = dict(depth=4, hidden_size=64, num_heads=4, patch_size=2)
# The default study's base: deep enough for two FlexDiT SDTMs with sparse blocks (1 + 2 x [1, 2, 1, 1] + 1).
DIT_ARCHS["dit-toy-2"] = dict(depth=12, hidden_size=64, num_heads=4, patch_size=2)
DIT_ARCHS["dit-micro-2"] = dict(depth=2, hidden_size=32, num_heads=2, patch_size=2)


def dit_config(name: str, image_size: int = 256, **overrides) -> DiTConfig:
    """Config of a registered DiT. ``image_size`` is in pixels; latent models (in_channels=4) see image_size/8."""
    return _registered(DiTConfig, DIT_ARCHS, "model", name, image_size, overrides)


def _registered(cls, registry: dict, kind: str, name: str, image_size: int, overrides: dict):
    """``cls`` of a registered shape at ``image_size`` pixels (latent models: image_size / VAE factor), with
    ``overrides`` of its fields."""
    if name not in registry:
        raise InputError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(registry))}")
    in_channels = overrides.pop("in_channels", 4)
    vae_factor = overrides.pop("vae_factor", 8 if in_channels == 4 else 1)
    if image_size % vae_factor:
        raise InputError(f"image size {image_size} is not divisible by the VAE factor {vae_factor}")
    return cls(**{**registry[name], **overrides}, input_size=image_size // vae_factor, in_channels=in_channels)


#################################################################################
#                          Latte: the factorised video DiT                      #
#################################################################################

# Where Latte's 1-D sin-cos frame embedding enters: "stream" as the official Latte (added to the tokens once, after
# the first spatial block), or "temporal" (added to the input of every temporal attention, never to the stream: a
# model inflated from an image DiT with zero-gated temporal blocks then equals the image model frame by frame).
TEMPORAL_POSITIONS = ("stream", "temporal")


@dataclass(frozen=True)
class LatteConfig(DiTConfig):
    """Shape of a Latte-style video DiT: ``depth`` counts spatial and temporal blocks (even: ``blocks.2i`` attends
    within a frame, ``blocks.2i+1`` across the frames at one location), as Latte's own configs do."""

    num_frames: int = 16
    temporal_position: str = "stream"

    def __post_init__(self):
        if self.depth % 2:
            raise InputError(f"a Latte model alternates spatial and temporal blocks: depth must be even, "
                             f"got {self.depth}")
        if self.temporal_position not in TEMPORAL_POSITIONS:
            raise InputError(f"temporal_position must be one of {TEMPORAL_POSITIONS}, got {self.temporal_position!r}")
        if self.num_frames < 1:
            raise InputError(f"num_frames must be >= 1, got {self.num_frames}")

    @property
    def spatial_depth(self) -> int:
        return self.depth // 2

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One clip's shape in the model's input space: (F, C, H, W), Latte's layout."""
        return (self.num_frames, self.in_channels, self.input_size, self.input_size)


# (depth, hidden_size, num_heads, patch_size); depth = spatial + temporal blocks. Latte-XL/2 is the paper's base;
# latte-toy-2 is the embedded video study's (4 + 4 blocks inflated from the dit-tiny-2 image base).
LATTE_ARCHS: dict[str, dict] = {
    "latte-xl-2": dict(depth=28, hidden_size=1152, num_heads=16, patch_size=2),
    "latte-s-2": dict(depth=24, hidden_size=384, num_heads=6, patch_size=2),
    "latte-toy-2": dict(depth=8, hidden_size=64, num_heads=4, patch_size=2, temporal_position="temporal"),
    "latte-micro-2": dict(depth=4, hidden_size=32, num_heads=2, patch_size=2, temporal_position="temporal"),
}
# The image DiT a Latte model's spatial blocks are inflated from (same width, heads, patch; half the depth).
LATTE_IMAGE_BASE = {"latte-xl-2": "dit-xl-2", "latte-s-2": "dit-s-2", "latte-toy-2": "dit-tiny-2",
                    "latte-micro-2": "dit-micro-2"}


def latte_config(name: str, image_size: int = 256, **overrides) -> LatteConfig:
    """Config of a registered Latte model (``image_size`` in pixels, as ``dit_config``)."""
    return _registered(LatteConfig, LATTE_ARCHS, "video model", name, image_size, overrides)


def model_config(name: str, image_size: int = 256, **overrides) -> DiTConfig:
    """The config of any registered model: a DiT (images) or a Latte model (clips)."""
    if name in LATTE_ARCHS:
        return latte_config(name, image_size, **overrides)
    return dit_config(name, image_size, **overrides)


#################################################################################
#                          FlexDiT layout, FlexiDiT choices                     #
#################################################################################

PF_MODES = ("mean_first", "per_token")  # FlexDiT's Poolingformer: cheap exact mean first, or the paper's cost
FLEXIDIT_VARIANTS = ("shared", "lora")
FLEXIDIT_POS_COORDS = ("corner", "centre")
FLEXIDIT_LN_AFFINE = ("all", "final", "none")
FLEXIDIT_TOKENIZERS = ("flexible", "separate")


@dataclass(frozen=True)
class FlexLayout:
    """Segment sizes: ``pf`` Poolingformers, ``sdtms`` x [Sparse-Gen, ``sparse`` sparse blocks, Dense-Rec,
    ``dense`` dense blocks], ``top`` dense blocks. DiT-XL/2 in the paper: 2, 4 x [1, 3, 1, 1], 2."""

    pf: int
    sdtms: int
    sparse: int
    dense: int
    top: int

    def __post_init__(self):
        values = asdict(self)
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values.values()):
            raise InputError(f"flexdit layout counts must be integers >= 0, got {values}")
        if self.sdtms < 1:
            raise InputError(f"flexdit layout needs at least one SDTM, got {values}")

    @property
    def depth(self) -> int:
        return self.pf + self.sdtms * (2 + self.sparse + self.dense) + self.top

    def block_roles(self) -> list[tuple[str, str]]:
        """(FlexDiT module path, role) initialised from DiT ``blocks.i``, in order i = 0..depth-1 (spec section 1.1).

        Roles: ``pf`` (V slice of qkv), ``cross`` (Q / KV slices of qkv), ``self`` (copied verbatim)."""
        roles = [(f"pf_blocks.{i}", "pf") for i in range(self.pf)]
        for k in range(self.sdtms):
            roles.append((f"sdtms.{k}.gen", "cross"))
            roles += [(f"sdtms.{k}.sparse.{j}", "self") for j in range(self.sparse)]
            roles.append((f"sdtms.{k}.rec", "cross"))
            roles += [(f"sdtms.{k}.dense.{j}", "self") for j in range(self.dense)]
        return roles + [(f"top_blocks.{i}", "self") for i in range(self.top)]

    def to_dict(self) -> dict:
        return asdict(self)


def default_layout(depth: int) -> FlexLayout:
    """The DiT-XL layout (2 PF, 4 x [1, 3, 1, 1], 2 top) scaled to ``depth`` (our rule; the paper has none).

    PF = top = max(1, round(depth / 14)) (the paper: 0 PF diverges; at depth 4 a dense top block after Dense-Rec
    is worth ~9 FID after 200 fine-tune steps); the rest forms SDTMs of about 6 blocks (the divisor of the rest
    nearest rest / 6), each Sparse-Gen + Dense-Rec, one dense block when it has >= 4 blocks, sparse blocks for the
    remainder. Below depth 4 the edges go (SDTM first). 28 -> 2 + 4x[1,3,1,1] + 2, 12 -> 1 + 2x[1,2,1,1] + 1,
    4 -> 1 + [1,0,1,0] + 1, 3 -> 1 + [1,0,1,0], 2 -> [1,0,1,0].
    """
    if depth < 2:
        raise InputError(f"flexdit needs depth >= 2 (an SDTM is a Sparse-Gen and a Dense-Rec block), got {depth}")
    pf = top = max(1, math.floor(depth / 14 + 0.5))
    if depth - pf - top < 2:  # too shallow for PF + SDTM + top: keep the SDTM, then PF
        pf, top = depth - 2, 0
    rest = depth - pf - top
    sdtms = min((d for d in range(1, rest // 2 + 1) if rest % d == 0), key=lambda d: (abs(d - rest / 6), -d))
    size = rest // sdtms
    dense = 1 if size >= 4 else 0
    return FlexLayout(pf=pf, sdtms=sdtms, sparse=size - 2 - dense, dense=dense, top=top)
