"""DyDiT on video: a Latte model (spatial and temporal blocks alternating) with DyDiT's three routers in every block.

* **Width (TDW), both block types.** Each spatial and each temporal block has a head router and an MLP-group router
  on the timestep embedding (unit 0 always on), as the image DyDiT. A clip has one timestep, so its width gates are
  drawn once per clip and block and shared by all its frames (spatial rows) and locations (temporal rows); at
  inference they depend on t alone and are precomputed per sampling step, batch-independent.
* **Tokens (SDT) over (frame, location).** Each block's token router reads every token of every frame after that
  block's attention and lets it skip the block's MLP: in a spatial block the tokens are (frame, location) rows of
  per-frame sequences, in a temporal block the same tokens as (location, frame) rows of per-location sequences.
* **The FLOPs loss** weights each block's heads, groups and tokens by that block's MACs (``spec.dydit.block_flops``:
  spatial attention over H W / p^2 tokens per frame, temporal over F frames per location).

The blocks are the image model's ``DyDiTBlock`` (its masked and sliced forwards, with Latte's frame embedding on the
temporal attention's input for ``temporal_position`` "temporal"); the router machinery is ``WidthRouting``. Parameter
names are Latte's plus the image DyDiT's router keys, so ``from_latte`` copies a Latte base strictly, and a
converted model computes the base's function.
"""

from __future__ import annotations

import torch

from ditpareto.archs import LatteConfig
from ditpareto.errors import InputError
from ditpareto.models.dydit import (
    GATE_MODES, LayerWidth, RouterConfig, RoutingStats, WidthRouting,
)
from ditpareto.models.latte import Latte


