"""FlexDiT on video: a Latte model with a Poolingformer bottom, SDTMs on per-frame s x s sparse grids and a dense
top. This is the design note's "FlexDiT: Poolingformer bottom, SDTMs with per-frame s x s sparse grids (temporal
blocks inside an SDTM run on the pooled locations), dense top". See docs/methods/flexdit.md, "On video".

The image FlexDiT's parts are imported, not copied (``models/flexdit.py``): ``PoolingBlock``, ``CrossBlock``, the
``SDTM`` (pooling, Sparse-Gen, merge, Dense-Rec), ``FlexLayout`` / ``default_layout`` and ``converted_state``.
The sparse side ``side`` is an argument of ``forward``, as for images. The density schedule over the denoising
stages lives in ``ditpareto.methods.flexdit`` and is the image one. Latte's own parts are imported too:
``TemporalBlock``, the frame embedding and its two placements, and ``unpatchify``.

**Mapping (our choice; the spec calls its video mapping UNVERIFIED).** A Latte model of depth 2P is P block pairs
(spatial ``blocks.2i``, temporal ``blocks.2i+1``). The layout is ``default_layout(P)``, i.e. the image rule
applied to the pairs (``FlexLayout``). Pair i takes the i-th role of ``layout.block_roles()``, as DiT block i
does for images. The spatial block becomes that role's block, initialised from ``blocks.2i`` exactly as the
image conversion does. The temporal block is copied verbatim from ``blocks.2i+1`` and runs across the frames on
the tokens that the spatial block has just produced:
- **PF pair:** a Poolingformer per frame (the mean over that frame's tokens), then a dense temporal block at all
  T locations.
- **SDTM:** every frame is pooled to its own s x s grid (Z: F frames x M = s^2 tokens).
  - Sparse-Gen pair: Sparse-Gen per frame (queries from the frame's Z, keys and values from its T dense tokens),
    then its temporal block on the M pooled locations.
  - Sparse pairs: spatial attention among the frame's M tokens, then the temporal block on the M locations
    (M sequences of F frames).
  - Dense-Rec pair: the merge Xm = W1 up(Z) + W2 Xd per frame, then Dense-Rec per frame (queries from Xm, keys
    and values from the frame's M sparse tokens). Its temporal block follows on all T locations.
  - Dense pairs: dense.
- **Top pairs:** dense.

Per SDTM, 1 + ``sparse`` temporal blocks therefore run on M locations and 1 + ``dense`` on T. Latte-XL/2 has
14 pairs, giving 1 PF + 2 x [1, 3, 1, 1] + 1 top. The spec's suggestion of a PF(spatial) + dense temporal pair
first and a dense last pair is what this mapping produces. The toy base latte-toy-2 (4 pairs) gives
1 + [1, 0, 1, 0] + 1, and latte-micro-2 (2 pairs) gives [1, 0, 1, 0].

**Frame embedding.** With ``temporal_position="temporal"``, the frame table goes into every temporal attention's
input, at any location count. With ``"stream"`` (official Latte), it is added once to the stream after the first
spatial block. When that block is a Sparse-Gen, it is added to both of its outputs: the sparse tokens and the
SDTM's dense skip, which is what the merge reads.

**Invariants at conversion** (tests/test_flexlatte.py; the image ones, against the Latte base):
- a PF pair's spatial block is the base spatial block with a uniform attention matrix within each frame;
- at s = grid, Sparse-Gen is the base spatial block, and a temporal block on the pooled locations is the base
  temporal block;
- the whole model is the Latte base's own blocks re-routed as above, at every side;
- a Latte inflated from an image DiT converts to the image FlexDiT on every frame.

As for images, the converted model is not the Latte base: the fine-tune is required.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ditpareto.archs import FlexLayout, LatteConfig, default_layout
from ditpareto.errors import InputError
from ditpareto.models.checkpoint import load_into
from ditpareto.models.dit import (
    DiTBlock, FinalLayer, get_2d_sincos_pos_embed,
)
from ditpareto.models.flexdit import SDTM, FlexDiT, PoolingBlock, converted_state
from ditpareto.models.latte import Latte, TemporalBlock, add_latte_embedders, temporal_sincos_embed


def temporal_path(path: str) -> str:
    """Where a spatial role's partner temporal block lives: 'pf_blocks.0' -> 'pf_temporal.0', 'sdtms.1.gen' ->
    'sdtms.1.gen_temporal', 'sdtms.1.sparse.2' -> 'sdtms.1.sparse_temporal.2', 'top_blocks.0' -> 'top_temporal.0'."""
    parts = path.split(".")
    if parts[0] == "sdtms":
        return ".".join([parts[0], parts[1], parts[2] + "_temporal", *parts[3:]])
    return ".".join([{"pf_blocks": "pf_temporal", "top_blocks": "top_temporal"}[parts[0]], *parts[1:]])


class _Clip:
    """One forward's clip bookkeeping: batch n, frames f, the conditioning per frame and per location, and the
    frame embedding (``temporal``: into each temporal attention; ``stream``: once, after the first spatial block)."""

    def __init__(self, n: int, f: int, c: torch.Tensor, temp_embed: torch.Tensor, stream: bool):
        self.n, self.f, self.c = n, f, c
        self.spatial_c = c.repeat_interleave(f, dim=0)  # (n*f, D): one row per frame
        self.temp_embed = temp_embed  # (1, f, D)
        self.stream, self.pending = stream, stream

    def temporal(self, block: TemporalBlock, h: torch.Tensor) -> torch.Tensor:
        """``block`` across the frames at each of h's L locations: (n*f, L, D) -> (n*f, L, D)."""
        n, f, length = self.n, self.f, h.shape[1]
        h = h.reshape(n, f, length, -1).transpose(1, 2).reshape(n * length, f, -1)
        position = None if self.stream else self.temp_embed[0]
        h = block(h, self.c.repeat_interleave(length, dim=0), position)
        return h.reshape(n, length, f, -1).transpose(1, 2).reshape(n * f, length, -1)

    def after_first_spatial(self, *tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The stream placement: the frame table added to every token of each (n*f, L, D) tensor, once per
        forward; afterwards (and for the temporal placement) the tokens unchanged."""
        if not self.pending:
            return tokens
        self.pending = False
        table = self.temp_embed[0][None, :, None, :]
        return tuple((h.reshape(self.n, self.f, h.shape[1], -1) + table).reshape(h.shape) for h in tokens)


class VideoSDTM(SDTM):
    """An SDTM on clips: the image SDTM's blocks per frame (pooled to a per-frame s x s grid), each followed by its
    Latte temporal block; those between Sparse-Gen and Dense-Rec run on the M pooled locations."""

    def __init__(self, hidden_size: int, num_heads: int, sparse: int, dense: int, mlp_ratio: float,
                 w1_after_upsample: bool = False):
        super().__init__(hidden_size, num_heads, sparse, dense, mlp_ratio, w1_after_upsample)
        self.gen_temporal = TemporalBlock(hidden_size, num_heads, mlp_ratio)
        self.sparse_temporal = nn.ModuleList([TemporalBlock(hidden_size, num_heads, mlp_ratio) for _ in range(sparse)])
        self.rec_temporal = TemporalBlock(hidden_size, num_heads, mlp_ratio)
        self.dense_temporal = nn.ModuleList([TemporalBlock(hidden_size, num_heads, mlp_ratio) for _ in range(dense)])

    def forward(self, x, clip: _Clip, grid: int, side: int, sparse_pos=None, dense_pos=None) -> torch.Tensor:
        """x: (n*f, T, D) dense tokens of every frame -> the same."""
        c = clip.spatial_c
        z = self.pool(x, grid, side)  # (n*f, M, D): each frame pooled afresh
        if sparse_pos is not None:
            z = z + sparse_pos
        z = self.gen(z, x, c)
        z, x = clip.after_first_spatial(z, x)
        z = clip.temporal(self.gen_temporal, z)  # on the M pooled locations
        for block, temporal in zip(self.sparse, self.sparse_temporal):
            z = clip.temporal(temporal, block(z, c))
        x = self.rec(self.merge(x, z, grid, side), z, c)
        if dense_pos is not None:
            x = x + dense_pos
        x = clip.temporal(self.rec_temporal, x)  # dense again: all T locations
        for block, temporal in zip(self.dense, self.dense_temporal):
            x = clip.temporal(temporal, block(x, c))
        return x


#################################################################################
#                                     Model                                     #
#################################################################################


class FlexLatte(nn.Module):
    """FlexDiT on a Latte base: x (N, F, C, H, W) -> (N, F, out_channels, H, W) at sparse side ``side``.
    Embedders, ``pos_embed``, ``temp_embed`` and ``final_layer`` keep Latte's names and shapes."""

    def __init__(self, config: LatteConfig, layout: FlexLayout | None = None, *, stages: int = 4,
                 pf_mode: str = "mean_first", w1_after_upsample: bool = False, pos_reinject: bool = False):
        super().__init__()
        pairs = config.spatial_depth
        layout = layout or default_layout(pairs)
        if layout.depth != pairs:
            raise InputError(f"flexdit layout {layout.to_dict()} has {layout.depth} block pairs, the base Latte has "
                             f"{pairs} (spatial + temporal)")
        if stages < 1:
            raise InputError(f"flexdit needs at least one density stage, got {stages}")
        self.config, self.layout, self.stages = config, layout, stages
        self.pf_mode, self.w1_after_upsample, self.pos_reinject = pf_mode, w1_after_upsample, pos_reinject
        self.in_channels, self.out_channels = config.in_channels, config.out_channels
        self.patch_size, self.num_heads = config.patch_size, config.num_heads
        hidden, heads, ratio = config.hidden_size, config.num_heads, config.mlp_ratio
        add_latte_embedders(self, config)
        self.pf_blocks = nn.ModuleList([PoolingBlock(hidden, ratio, pf_mode) for _ in range(layout.pf)])
        self.pf_temporal = nn.ModuleList([TemporalBlock(hidden, heads, ratio) for _ in range(layout.pf)])
        self.sdtms = nn.ModuleList([VideoSDTM(hidden, heads, layout.sparse, layout.dense, ratio, w1_after_upsample)
                                    for _ in range(layout.sdtms)])
        self.top_blocks = nn.ModuleList([DiTBlock(hidden, heads, ratio) for _ in range(layout.top)])
        self.top_temporal = nn.ModuleList([TemporalBlock(hidden, heads, ratio) for _ in range(layout.top)])
        self.final_layer = FinalLayer(hidden, config.patch_size, self.out_channels)
        self.pos_embed.data.copy_(torch.from_numpy(get_2d_sincos_pos_embed(hidden, config.grid_size)).float()[None])
        self.temp_embed.data.copy_(torch.from_numpy(temporal_sincos_embed(hidden, config.num_frames)).float()[None])

    # shared with the image FlexDiT and with Latte
    grid_size = FlexDiT.grid_size
    check_side = FlexDiT.check_side
    _sparse_pos = FlexDiT._sparse_pos
    conditional = Latte.conditional
    condition = Latte.condition
    unpatchify = Latte.unpatchify

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, side: int) -> torch.Tensor:
        """x: (N, F, C, H, W) clips, t: (N,) model timesteps, y: (N,) labels (ignored when unconditional), side:
        the per-frame sparse grid side of every SDTM."""
        side = self.check_side(side)
        n, f = x.shape[:2]
        if f != self.config.num_frames:
            raise InputError(f"the model takes {self.config.num_frames}-frame clips, got {f} frames")
        clip = _Clip(n, f, self.condition(t, y), self.temp_embed, self.config.temporal_position == "stream")
        h = self.x_embedder(x.flatten(0, 1)) + self.pos_embed  # (N*F, T, D)
        for block, temporal in zip(self.pf_blocks, self.pf_temporal):
            (h,) = clip.after_first_spatial(block(h, clip.spatial_c))
            h = clip.temporal(temporal, h)
        sparse_pos = self._sparse_pos(side, h) if self.pos_reinject else None
        dense_pos = self.pos_embed if self.pos_reinject else None
        for module in self.sdtms:
            h = module(h, clip, self.grid_size, side, sparse_pos, dense_pos)
        for block, temporal in zip(self.top_blocks, self.top_temporal):
            h = clip.temporal(temporal, block(h, clip.spatial_c))
        out = self.unpatchify(self.final_layer(h, clip.spatial_c))
        return out.reshape(n, f, *out.shape[1:])


