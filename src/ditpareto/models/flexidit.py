"""FlexiDiT (Anagnostidis et al., CVPR 2025): one DiT run at its pretrained patch size or a coarser "weak" one.

Built from a pretrained DiT by `convert_dit`, function-preserving at the base patch size. Section numbers
(§) refer to the implementation spec's sections, mapped in docs/methods/flexidit.md. Two variants (§1.7):

- ``shared``: one tokenizer kernel and one de-tokenizer of size p' = weak patch size, PI-resized to each patch
  size per call (§1.3-1.4); every DiT weight is shared and fine-tuned. With ``tokenizer="separate"`` each patch
  size has its own conv and head instead, with the same init (the §1.3 alternative; sizes no longer coupled).
- ``lora``: the base path is the frozen pretrained DiT; the weak path adds its own tokenizer, de-tokenizer and
  per-patch-size LoRAs on attention (qkv, proj) and MLP (fc1, fc2) (§1.8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ditpareto.archs import FLEXIDIT_LN_AFFINE, FLEXIDIT_POS_COORDS, FLEXIDIT_TOKENIZERS, FLEXIDIT_VARIANTS
from ditpareto.errors import InputError
from ditpareto.models.dit import (
    DiT,
    DiTBlock,
    LabelEmbedder,
    TimestepEmbedder,
    get_2d_sincos_pos_embed_from_grid,
    modulate,
)
from ditpareto.archs import DiTConfig

# re-exported under the names the method module and the tests use
VARIANTS, POS_COORDS, LN_AFFINE, TOKENIZERS = (FLEXIDIT_VARIANTS, FLEXIDIT_POS_COORDS, FLEXIDIT_LN_AFFINE,
                                               FLEXIDIT_TOKENIZERS)


@dataclass(frozen=True)
class FlexiConfig:
    """A FlexiDiT's shape: the base DiT plus the weak patch size and the architecture switches."""

    base: DiTConfig
    weak_patch_size: int
    variant: str = "shared"
    lora_rank: int = 8
    ln_affine: str = "all"
    pos_coords: str = "corner"
    tokenizer: str = "flexible"  # the LoRA variant needs "separate" (its base conv and head stay frozen)

    def __post_init__(self):
        p, pw, side = self.base.patch_size, self.weak_patch_size, self.base.input_size
        if not isinstance(pw, int) or pw <= p:
            raise InputError(f"weak patch size must be an integer larger than the base patch size {p}, got {pw!r}")
        if side % pw:
            raise InputError(f"weak patch size {pw} does not divide the latent size {side} (base patch {p})")
        for name, value, allowed in (("variant", self.variant, VARIANTS), ("ln_affine", self.ln_affine, LN_AFFINE),
                                     ("pos_coords", self.pos_coords, POS_COORDS),
                                     ("tokenizer", self.tokenizer, TOKENIZERS)):
            if value not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {value!r}")
        if self.variant == "lora" and self.tokenizer != "separate":
            raise InputError("the lora variant keeps the pretrained tokenizer frozen: it needs tokenizer='separate'")
        if self.variant == "lora" and (not isinstance(self.lora_rank, int) or self.lora_rank < 1):
            raise InputError(f"lora_rank must be a positive integer, got {self.lora_rank!r}")

    @property
    def patch_sizes(self) -> tuple[int, int]:
        return self.base.patch_size, self.weak_patch_size

    @property
    def adapted(self) -> tuple[int, ...]:
        """Patch sizes with their own patch-size embedding and LN affine (§1.6): the LoRA variant leaves base alone."""
        return self.patch_sizes if self.variant == "shared" else (self.weak_patch_size,)

    def at(self, patch_size: int) -> DiTConfig:
        """The base config with another patch size (its token count, for FLOPs)."""
        return replace(self.base, patch_size=patch_size)


#################################################################################
#                          PI-resize (FlexiViT) matrices                        #
#################################################################################


