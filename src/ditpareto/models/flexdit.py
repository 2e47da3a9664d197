"""FlexDiT / SparseDiT (Chang et al., arXiv 2412.06028): Poolingformer bottom, Sparse-Dense Token Modules
(SDTMs) in the middle, dense DiT blocks on top. See docs/methods/flexdit.md.

The network takes the sparse-grid side ``side`` explicitly; the timestep schedule that picks it lives in
``ditpareto.methods.flexdit``. Every block keeps DiT's adaLN-Zero conditioning.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ditpareto.archs import PF_MODES, FlexLayout, default_layout  # noqa: F401  (re-exported)
from ditpareto.errors import InputError
from ditpareto.models.checkpoint import load_into
from ditpareto.models.dit import (
    DiT,
    DiTBlock,
    FinalLayer,
    LabelEmbedder,
    Mlp,
    PatchEmbed,
    TimestepEmbedder,
    get_2d_sincos_pos_embed,
    modulate,
)
from ditpareto.archs import DiTConfig



#################################################################################
#                                  Block types                                  #
#################################################################################


class PoolingMixer(nn.Module):
    """Poolingformer token mixer: W_o(mean_n(W_v h_n)), the same vector for every token (no N x N matrix).

    ``mean_first`` averages h before W_v (mean and linear maps commute; O(NC + C^2)); ``per_token`` projects every
    token first, then averages, and applies W_o to every token (the paper's 10NC^2 cost, without the N x N matrix).
    """

    def __init__(self, dim: int, mode: str = "mean_first"):
        super().__init__()
        if mode not in PF_MODES:
            raise InputError(f"flexdit pf_mode must be one of {PF_MODES}, got {mode!r}")
        self.mode = mode
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean_first":
            return self.proj(self.v(h.mean(dim=1, keepdim=True)))  # (B, 1, C), broadcast by the caller
        return self.proj(self.v(h).mean(dim=1, keepdim=True).expand_as(h))


class CrossAttention(nn.Module):
    """Multi-head attention with queries from one token set and keys/values from another (``q``, ``kv``)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor) -> torch.Tensor:
        b, m, c = xq.shape
        n = xkv.shape[1]
        q = self.q(xq).reshape(b, m, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(xkv).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, m, c))


class _AdaLNBlock(nn.Module):
    """adaLN-Zero skeleton shared by the FlexDiT-specific blocks (norms, MLP, modulation as in DiTBlock)."""

    def __init__(self, hidden_size: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def _mlp_branch(self, x: torch.Tensor, shift, scale, gate) -> torch.Tensor:
        return x + gate.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift, scale))


class PoolingBlock(_AdaLNBlock):
    """Poolingformer: X + g1 * W_o(mean(W_v mod1(X))), then the usual MLP branch (spec section 1.3)."""

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0, mode: str = "mean_first"):
        super().__init__(hidden_size, mlp_ratio)
        self.attn = PoolingMixer(hidden_size, mode)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1))
        return self._mlp_branch(x, sh2, sc2, g2)