class DyLatte(WidthRouting, Latte):
    """Latte with DyDiT's routers; ``forward`` is the masked path (Gumbel gates in training, hard gates in eval).

    Input and output as Latte: clips (N, F, C, H, W). ``blocks.{2i}`` are spatial, ``blocks.{2i+1}`` temporal.
    """

    def __init__(self, config: LatteConfig, routers: RouterConfig = RouterConfig()):
        if not isinstance(config, LatteConfig):
            raise InputError(f"DyLatte needs a Latte config, got {type(config).__name__}")
        self.build_routed(Latte, config, routers)

    @classmethod
    def from_latte(cls, base: Latte, routers: RouterConfig = RouterConfig()) -> DyLatte:
        """Converted model: the base's weights (validated, strict) plus freshly initialised routers."""
        if not isinstance(base, Latte):
            raise InputError(f"DyLatte converts a Latte model, got {type(base).__name__}")
        model = cls(base.config, routers)
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        if unexpected or any("router" not in k for k in missing):
            raise InputError(f"base Latte does not fit DyLatte: missing {missing}, unexpected {unexpected}")
        return model

    # ------------------------------------------------------------------ shared layout
    def _embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, drop_labels: bool):
        """Tokens (N*F, T, D), the timestep embedding (N, D) and the per-clip condition c (N, D)."""
        if x.shape[1] != self.config.num_frames:
            raise InputError(f"the model takes {self.config.num_frames}-frame clips, got {x.shape[1]} frames")
        t_emb = self.t_embedder(t)
        c = t_emb + self.y_embedder(y, drop_labels) if self.conditional else t_emb
        return self.x_embedder(x.flatten(0, 1)) + self.pos_embed, t_emb, c

    def _blocks(self, x: torch.Tensor, c: torch.Tensor, n: int, run):
        """Latte's block loop: ``run(i, block, x, c_rows, position)`` on (N*F, T, D) rows for spatial blocks and
        (N*T, F, D) rows for temporal ones; returns the (N*F, T, D) stream."""
        f, tokens = self.config.num_frames, x.shape[1]
        spatial_c, temporal_c = c.repeat_interleave(f, dim=0), c.repeat_interleave(tokens, dim=0)
        in_stream = self.config.temporal_position == "stream"
        position = None if in_stream else self.temp_embed[0]
        for i in range(0, len(self.blocks), 2):
            x = run(i, self.blocks[i], x, spatial_c, None)
            x = x.reshape(n, f, tokens, -1).transpose(1, 2).reshape(n * tokens, f, -1)  # (N*T, F, D)
            if in_stream and i == 0:
                x = x + self.temp_embed
            x = run(i + 1, self.blocks[i + 1], x, temporal_c, position)
            x = x.reshape(n, tokens, f, -1).transpose(1, 2).reshape(n * f, tokens, -1)  # (N*F, T, D)
        return x

    def _output(self, x: torch.Tensor, spatial_c: torch.Tensor, n: int) -> torch.Tensor:
        x = self.unpatchify(self.final_layer(x, spatial_c))
        return x.reshape(n, self.config.num_frames, *x.shape[1:])

    # ------------------------------------------------------------------ masked path (training)
    def forward_masked(self, x, t, y=None, mode: str = "gumbel", widths=None, noise: float = 1.0):
        """Output and per-layer gates per clip ``[(m_head [N,H], m_grp [N,G], m_tok [N, F*T]), ...]``, m_tok in
        (frame, location) order for both block types.

        ``mode``: "gumbel" (straight-through Gumbel-sigmoid), "hard" (logit > 0) or "complete" (all units on, routers
        unused); ``widths`` optionally forces per-layer per-clip ([N, H], [N, G]) width masks; ``noise`` scales the
        Gumbel noise. Width gates are drawn once per clip and block (a clip has one timestep) and shared by its rows.
        """
        if mode not in GATE_MODES:
            raise ValueError(f"mode must be one of {GATE_MODES}, got {mode!r}")
        n, f = x.shape[:2]
        x, t_emb, c = self._embed(x, t, y, self.training)
        tokens = x.shape[1]
        gates = []

        def run(i, block, rows, c_rows, position):
            temporal = i % 2 == 1
            per_clip = tokens if temporal else f  # rows of one clip: its locations (temporal) or frames (spatial)
            if widths is not None:
                m_head, m_grp = widths[i]
            elif mode == "complete":
                m_head, m_grp = t_emb.new_ones(n, block.attn.num_heads), t_emb.new_ones(n, block.groups)
            else:
                m_head, m_grp = block.width_gates(t_emb, mode, self.routers.tau, noise)
            width = (m_head.repeat_interleave(per_clip, dim=0), m_grp.repeat_interleave(per_clip, dim=0))
            rows, (_, _, m_tok) = block.forward_masked(rows, c_rows, None, mode, self.routers.tau, width, noise,
                                                       position)
            if temporal:  # (N*T, F) -> (N, F, T): the (frame, location) order of the spatial blocks
                m_tok = m_tok.reshape(n, tokens, f).transpose(1, 2)
            gates.append((m_head, m_grp, m_tok.reshape(n, f * tokens)))
            return rows

        x = self._blocks(x, c, n, run)
        return self._output(x, c.repeat_interleave(f, dim=0), n), gates

    def forward(self, x, t, y=None):
        return self.forward_masked(x, t, y, "gumbel" if self.training else "hard")[0]

    # ------------------------------------------------------------------ sliced path (inference)
    @torch.no_grad()
    def forward_sliced(self, x, t, y, widths: list[LayerWidth], stats: RoutingStats | None = None):
        """Inference forward with real savings; ``widths`` must be those of the batch's (shared) timestep. Token
        routing is per (frame, location) token and per clip: ``stats`` counts kept tokens of every block over the
        batch's N x F x T tokens."""
        n, f = x.shape[:2]
        x, _, c = self._embed(x, t, y, self.training)

        def run(i, block, rows, c_rows, position):
            return block.forward_sliced(rows, c_rows, widths[i], i, stats, position)

        x = self._blocks(x, c, n, run)
        return self._output(x, c.repeat_interleave(f, dim=0), n)