#################################################################################
#                      Conversion from a pretrained Latte                       #
#################################################################################


def converted_latte_state(base_state: dict[str, torch.Tensor], layout: FlexLayout,
                          hidden: int) -> dict[str, torch.Tensor]:
    """FlexLatte state dict from a Latte state dict: the spatial blocks ``blocks.2i`` go through the image
    conversion (``converted_state``: Latte pair i takes role i); each temporal block ``blocks.2i+1`` is copied to
    its partner's temporal path; the embedders, ``pos_embed``, ``temp_embed`` and the final layer are copied."""
    spatial = {k: v for k, v in base_state.items() if not k.startswith("blocks.")}
    for key, value in base_state.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            if int(index) % 2 == 0:
                spatial[f"blocks.{int(index) // 2}.{rest}"] = value
    out = converted_state(spatial, layout, hidden)
    for i, (path, _) in enumerate(layout.block_roles()):
        prefix = f"blocks.{2 * i + 1}."
        for key, value in base_state.items():
            if key.startswith(prefix):
                out[f"{temporal_path(path)}.{key[len(prefix):]}"] = value.clone()
    return out


def flexlatte_from_latte(base: Latte, layout: FlexLayout | None = None, **kwargs) -> FlexLatte:
    """A FlexLatte initialised from a pretrained Latte; every key is filled and shape-checked (load_into)."""
    model = FlexLatte(base.config, layout, **kwargs)
    state = converted_latte_state(base.state_dict(), model.layout, base.config.hidden_size)
    return load_into(model, state, what=f"FlexDiT {model.layout.to_dict()} converted from Latte")


__all__ = ["FlexLatte", "VideoSDTM", "converted_latte_state", "flexlatte_from_latte", "temporal_path"]