class CrossBlock(_AdaLNBlock):
    """Sparse-Gen / Dense-Rec: xq + g1 * MHA(mod1(xq), mod1(xkv)) with the same shift/scale on both, then MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__(hidden_size, mlp_ratio)
        self.attn = CrossAttention(hidden_size, num_heads)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        mixed = self.attn(modulate(self.norm1(xq), sh1, sc1), modulate(self.norm1(xkv), sh1, sc1))
        return self._mlp_branch(xq + g1.unsqueeze(1) * mixed, sh2, sc2, g2)


def to_grid(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, side*side, C) row-major tokens -> (B, C, side, side)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


def to_tokens(grid: torch.Tensor) -> torch.Tensor:
    return grid.flatten(2).transpose(1, 2)


class SDTM(nn.Module):
    """Sparse-Dense Token Module (spec section 1.4): pool to s x s, Sparse-Gen, sparse blocks, Dense-Rec merge
    ``Xm = W1 up(Z) + W2 Xd`` (``merge_sparse`` = W1, zero-initialised; ``merge_dense`` = W2, identity),
    dense blocks."""

    def __init__(self, hidden_size: int, num_heads: int, sparse: int, dense: int, mlp_ratio: float,
                 w1_after_upsample: bool = False):
        super().__init__()
        self.w1_after_upsample = w1_after_upsample
        self.gen = CrossBlock(hidden_size, num_heads, mlp_ratio)
        self.sparse = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(sparse)])
        self.merge_sparse = nn.Linear(hidden_size, hidden_size)
        self.merge_dense = nn.Linear(hidden_size, hidden_size)
        self.rec = CrossBlock(hidden_size, num_heads, mlp_ratio)
        self.dense = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(dense)])

    @staticmethod
    def pool(x: torch.Tensor, grid: int, side: int) -> torch.Tensor:
        """Sparse tokens: the grid x grid dense tokens adaptive-average-pooled to side x side."""
        return to_tokens(F.adaptive_avg_pool2d(to_grid(x, grid), (side, side)))

    def merge(self, x: torch.Tensor, z: torch.Tensor, grid: int, side: int) -> torch.Tensor:
        """Xm = W1 up(Z) + W2 Xd: the Dense-Rec block's queries and residual base."""
        # Nearest upsampling only replicates rows, so W1 before it is identical and costs M C^2 instead of N C^2.
        if self.w1_after_upsample:
            up = to_tokens(F.interpolate(to_grid(z, side), size=(grid, grid), mode="nearest"))
            return self.merge_sparse(up) + self.merge_dense(x)
        up = F.interpolate(to_grid(self.merge_sparse(z), side), size=(grid, grid), mode="nearest")
        return to_tokens(up) + self.merge_dense(x)

    def forward(self, x, c, grid: int, side: int, sparse_pos=None, dense_pos=None) -> torch.Tensor:
        # Sparse tokens are pooled afresh from the current dense tokens in every SDTM (not carried over).
        z = self.pool(x, grid, side)
        if sparse_pos is not None:  # optional ablation (spec section 1.6): re-add sin-cos tables
            z = z + sparse_pos
        z = self.gen(z, x, c)
        for block in self.sparse:
            z = block(z, c)
        merged = self.merge(x, z, grid, side)
        x = self.rec(merged, z, c)  # residual base is the merged tokens; keys/values are the sparse tokens
        if dense_pos is not None:
            x = x + dense_pos
        for block in self.dense:
            x = block(x, c)
        return x


#################################################################################
#                                     Model                                     #
#################################################################################


class FlexDiT(nn.Module):
    """FlexDiT network; embedders, ``pos_embed`` and ``final_layer`` keep DiT's names and shapes."""

    def __init__(self, config: DiTConfig, layout: FlexLayout | None = None, *, stages: int = 4,
                 pf_mode: str = "mean_first", w1_after_upsample: bool = False, pos_reinject: bool = False):
        super().__init__()
        layout = layout or default_layout(config.depth)
        if layout.depth != config.depth:
            raise InputError(
                f"flexdit layout {layout.to_dict()} has {layout.depth} blocks, the base DiT has {config.depth}"
            )
        if stages < 1:
            raise InputError(f"flexdit needs at least one density stage, got {stages}")
        self.config, self.layout, self.stages = config, layout, stages
        self.pf_mode, self.w1_after_upsample, self.pos_reinject = pf_mode, w1_after_upsample, pos_reinject
        self.in_channels, self.out_channels = config.in_channels, config.out_channels
        self.patch_size = config.patch_size
        hidden, heads, ratio = config.hidden_size, config.num_heads, config.mlp_ratio
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(config.num_classes, hidden, config.class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, hidden), requires_grad=False)
        self.pf_blocks = nn.ModuleList([PoolingBlock(hidden, ratio, pf_mode) for _ in range(layout.pf)])
        self.sdtms = nn.ModuleList([
            SDTM(hidden, heads, layout.sparse, layout.dense, ratio, w1_after_upsample) for _ in range(layout.sdtms)
        ])
        self.top_blocks = nn.ModuleList([DiTBlock(hidden, heads, ratio) for _ in range(layout.top)])
        self.final_layer = FinalLayer(hidden, config.patch_size, self.out_channels)
        pos = get_2d_sincos_pos_embed(hidden, config.grid_size)
        self.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    def check_side(self, side: int) -> int:
        """``side`` as an int, or InputError when the sparse grid is empty or larger than the dense token grid."""
        if isinstance(side, bool) or int(side) != side or not 1 <= side <= self.grid_size:
            raise InputError(
                f"flexdit sparse grid {side}x{side} does not fit the dense token grid "
                f"{self.grid_size}x{self.grid_size}: the side must be an integer in [1, {self.grid_size}]"
            )
        return int(side)

    def _sparse_pos(self, side: int, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(get_2d_sincos_pos_embed(like.shape[-1], side)).to(like).unsqueeze(0)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, side: int) -> torch.Tensor:
        """x: (B, C, H, W), t: (B,) model timesteps, y: (B,) labels, side: sparse grid side of every SDTM."""
        side = self.check_side(side)
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        x = self.x_embedder(x) + self.pos_embed
        for block in self.pf_blocks:
            x = block(x, c)
        sparse_pos = self._sparse_pos(side, x) if self.pos_reinject else None
        dense_pos = self.pos_embed if self.pos_reinject else None
        for module in self.sdtms:
            x = module(x, c, self.grid_size, side, sparse_pos, dense_pos)
        for block in self.top_blocks:
            x = block(x, c)
        return DiT.unpatchify(self, self.final_layer(x, c))


