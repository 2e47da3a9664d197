"""FlexiDiT on video: a Latte model run at its pretrained patch (1 frame x p x p) or a spatio-temporal weak one,
(2, p, p) (the spatial kernel spread over two frames) or (1, 2p, 2p), as the FlexiDiT paper's video model does.

The image FlexiDiT's parts carry over (``models/flexidit.py``): the blocks (per-patch LN affines, LoRA), the
PI-resize of the flexible tokenizer and de-tokenizer, coarse position embeddings; here the resize is separable,
time x space (the Kronecker product of FlexiViT's 1-D and 2-D matrices). ``convert_latte`` is function-preserving
at the base patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ditpareto.archs import LatteConfig
from ditpareto.errors import InputError
from ditpareto.models.dit import LabelEmbedder, TimestepEmbedder, get_1d_sincos_pos_embed_from_grid
from ditpareto.models.flexidit import (
    LN_AFFINE, POS_COORDS, TOKENIZERS, VARIANTS, FlexiDiTBlock, PatchAffine, _modulate, _ProjectionCache,
    _Selector, coarse_pos_embed, q_deembed, q_embed,
)
from ditpareto.models.latte import Latte

Patch = tuple[int, int]  # (frames per token, spatial side)


def patch_name(patch: Patch) -> str:
    """'1x2x2' for (1, 2): frames x height x width of a token."""
    return f"{patch[0]}x{patch[1]}x{patch[1]}"


def patch_key(patch: Patch) -> str:
    """The key of a patch's own parameters (LN affines, patch embedding, LoRA), as the image FlexiDiT's 'p2'."""
    return f"p{patch_name(patch)}"


def resize_matrix_1d(a: int, b: int) -> torch.Tensor:
    """B_{a->b} (b, a): linear resize of a length-a signal, half-sample centres (FlexiViT's, in one dimension)."""
    basis = torch.eye(a, dtype=torch.float64).reshape(a, 1, a)
    out = F.interpolate(basis, size=b, mode="linear", align_corners=False)
    return out.reshape(a, b).T.contiguous()


def q_embed_3d(patch: Patch, flex: Patch) -> torch.Tensor:
    """Q_embed of a (t, s, s) patch from the (T, S, S) flexible kernel: kron(time, space), (t s^2, T S^2)."""
    time = torch.linalg.pinv(resize_matrix_1d(flex[0], patch[0]).T)
    return torch.kron(time, q_embed(patch[1], flex[1]))


def q_deembed_3d(patch: Patch, flex: Patch) -> torch.Tensor:
    """Q_de of a (t, s, s) patch: kron(time, space), (T S^2, t s^2)."""
    time = torch.linalg.pinv(resize_matrix_1d(patch[0], flex[0]).T)
    return torch.kron(time, q_deembed(patch[1], flex[1]))


@dataclass(frozen=True)
class FlexiLatteConfig:
    """A FlexiDiT video model's shape: the Latte base, the weak patch and the image FlexiDiT's switches."""

    base: LatteConfig
    weak: Patch
    variant: str = "shared"
    lora_rank: int = 8
    ln_affine: str = "all"
    pos_coords: str = "corner"
    tokenizer: str = "flexible"

    def __post_init__(self):
        p, (t, s) = self.base.patch_size, self.weak
        if (t, s) not in ((2, p), (1, 2 * p)):
            raise InputError(f"a video weak patch is (2, {p}, {p}) or (1, {2 * p}, {2 * p}), got ({t}, {s}, {s})")
        if self.base.num_frames % t or self.base.input_size % s:
            raise InputError(f"weak patch ({t}, {s}, {s}) does not divide {self.base.num_frames} frames of "
                             f"{self.base.input_size} x {self.base.input_size}")
        for name, value, allowed in (("variant", self.variant, VARIANTS), ("ln_affine", self.ln_affine, LN_AFFINE),
                                     ("pos_coords", self.pos_coords, POS_COORDS),
                                     ("tokenizer", self.tokenizer, TOKENIZERS)):
            if value not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {value!r}")
        if self.variant == "lora" and self.tokenizer != "separate":
            raise InputError("the lora variant keeps the pretrained tokenizer frozen: it needs tokenizer='separate'")

    @property
    def patch_sizes(self) -> tuple[Patch, Patch]:
        return (1, self.base.patch_size), self.weak

    @property
    def weak_patch_size(self) -> Patch:
        return self.weak

    def at(self, patch: Patch) -> LatteConfig:
        """A Latte config whose closed-form MACs are this model's at ``patch``: F/t frame groups of (H/s)^2 tokens,
        the tokenizer and head t times as wide (as t x C input channels)."""
        t, s = patch
        return replace(self.base, num_frames=self.base.num_frames // t, patch_size=s,
                       in_channels=self.base.in_channels * t)

    @property
    def flex(self) -> Patch:
        """The flexible kernel's shape: the largest patch in time and in space."""
        return max(p[0] for p in self.patch_sizes), max(p[1] for p in self.patch_sizes)

    @property
    def adapted(self) -> tuple[str, ...]:
        """Patches with their own patch embedding and LN affine (the LoRA variant leaves the base alone), named as
        the image FlexiDiT's blocks name patch sizes (their keys: 'p' + name)."""
        names = tuple(patch_name(p) for p in self.patch_sizes)
        return names if self.variant == "shared" else names[1:]


class FlexPatchEmbed3D(nn.Module, _ProjectionCache):
    """Tokenizer at either patch: (N, C, F, H, W) -> (N, d, F/t, H/s, W/s)."""

    def __init__(self, config: FlexiLatteConfig):
        super().__init__()
        base, self.flex = config.base, config.flex
        self.shared = config.tokenizer == "flexible"
        d, c = base.hidden_size, base.in_channels
        if self.shared:
            self.flex_weight = nn.Parameter(torch.zeros(d, c, self.flex[0], self.flex[1], self.flex[1]))
            self.flex_bias = nn.Parameter(torch.zeros(d))
            for patch in config.patch_sizes:
                self.register_buffer(f"q_{patch_name(patch)}", q_embed_3d(patch, self.flex).float(),
                                     persistent=False)
        else:  # the pretrained per-frame conv (official name) and a new one for the weak patch
            self.proj = nn.Conv2d(c, d, kernel_size=base.patch_size, stride=base.patch_size)
            self.proj_weak = nn.Conv3d(c, d, kernel_size=(config.weak[0], config.weak[1], config.weak[1]),
                                       stride=(config.weak[0], config.weak[1], config.weak[1]))
        self.base_patch = (1, base.patch_size)

    def _project(self, patch: Patch) -> torch.Tensor:
        t, s = patch
        w = torch.einsum("jk,ock->ocj", getattr(self, f"q_{patch_name(patch)}"), self.flex_weight.flatten(2))
        return w.reshape(*w.shape[:2], t, s, s)

    def kernel(self, patch: Patch) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.shared:
            if patch == self.base_patch:
                return self.proj.weight.unsqueeze(2), self.proj.bias
            return self.proj_weak.weight, self.proj_weak.bias
        return self._cached(tuple(patch), (self.flex_weight,), self._project), self.flex_bias

    def forward(self, x: torch.Tensor, patch: Patch) -> torch.Tensor:
        weight, bias = self.kernel(patch)
        return F.conv3d(x, weight, bias, stride=(patch[0], patch[1], patch[1]))

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """From the pretrained per-frame (d, C, p, p) conv: w_flex = pinv(Q_embed(1, p)) w_p."""
        p = weight.shape[-1]
        lift = torch.linalg.pinv(q_embed_3d((1, p), self.flex))
        flex = torch.einsum("kj,ocj->ock", lift, weight.double().flatten(2))
        flex = flex.reshape(*weight.shape[:2], self.flex[0], self.flex[1], self.flex[1])
        if self.shared:
            self.flex_weight.copy_(flex)
            self.flex_bias.copy_(bias)
        else:  # the weak conv starts at w_flex (Q_embed of the weak patch is the identity)
            self.proj.weight.copy_(weight)
            self.proj.bias.copy_(bias)
            self.proj_weak.weight.copy_(flex)
            self.proj_weak.bias.copy_(bias)


class FlexFinalLayer3D(nn.Module, _ProjectionCache):
    """Final adaLN (shared) and a de-tokenizer per patch: tokens -> (.., t*s*s*C_out) in (t, p, q, c) order."""

    def __init__(self, config: FlexiLatteConfig):
        super().__init__()
        base, self.flex = config.base, config.flex
        d, self.out_channels = base.hidden_size, base.out_channels
        self.shared = config.tokenizer == "flexible"
        self.base_patch = (1, base.patch_size)
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d, bias=True))
        self.norm_affine = (nn.ModuleDict({f"p{name}": PatchAffine(1, d) for name in config.adapted})
                            if config.ln_affine in ("all", "final") else None)
        width = self.flex[0] * self.flex[1] ** 2 * self.out_channels
        if self.shared:
            self.flex_weight = nn.Parameter(torch.zeros(width, d))
            self.flex_bias = nn.Parameter(torch.zeros(width))
            for patch in config.patch_sizes:
                self.register_buffer(f"q_{patch_name(patch)}", q_deembed_3d(patch, self.flex).float(),
                                     persistent=False)
        else:
            self.linear = nn.Linear(d, base.patch_size**2 * self.out_channels)
            self.linear_weak = nn.Linear(d, config.weak[0] * config.weak[1] ** 2 * self.out_channels)

    def _project(self, patch: Patch) -> tuple[torch.Tensor, torch.Tensor]:
        q, c = getattr(self, f"q_{patch_name(patch)}"), self.out_channels
        w = torch.einsum("kj,kch->jch", q, self.flex_weight.reshape(-1, c, self.flex_weight.shape[1]))
        b = torch.einsum("kj,kc->jc", q, self.flex_bias.reshape(-1, c))
        return w.reshape(-1, w.shape[-1]), b.reshape(-1)

    def head(self, patch: Patch) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.shared:
            linear = self.linear if patch == self.base_patch else self.linear_weak
            return linear.weight, linear.bias
        return self._cached(tuple(patch), (self.flex_weight, self.flex_bias), self._project)

    def forward(self, x: torch.Tensor, c: torch.Tensor, patch: Patch) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        h = _modulate(self.norm_affine, patch_key(patch), 0, self.norm_final(x), shift, scale)
        return F.linear(h, *self.head(patch))

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """From the pretrained (p*p*C, d) head: W_flex = W_p pinv(Q_de(1, p)) per channel."""
        c = self.out_channels
        p = math.isqrt(weight.shape[0] // c)
        lift = torch.linalg.pinv(q_deembed_3d((1, p), self.flex))
        w = torch.einsum("jk,jch->kch", lift, weight.double().reshape(p * p, c, -1)).reshape(-1, weight.shape[1])
        b = torch.einsum("jk,jc->kc", lift, bias.double().reshape(p * p, c)).reshape(-1)
        if self.shared:
            self.flex_weight.copy_(w)
            self.flex_bias.copy_(b)
        else:
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
            self.linear_weak.weight.copy_(w)
            self.linear_weak.bias.copy_(b)


class FlexiTemporalBlock(FlexiDiTBlock):
    """A FlexiDiT block over the frame groups at one location; ``position`` as in ``latte.TemporalBlock``."""

    def forward(self, x: torch.Tensor, c: torch.Tensor, key: str, position: torch.Tensor | None = None):
        if position is None:
            return super().forward(x, c, key)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        h = _modulate(self.norm_affine, key, 0, self.norm1(x + position), shift_msa, scale_msa)
        x = x + gate_msa.unsqueeze(1) * self.attn(h)
        h = _modulate(self.norm_affine, key, 1, self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp.unsqueeze(1) * self.mlp(h)


class FlexiLatte(nn.Module):
    """A Latte model that runs at ``patch_size`` (1, p) or ``weak_patch_size``: forward(x, t, y, patch_size)."""

    def __init__(self, config: FlexiLatteConfig):
        super().__init__()
        base = config.base
        self.config = config
        self.in_channels, self.out_channels = base.in_channels, base.out_channels
        self.patch_size, self.weak_patch_size = config.patch_sizes
        self.num_heads = base.num_heads
        d = base.hidden_size
        self._selector = _Selector()
        self.x_embedder = FlexPatchEmbed3D(config)
        self.t_embedder = TimestepEmbedder(d)
        if base.num_classes > 0:
            self.y_embedder = LabelEmbedder(base.num_classes, d, base.class_dropout_prob)
        self.register_buffer("pos_embed", self.expected_pos_embed(self.patch_size)[0])
        self.register_buffer("temp_embed", self.expected_pos_embed(self.patch_size)[1])
        self.register_buffer("pos_embed_weak", self.expected_pos_embed(self.weak_patch_size)[0])
        self.register_buffer("temp_embed_weak", self.expected_pos_embed(self.weak_patch_size)[1])
        self.patch_size_embed = nn.ParameterDict({f"p{name}": nn.Parameter(torch.zeros(d)) for name in config.adapted})
        self.blocks = nn.ModuleList([(FlexiTemporalBlock if i % 2 else FlexiDiTBlock)(config, self._selector)
                                     for i in range(base.depth)])
        self.final_layer = FlexFinalLayer3D(config)

    @property
    def conditional(self) -> bool:
        return self.config.base.num_classes > 0

    def expected_pos_embed(self, patch: Patch) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, T', d) spatial and (1, F', d) frame embeddings of a patch at its location, in base units."""
        base = self.config.base
        t, s = patch
        spatial = coarse_pos_embed(base.hidden_size, base.input_size // s, s / base.patch_size,
                                   self.config.pos_coords)
        offset = 0.0 if self.config.pos_coords == "corner" else (t - 1) / 2
        frames = np.arange(base.num_frames // t, dtype=np.float64) * t + offset
        temporal = get_1d_sincos_pos_embed_from_grid(base.hidden_size, frames)
        return (torch.from_numpy(spatial).float().unsqueeze(0), torch.from_numpy(temporal).float().unsqueeze(0))

    def _key(self, patch) -> str:
        patch = tuple(patch)
        if patch not in (self.patch_size, self.weak_patch_size):
            raise ValueError(f"patch {patch} is not one of this model's {self.patch_size, self.weak_patch_size}")
        return patch_key(patch)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, patch_size=None,
                drop_labels: bool | None = None) -> torch.Tensor:
        """x: (N, F, C, H, W) clips, t: (N,) timesteps, y: (N,) labels; ``patch_size`` (frames, side)."""
        patch = self.patch_size if patch_size is None else tuple(patch_size)
        key = self._key(patch)
        base = self.config.base
        n, f = x.shape[:2]
        c = self.t_embedder(t)
        if self.conditional:
            c = c + self.y_embedder(y, self.training if drop_labels is None else drop_labels)
        weak = patch != self.patch_size
        h = self.x_embedder(x.transpose(1, 2), patch)  # (N, d, F', H', W')
        groups, tokens = h.shape[2], h.shape[3] * h.shape[4]
        h = h.flatten(3).permute(0, 2, 3, 1).reshape(n * groups, tokens, -1)
        h = h + (self.pos_embed_weak if weak else self.pos_embed)
        if key in self.patch_size_embed:
            h = h + self.patch_size_embed[key]
        temporal = self.temp_embed_weak if weak else self.temp_embed
        spatial_c, temporal_c = c.repeat_interleave(groups, dim=0), c.repeat_interleave(tokens, dim=0)
        in_stream = base.temporal_position == "stream"
        self._selector.key = key
        for i in range(0, len(self.blocks), 2):
            h = self.blocks[i](h, spatial_c, key)
            h = h.reshape(n, groups, tokens, -1).transpose(1, 2).reshape(n * tokens, groups, -1)
            if in_stream and i == 0:
                h = h + temporal
            h = self.blocks[i + 1](h, temporal_c, key, None if in_stream else temporal[0])
            h = h.reshape(n, tokens, groups, -1).transpose(1, 2).reshape(n * groups, tokens, -1)
        out = self.final_layer(h, spatial_c, patch)  # (N*F', T', t*s*s*C)
        pt, ps = patch
        side = base.input_size // ps
        out = out.reshape(n, groups, side, side, pt, ps, ps, self.out_channels)
        out = torch.einsum("ngxytpqc->ngtcxpyq", out)
        return out.reshape(n, f, self.out_channels, base.input_size, base.input_size)

    @torch.no_grad()
    def prepare(self) -> None:
        for patch in (self.patch_size, self.weak_patch_size):
            self.x_embedder.kernel(patch)
            self.final_layer.head(patch)

    def weak_io_parameters(self) -> list[nn.Parameter]:
        prefixes = ("x_embedder.flex_", "final_layer.flex_", "x_embedder.proj_weak.", "final_layer.linear_weak.")
        return [param for name, param in self.named_parameters() if name.startswith(prefixes)]

    def weak_parameters(self) -> list[nn.Parameter]:
        key = patch_key(self.weak_patch_size)
        return [param for name, param in self.named_parameters()
                if name.startswith(("x_embedder.proj_weak.", "final_layer.linear_weak.")) or f".{key}." in f".{name}."]


def convert_latte(base: Latte, weak: Patch, **options) -> FlexiLatte:
    """A FlexiLatte initialised from a pretrained Latte: at the base patch it computes the same function."""
    model = FlexiLatte(FlexiLatteConfig(base.config, tuple(weak), **options))
    source = base.state_dict()
    own = {"x_embedder.proj.weight", "x_embedder.proj.bias", "final_layer.linear.weight", "final_layer.linear.bias",
           "pos_embed", "temp_embed"}
    shared = {k: v for k, v in source.items() if k not in own}
    _, unexpected = model.load_state_dict(shared, strict=False)
    if unexpected:
        raise ValueError(f"base keys without a place in FlexiLatte: {unexpected}")
    model.x_embedder.init_from(source["x_embedder.proj.weight"], source["x_embedder.proj.bias"])
    model.final_layer.init_from(source["final_layer.linear.weight"], source["final_layer.linear.bias"])
    return model