def resize_matrix(a: int, b: int) -> torch.Tensor:
    """B_{a->b} (b*b, a*a): bilinear resize of a row-major a x a patch, half-pixel centres, no antialias (§1.3)."""
    basis = torch.eye(a * a, dtype=torch.float64).reshape(a * a, 1, a, a)
    out = F.interpolate(basis, size=(b, b), mode="bilinear", align_corners=False, antialias=False)
    return out.reshape(a * a, b * b).T.contiguous()


def q_embed(p: int, flex: int) -> torch.Tensor:
    """Q_embed(p) = pinv(B_{p'->p}^T), (p*p, p'*p'): maps the flexible kernel to a p x p kernel."""
    return torch.linalg.pinv(resize_matrix(flex, p).T)


def q_deembed(p: int, flex: int) -> torch.Tensor:
    """Q_de(p) = pinv(B_{p->p'}^T), (p'*p', p*p): the de-tokenizer's projection, "flipped" (§1.4)."""
    return torch.linalg.pinv(resize_matrix(p, flex).T)


def coarse_pos_embed(embed_dim: int, grid: int, step: float, coords: str) -> np.ndarray:
    """Sin-cos embedding of a coarse grid at its location in base-patch units (§1.5): cell i sits at i*step
    ("corner", PixArt-style) or at the centre of the base patches it covers, i*step + (step-1)/2 ("centre")."""
    offset = 0.0 if coords == "corner" else (step - 1) / 2
    pos = np.arange(grid, dtype=np.float64) * step + offset
    mesh = np.stack(np.meshgrid(pos, pos), axis=0).reshape(2, 1, grid, grid)  # (w, h) order, as DiT
    return get_2d_sincos_pos_embed_from_grid(embed_dim, mesh)


#################################################################################
#                                    Layers                                     #
#################################################################################


class _ProjectionCache:
    """Projected weights reused while no gradient is needed; keyed on the source tensors' in-place versions."""

    def _cached(self, p: int, sources: tuple[torch.Tensor, ...], project):
        if torch.is_grad_enabled() and any(s.requires_grad for s in sources):
            return project(p)
        key = tuple((s._version, s.data_ptr(), s.dtype, s.device) for s in sources)
        cache = self.__dict__.setdefault("_projection_cache", {})
        hit = cache.get(p)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                cache[p] = (key, project(p))
        return cache[p][1]