#################################################################################
#                       Conversion from a pretrained DiT                        #
#################################################################################


def converted_state(base_state: dict[str, torch.Tensor], layout: FlexLayout, hidden: int) -> dict[str, torch.Tensor]:
    """FlexDiT state dict from a DiT state dict (spec section 6): DiT ``blocks.i`` -> ``layout.block_roles()[i]``.

    PF: v <- qkv[2C:3C], proj copied, Q/K dropped. Sparse-Gen / Dense-Rec: q <- qkv[0:C], kv <- qkv[C:3C].
    Other blocks, embedders and the final layer: copied. Merge: W1 = 0 (weight, bias), W2 = I (bias 0).
    """
    c = hidden
    out = {k: v.clone() for k, v in base_state.items() if not k.startswith("blocks.")}
    for i, (path, role) in enumerate(layout.block_roles()):
        src = {k[len(f"blocks.{i}."):]: v for k, v in base_state.items() if k.startswith(f"blocks.{i}.")}
        w, b = src.pop("attn.qkv.weight"), src.pop("attn.qkv.bias")
        for name, tensor in src.items():  # mlp, adaLN_modulation, attn.proj
            out[f"{path}.{name}"] = tensor.clone()
        if role == "self":
            out[f"{path}.attn.qkv.weight"], out[f"{path}.attn.qkv.bias"] = w.clone(), b.clone()
        elif role == "pf":
            out[f"{path}.attn.v.weight"], out[f"{path}.attn.v.bias"] = w[2 * c:].clone(), b[2 * c:].clone()
        else:
            out[f"{path}.attn.q.weight"], out[f"{path}.attn.q.bias"] = w[:c].clone(), b[:c].clone()
            out[f"{path}.attn.kv.weight"], out[f"{path}.attn.kv.bias"] = w[c:].clone(), b[c:].clone()
    for k in range(layout.sdtms):
        out[f"sdtms.{k}.merge_sparse.weight"] = torch.zeros(c, c)
        out[f"sdtms.{k}.merge_sparse.bias"] = torch.zeros(c)
        out[f"sdtms.{k}.merge_dense.weight"] = torch.eye(c)
        out[f"sdtms.{k}.merge_dense.bias"] = torch.zeros(c)
    return out


def flexdit_from_dit(base: DiT, layout: FlexLayout | None = None, **kwargs) -> FlexDiT:
    """A FlexDiT initialised from a pretrained DiT; every key is filled and shape-checked (load_into)."""
    model = FlexDiT(base.config, layout, **kwargs)
    state = converted_state(base.state_dict(), model.layout, base.config.hidden_size)
    return load_into(model, state, what=f"FlexDiT {model.layout.to_dict()} converted from DiT")


__all__ = [
    "PF_MODES", "FlexDiT", "FlexLayout", "default_layout", "converted_state", "flexdit_from_dit",
]
