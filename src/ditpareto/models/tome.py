"""Token merging for DiT (ToMe for Stable Diffusion, Bolya & Hoffman 2023, adapted to DiT), training-free.

``tome_forward(model, x, t, y, ratio)`` runs an unchanged ``DiT`` (its weights, no copy) with merging: in every block
the attention input modulate(norm1(x)) is the matching metric; the top-left token of every 2x2 window is a
destination, every other token a source; the r = floor(ratio * N) sources most cosine-similar to their best
destination are mean-merged into it (bipartite soft matching). The chosen sublayers (attention, MLP) run on the
N - r merged tokens, each merged source gets its destination's output back (unmerge), then DiT's gate and residual
apply. As tomesd, one matching per block serves both sublayers. Ratio 0 runs ``DiT.forward`` itself.
"""

from __future__ import annotations

import torch

from ditpareto.errors import InputError
from ditpareto.models.dit import DiT, DiTBlock, modulate
from ditpareto.spec.tome import TOME_ONLY_IMAGES, tome_macs_per_call, tome_merged_tokens

__all__ = ["TokenMerge", "bipartite_soft_matching", "merged_tokens_per_block", "tome_block_forward", "tome_forward",
           "tome_macs_per_call", "tome_merged_tokens"]


def dst_src_positions(grid: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token positions (row-major on the grid x grid map) of the destinations (top-left of each whole 2x2 window)
    and of the sources (all others), each ascending."""
    rows = torch.arange(grid, device=device).unsqueeze(1).expand(grid, grid)
    cols = torch.arange(grid, device=device).unsqueeze(0).expand(grid, grid)
    is_dst = (rows % 2 == 0) & (cols % 2 == 0) & (rows < grid // 2 * 2) & (cols < grid // 2 * 2)
    is_dst = is_dst.reshape(-1)
    return is_dst.nonzero().squeeze(1), (~is_dst).nonzero().squeeze(1)


class TokenMerge:
    """One block's matching: ``merge`` (B, N, C) -> (B, N - r, C) [kept sources, then destinations], ``unmerge``
    (B, N - r, C) -> (B, N, C), every merged source receiving its destination's row."""

    def __init__(self, src_pos: torch.Tensor, dst_pos: torch.Tensor, kept: torch.Tensor, merged: torch.Tensor,
                 target: torch.Tensor):
        self.src_pos, self.dst_pos = src_pos, dst_pos  # (S,), (D,) token positions
        self.kept, self.merged, self.target = kept, merged, target  # (B, S - r), (B, r) source indices; (B, r) dst
        batch, r = merged.shape
        num_kept = kept.shape[1]
        num_tokens = len(src_pos) + len(dst_pos)
        # slot[b, position] = the row of the merged sequence that position reads back
        slot = torch.empty(batch, num_tokens, dtype=torch.long, device=kept.device)
        slot[:, dst_pos] = num_kept + torch.arange(len(dst_pos), device=kept.device)
        slot.scatter_(1, src_pos[kept], torch.arange(num_kept, device=kept.device).expand(batch, num_kept))
        slot.scatter_(1, src_pos[merged], num_kept + target)
        self.slot = slot

    @property
    def r(self) -> int:
        return self.merged.shape[1]

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        src, dst = x[:, self.src_pos], x[:, self.dst_pos]
        kept = src.gather(1, self.kept.unsqueeze(-1).expand(-1, -1, c))
        merged = src.gather(1, self.merged.unsqueeze(-1).expand(-1, -1, c))
        dst = dst.scatter_reduce(1, self.target.unsqueeze(-1).expand(-1, -1, c), merged, reduce="mean")
        return torch.cat([kept, dst], dim=1)

    def unmerge(self, x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, self.slot.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def bipartite_soft_matching(metric: torch.Tensor, grid: int, r: int) -> TokenMerge:
    """tomesd's bipartite soft matching on (B, N, C) ``metric`` with fixed 2x2-window destinations: each source's
    best destination by cosine similarity; the r sources with the highest best similarity merge (ties: lower
    source index first)."""
    dst_pos, src_pos = dst_src_positions(grid, metric.device)
    r = min(r, len(src_pos))
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric[:, src_pos] @ metric[:, dst_pos].transpose(-1, -2)  # (B, S, D): the counted matmul
        best, best_dst = scores.max(dim=-1)
        order = torch.sort(best, dim=-1, descending=True, stable=True).indices
        merged, kept = order[:, :r], order[:, r:]
        target = best_dst.gather(1, merged)
    return TokenMerge(src_pos, dst_pos, kept, merged, target)


def tome_block_forward(block: DiTBlock, x: torch.Tensor, c: torch.Tensor, grid: int, r: int,
                       merge_attn: bool = True, merge_mlp: bool = True) -> torch.Tensor:
    """``DiTBlock.forward`` with the chosen sublayers on r-merged tokens; exactly the block itself when nothing
    merges."""
    if r <= 0 or not (merge_attn or merge_mlp):
        return block(x, c)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(c).chunk(6, dim=1)
    h = modulate(block.norm1(x), shift_msa, scale_msa)
    tm = bipartite_soft_matching(h, grid, r)
    attn = tm.unmerge(block.attn(tm.merge(h))) if merge_attn else block.attn(h)
    x = x + gate_msa.unsqueeze(1) * attn
    h = modulate(block.norm2(x), shift_mlp, scale_mlp)
    mlp = tm.unmerge(block.mlp(tm.merge(h))) if merge_mlp else block.mlp(h)
    return x + gate_mlp.unsqueeze(1) * mlp


def tome_forward(model: DiT, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, ratio: float,
                 merge_attn: bool = True, merge_mlp: bool = True) -> torch.Tensor:
    """``DiT.forward`` with r = floor(ratio * N) tokens merged in every block (``model`` is used as is)."""
    if not isinstance(model, DiT):
        raise InputError(TOME_ONLY_IMAGES)
    r = tome_merged_tokens(model.config, ratio)
    if r == 0 or not (merge_attn or merge_mlp):
        return model(x, t, y)
    c = model.condition(t, y)
    h = model.x_embedder(x) + model.pos_embed
    grid = model.config.grid_size
    for block in model.blocks:
        h = tome_block_forward(block, h, c, grid, r, merge_attn, merge_mlp)
    return model.unpatchify(model.final_layer(h, c))


def merged_tokens_per_block(model: DiT, ratio: float, merge_attn: bool = True, merge_mlp: bool = True) -> int:
    """How many tokens every block merges (0 when no sublayer merges)."""
    return tome_merged_tokens(model.config, ratio) if (merge_attn or merge_mlp) else 0