class FlexPatchEmbed(nn.Module, _ProjectionCache):
    """Tokenizer at any of its patch sizes: (N, C, H, W) -> (N, (H/p)*(W/p), d)."""

    def __init__(self, config: FlexiConfig):
        super().__init__()
        base, self.flex = config.base, config.weak_patch_size
        self.shared = config.tokenizer == "flexible"
        self.base_patch = base.patch_size
        d, c = base.hidden_size, base.in_channels
        if self.shared:  # one p' x p' kernel (§1.3)
            self.flex_weight = nn.Parameter(torch.zeros(d, c, self.flex, self.flex))
            self.flex_bias = nn.Parameter(torch.zeros(d))
            for p in config.patch_sizes:
                self.register_buffer(f"q_{p}", q_embed(p, self.flex).float(), persistent=False)
        else:  # the pretrained conv (official name) and a new one for the weak size
            self.proj = nn.Conv2d(c, d, kernel_size=base.patch_size, stride=base.patch_size)
            self.proj_weak = nn.Conv2d(c, d, kernel_size=self.flex, stride=self.flex)

    def _project(self, p: int) -> torch.Tensor:
        q = getattr(self, f"q_{p}")
        w = torch.einsum("jk,ock->ocj", q, self.flex_weight.flatten(2))
        return w.reshape(*w.shape[:2], p, p)

    def kernel(self, p: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.shared:
            conv = self.proj if p == self.base_patch else self.proj_weak
            return conv.weight, conv.bias
        return self._cached(p, (self.flex_weight,), self._project), self.flex_bias

    def forward(self, x: torch.Tensor, p: int) -> torch.Tensor:
        weight, bias = self.kernel(p)
        return F.conv2d(x, weight, bias, stride=p).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """From the pretrained (d, C, p, p) conv: w_flex = pinv(Q_embed(p)) w_p, so Q_embed(p) w_flex = w_p."""
        p = weight.shape[-1]
        lift = torch.linalg.pinv(q_embed(p, self.flex))  # (p'^2, p^2); = B_{p'->p}^T
        flex = torch.einsum("kj,ocj->ock", lift, weight.double().flatten(2)).reshape(*weight.shape[:2], self.flex,
                                                                                     self.flex)
        if self.shared:
            self.flex_weight.copy_(flex)
            self.flex_bias.copy_(bias)
        else:  # p' is the weak size, so Q_embed(weak) = I: the weak conv starts at w_flex
            self.proj.weight.copy_(weight)
            self.proj.bias.copy_(bias)
            self.proj_weak.weight.copy_(flex)
            self.proj_weak.bias.copy_(bias)


class PatchAffine(nn.Module):
    """Elementwise affine after `count` non-affine LayerNorms, for one patch size (identity at init, §1.6)."""

    def __init__(self, count: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(count, hidden_size))
        self.bias = nn.Parameter(torch.zeros(count, hidden_size))

    def forward(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return x * self.weight[index] + self.bias[index]


def _modulate(affines: nn.ModuleDict | None, key: str, index: int, x: torch.Tensor, shift: torch.Tensor,
              scale: torch.Tensor) -> torch.Tensor:
    """``modulate(affine(x), shift, scale)`` with the patch size's LN affine folded into adaLN's per-sample scale and
    shift ((x w + b)(1 + s) + t = x [w (1 + s)] + [b (1 + s) + t]): one multiply-add over the tokens, as DiT's
    modulate, instead of two more passes per norm (on a GPU they are memory-bound kernels at every block)."""
    if affines is None or key not in affines:
        return modulate(x, shift, scale)
    affine = affines[key]
    factor = 1 + scale
    return x * (affine.weight[index] * factor).unsqueeze(1) + (affine.bias[index] * factor + shift).unsqueeze(1)


class _Selector:
    """The patch size a forward runs at, shared by every LoRA layer of one model (set once per forward)."""

    key: str | None = None


class LoRALinear(nn.Linear):
    """nn.Linear (official parameter names) plus one low-rank update per adapted patch size (B zero at init)."""

    def __init__(self, linear: nn.Linear, keys: tuple[str, ...], rank: int, selector: _Selector):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        self.selector = selector
        self.lora_down = nn.ModuleDict({k: nn.Linear(self.in_features, rank, bias=False) for k in keys})
        self.lora_up = nn.ModuleDict({k: nn.Linear(rank, self.out_features, bias=False) for k in keys})
        for k in keys:
            nn.init.kaiming_uniform_(self.lora_down[k].weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_up[k].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        key = self.selector.key
        if key in self.lora_down:  # scaling alpha / rank = 1 (our choice)
            out = out + self.lora_up[key](self.lora_down[key](x))
        return out


class FlexiDiTBlock(DiTBlock):
    """DiT block with per-patch-size LN affines (on norm1, norm2) and, in the LoRA variant, LoRA linears."""

    def __init__(self, config: FlexiConfig, selector: _Selector):
        base = config.base
        super().__init__(base.hidden_size, base.num_heads, mlp_ratio=base.mlp_ratio)
        keys = tuple(f"p{p}" for p in config.adapted)
        self.norm_affine = (nn.ModuleDict({k: PatchAffine(2, base.hidden_size) for k in keys})
                            if config.ln_affine == "all" else None)
        if config.variant == "lora":
            for parent, names in ((self.attn, ("qkv", "proj")), (self.mlp, ("fc1", "fc2"))):
                for name in names:
                    setattr(parent, name, LoRALinear(getattr(parent, name), keys, config.lora_rank, selector))

    def forward(self, x: torch.Tensor, c: torch.Tensor, key: str) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        h = _modulate(self.norm_affine, key, 0, self.norm1(x), shift_msa, scale_msa)
        x = x + gate_msa.unsqueeze(1) * self.attn(h)
        h = _modulate(self.norm_affine, key, 1, self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp.unsqueeze(1) * self.mlp(h)


class FlexFinalLayer(nn.Module, _ProjectionCache):
    """Final adaLN (shared) and a de-tokenizer per patch size: tokens -> (N, T, p*p*C_out), (p, q, c) order."""

    def __init__(self, config: FlexiConfig):
        super().__init__()
        base, self.flex = config.base, config.weak_patch_size
        d, self.out_channels = base.hidden_size, base.out_channels
        self.shared = config.tokenizer == "flexible"
        self.base_patch = base.patch_size
        self.norm_final = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d, bias=True))
        keys = tuple(f"p{p}" for p in config.adapted)
        self.norm_affine = (nn.ModuleDict({k: PatchAffine(1, d) for k in keys})
                            if config.ln_affine in ("all", "final") else None)
        width = self.flex * self.flex * self.out_channels
        if self.shared:  # one p' x p' de-tokenizer (§1.4)
            self.flex_weight = nn.Parameter(torch.zeros(width, d))
            self.flex_bias = nn.Parameter(torch.zeros(width))
            for p in config.patch_sizes:
                self.register_buffer(f"q_{p}", q_deembed(p, self.flex).float(), persistent=False)
        else:
            self.linear = nn.Linear(d, base.patch_size**2 * self.out_channels)
            self.linear_weak = nn.Linear(d, width)

    def _project(self, p: int) -> tuple[torch.Tensor, torch.Tensor]:
        q, c = getattr(self, f"q_{p}"), self.out_channels
        w = torch.einsum("kj,kch->jch", q, self.flex_weight.reshape(-1, c, self.flex_weight.shape[1]))
        b = torch.einsum("kj,kc->jc", q, self.flex_bias.reshape(-1, c))
        return w.reshape(-1, w.shape[-1]), b.reshape(-1)

    def head(self, p: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.shared:
            linear = self.linear if p == self.base_patch else self.linear_weak
            return linear.weight, linear.bias
        return self._cached(p, (self.flex_weight, self.flex_bias), self._project)

    def forward(self, x: torch.Tensor, c: torch.Tensor, p: int, key: str) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        h = _modulate(self.norm_affine, key, 0, self.norm_final(x), shift, scale)
        return F.linear(h, *self.head(p))

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """From the pretrained (p*p*C, d) head: W_flex = W_p pinv(Q_de(p)) per channel, so W_flex Q_de(p) = W_p."""
        c = self.out_channels
        p = math.isqrt(weight.shape[0] // c)
        lift = torch.linalg.pinv(q_deembed(p, self.flex))  # (p^2, p'^2); = B_{p->p'}^T
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


#################################################################################
#                                   The model                                   #
#################################################################################


class FlexiDiT(nn.Module):
    """A DiT that runs at ``patch_size`` (its pretrained one) or ``weak_patch_size``; forward(x, t, y, patch_size)."""

    unpatchify = DiT.unpatchify

    def __init__(self, config: FlexiConfig):
        super().__init__()
        base = config.base
        self.config = config
        self.in_channels, self.out_channels = base.in_channels, base.out_channels
        self.patch_size, self.weak_patch_size = config.patch_sizes
        self.num_heads = base.num_heads
        d = base.hidden_size
        self._selector = _Selector()
        self.x_embedder = FlexPatchEmbed(config)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(base.num_classes, d, base.class_dropout_prob)
        # Fixed sin-cos position buffers, stored (as DiT's pos_embed) and checked against the options on load.
        self.register_buffer("pos_embed", self.expected_pos_embed(base.patch_size))
        self.register_buffer("pos_embed_weak", self.expected_pos_embed(self.weak_patch_size))
        self.patch_size_embed = nn.ParameterDict({f"p{p}": nn.Parameter(torch.zeros(d)) for p in config.adapted})
        self.blocks = nn.ModuleList([FlexiDiTBlock(config, self._selector) for _ in range(base.depth)])
        self.final_layer = FlexFinalLayer(config)

    def expected_pos_embed(self, p: int) -> torch.Tensor:
        """(1, T_p, d) position embedding of patch size p at its image location, in base-patch units."""
        step = p / self.patch_size
        grid = self.config.base.input_size // p
        pos = coarse_pos_embed(self.config.base.hidden_size, grid, step, self.config.pos_coords)
        return torch.from_numpy(pos).float().unsqueeze(0)

    def _key(self, p: int) -> str:
        if p not in (self.patch_size, self.weak_patch_size):
            raise ValueError(f"patch size {p} is not one of this model's {self.patch_size, self.weak_patch_size}")
        return f"p{p}"

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, patch_size: int | None = None,
                drop_labels: bool | None = None) -> torch.Tensor:
        """x: (N, C, H, W), t: (N,) timesteps, y: (N,) labels; label dropout defaults to ``self.training``."""
        p = self.patch_size if patch_size is None else patch_size
        key = self._key(p)
        c = self.t_embedder(t) + self.y_embedder(y, self.training if drop_labels is None else drop_labels)
        h = self.x_embedder(x, p) + (self.pos_embed if p == self.patch_size else self.pos_embed_weak)
        if key in self.patch_size_embed:
            h = h + self.patch_size_embed[key]
        self._selector.key = key
        for block in self.blocks:
            h = block(h, c, key)
        return self.unpatchify(self.final_layer(h, c, p, key), p)

    @torch.no_grad()
    def prepare(self) -> None:
        """Precompute the projected tokenizer/de-tokenizer weights of both patch sizes (reused until weights change)."""
        for p in (self.patch_size, self.weak_patch_size):
            self.x_embedder.kernel(p)
            self.final_layer.head(p)

    def weak_io_parameters(self) -> list[nn.Parameter]:
        """The weak path's tokenizer and de-tokenizer: the flexible ones (shared with the base size) or its own."""
        prefixes = ("x_embedder.flex_", "final_layer.flex_", "x_embedder.proj_weak.", "final_layer.linear_weak.")
        return [param for name, param in self.named_parameters() if name.startswith(prefixes)]

    def weak_parameters(self) -> list[nn.Parameter]:
        """What the LoRA variant trains: everything specific to the weak patch size."""
        key = f"p{self.weak_patch_size}"
        return [param for name, param in self.named_parameters()
                if name.startswith(("x_embedder.proj_weak.", "final_layer.linear_weak."))
                or f".{key}." in f".{name}."]


def convert_dit(base: DiT, weak_patch_size: int | None = None, **options) -> FlexiDiT:
    """A FlexiDiT initialised from a pretrained DiT (§6.1): at the base patch size it computes the same function."""
    pw = 2 * base.patch_size if weak_patch_size is None else weak_patch_size
    model = FlexiDiT(FlexiConfig(base.config, pw, **options))
    source = base.state_dict()
    own = {"x_embedder.proj.weight", "x_embedder.proj.bias", "final_layer.linear.weight", "final_layer.linear.bias"}
    shared = {k: v for k, v in source.items() if k not in own}
    _, unexpected = model.load_state_dict(shared, strict=False)  # missing: the new parts, initialised here
    if unexpected:
        raise ValueError(f"base keys without a place in FlexiDiT: {unexpected}")
    model.x_embedder.init_from(source["x_embedder.proj.weight"], source["x_embedder.proj.bias"])
    model.final_layer.init_from(source["final_layer.linear.weight"], source["final_layer.linear.bias"])
    return model
