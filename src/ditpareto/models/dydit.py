"""DyDiT (Zhao et al., ICLR 2025): a DiT with timestep-wise dynamic width (TDW) and spatial-wise dynamic tokens (SDT).

Per block: a head router and an MLP-group router read the timestep embedding (not the class), unit 0 of each is
always on; a token router reads the residual stream after attention and lets a token skip the whole MLP branch.
Two execution paths share the weights:

* ``forward_masked``: full-size tensors multiplied by 0/1 gates (training; straight-through Gumbel-sigmoid);
* ``forward_sliced``: inference that skips the work: gathered weights of the active heads/groups of the step
  (``LayerWidth``, batch-independent) and the MLP run on the kept tokens only (gather / index_add).

Parameter names of the DiT part are the official ones; router keys are ``blocks.{i}.head_router``,
``blocks.{i}.group_router`` and ``blocks.{i}.token_router.{0,2}``. ``WidthRouting`` (router initialisation, the
per-step width masks and their gathered weights) and ``DyDiTBlock`` are shared with the video model
(``models/dylatte.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ditpareto.errors import InputError
from ditpareto.models.dit import DiT, DiTBlock, modulate
from ditpareto.spec.dydit import block_flops
from ditpareto.archs import DiTConfig

GATE_MODES = ("gumbel", "hard", "complete")


@dataclass(frozen=True)
class RouterConfig:
    """DyDiT's additions: MLP group count, router initialisation and the Gumbel temperature."""

    mlp_groups: int | None = None  # None: as many groups as heads (the paper)
    width_bias_init: float = 15.0  # spec: +15 (P(gate off) ~ 3e-7 at the start)
    token_bias_init: float = 35.0  # spec: +35 (every token kept at the start)
    router_init: str = "xavier"  # spec: "xavier"; "zero" zeroes router weights (gates = bias alone at conversion)
    tau: float = 5.0
    seed: int = 0  # router initialisation is seeded: conversion is deterministic

    def groups(self, config: DiTConfig) -> int:
        groups = self.mlp_groups or config.num_heads
        hidden = int(config.hidden_size * config.mlp_ratio)
        if groups < 1 or hidden % groups:
            raise InputError(f"mlp_groups must divide the MLP width {hidden}, got {groups}")
        return groups


def gumbel_sigmoid_gate(logits: torch.Tensor, tau: float, noise: float = 1.0) -> torch.Tensor:
    """Straight-through Gumbel-sigmoid: forward value 1[sigmoid((logit + noise * logistic)/tau) > 0.5], soft grad.

    ``noise`` scales the logistic (Gumbel difference) noise: 1 is the spec; 0 gives the inference gates.
    """
    u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logits + noise * (torch.log(u) - torch.log1p(-u))) / tau)
    return (soft > 0.5).to(soft.dtype) + (soft - soft.detach())  # exactly 0/1 forward, soft gradient


def with_forced_unit(gates: torch.Tensor) -> torch.Tensor:
    """Prepend the always-on unit 0 to router gates [..., U-1] -> [..., U]."""
    return torch.cat([torch.ones_like(gates[..., :1]), gates], dim=-1)


@dataclass
class LayerWidth:
    """One block's active heads and MLP groups at one timestep, with the matching gathered weights."""

    heads: torch.Tensor  # long, active head indices (0 always)
    groups: torch.Tensor  # long, active MLP group indices (0 always)
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    proj_w: torch.Tensor
    fc1_w: torch.Tensor
    fc1_b: torch.Tensor
    fc2_w: torch.Tensor


@dataclass
class RoutingStats:
    """Token keep counts of sliced forwards, per layer (filled only while ``enabled``)."""

    enabled: bool = False
    kept: list = field(default_factory=list)  # per layer: kept tokens summed over calls
    total: list = field(default_factory=list)  # per layer: tokens seen

    def add(self, layer: int, kept: int, total: int) -> None:
        while len(self.kept) <= layer:
            self.kept.append(0)
            self.total.append(0)
        self.kept[layer] += kept
        self.total[layer] += total

    def keep_rates(self) -> list[float]:
        return [k / t for k, t in zip(self.kept, self.total)]


class DyDiTBlock(DiTBlock):
    """DiT block plus the three DyDiT routers."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, groups: int):
        super().__init__(hidden_size, num_heads, mlp_ratio)
        self.groups = groups
        self.head_router = nn.Linear(hidden_size, num_heads - 1) if num_heads > 1 else None
        self.group_router = nn.Linear(hidden_size, groups - 1) if groups > 1 else None
        router_hidden = max(1, hidden_size // 16)
        self.token_router = nn.Sequential(nn.Linear(hidden_size, router_hidden), nn.ReLU(), nn.Linear(router_hidden, 1))

    def width_logits(self, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits of heads 1.. and groups 1.. ([B, H-1], [B, G-1]; empty when there is one unit)."""
        empty = t_emb.new_zeros(t_emb.shape[0], 0)
        heads = self.head_router(t_emb) if self.head_router is not None else empty
        groups = self.group_router(t_emb) if self.group_router is not None else empty
        return heads, groups

    def width_gates(self, t_emb: torch.Tensor, mode: str, tau: float, noise: float = 1.0):
        """Head [B, H] and group [B, G] 0/1 gates from the timestep embedding, unit 0 forced on: straight-through
        Gumbel-sigmoid (``mode`` "gumbel") or ``logit > 0`` ("hard")."""
        head_logits, group_logits = self.width_logits(t_emb)
        if mode == "gumbel":
            gate = lambda z: gumbel_sigmoid_gate(z, tau, noise)  # noqa: E731
        else:
            gate = lambda z: (z > 0).to(z.dtype)  # noqa: E731
        return with_forced_unit(gate(head_logits)), with_forced_unit(gate(group_logits))

    def forward_masked(self, x, c, t_emb, mode: str, tau: float, width=None, noise: float = 1.0, position=None):
        """Full-size forward with 0/1 gates; returns x and the gates ([B, H], [B, G], [B, N]). ``position`` (N, D),
        when given, is added to the attention's input only (Latte's temporal blocks, ``temporal_position``
        "temporal")."""
        b, n, d = x.shape
        heads, dh = self.attn.num_heads, self.attn.head_dim
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        if width is not None:  # explicit [B, H], [B, G] masks (tests; a video model's per-clip gates)
            m_head, m_grp = width
        elif mode == "complete":
            m_head, m_grp = x.new_ones(b, heads), x.new_ones(b, self.groups)
        else:
            m_head, m_grp = self.width_gates(t_emb, mode, tau, noise)
        h = modulate(self.norm1(x if position is None else x + position), shift_msa, scale_msa)
        qkv = self.attn.qkv(h).reshape(b, n, 3, heads, dh).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]) * m_head[:, :, None, None]
        x = x + gate_msa.unsqueeze(1) * self.attn.proj(o.transpose(1, 2).reshape(b, n, d))
        if mode == "complete":
            m_tok = x.new_ones(b, n)
        else:
            logits = self.token_router(x).squeeze(-1)
            m_tok = gumbel_sigmoid_gate(logits, tau, noise) if mode == "gumbel" else (logits > 0).to(x.dtype)
        a = self.mlp.fc1(modulate(self.norm2(x), shift_mlp, scale_mlp))
        a = a * m_grp.repeat_interleave(a.shape[-1] // self.groups, dim=1).unsqueeze(1)
        x = x + m_tok.unsqueeze(-1) * (gate_mlp.unsqueeze(1) * self.mlp.fc2(self.mlp.act(a)))
        return x, (m_head, m_grp, m_tok)

    def forward_sliced(self, x, c, width: LayerWidth, layer: int = 0, stats: RoutingStats | None = None,
                       position=None):
        """Inference forward that computes only the active heads/groups and the MLP of kept tokens (``position``:
        as in ``forward_masked``)."""
        b, n, d = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        h = modulate(self.norm1(x if position is None else x + position), shift_msa, scale_msa)
        active = len(width.heads)
        qkv = F.linear(h, width.qkv_w, width.qkv_b).reshape(b, n, 3, active, self.attn.head_dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, n, -1)
        x = x + gate_msa.unsqueeze(1) * F.linear(o, width.proj_w, self.attn.proj.bias)
        keep = (self.token_router(x).squeeze(-1) > 0).flatten()
        idx = keep.nonzero().squeeze(1)
        kept = idx.numel()
        if stats is not None and stats.enabled:
            stats.add(layer, kept, b * n)
        if kept == 0:
            return x
        if kept == b * n:  # every token kept: dense, no gather / scatter
            hm = modulate(self.norm2(x), shift_mlp, scale_mlp)
            y = F.linear(self.mlp.act(F.linear(hm, width.fc1_w, width.fc1_b)), width.fc2_w, self.mlp.fc2.bias)
            return x + gate_mlp.unsqueeze(1) * y
        flat = x.reshape(b * n, d)
        # one gather of the per-sample (1 + scale, shift, gate) rows for the kept tokens
        scale, shift, gate = torch.cat([1 + scale_mlp, shift_mlp, gate_mlp], 1).index_select(0, idx // n).split(d, 1)
        hm = torch.addcmul(shift, self.norm2(flat.index_select(0, idx)), scale)
        y = F.linear(self.mlp.act(F.linear(hm, width.fc1_w, width.fc1_b)), width.fc2_w, self.mlp.fc2.bias)
        # in place (x is this block's own tensor); under bf16 autocast y is bfloat16 and the residual float32
        return flat.index_add_(0, idx, (y * gate).to(flat.dtype)).view(b, n, d)


class WidthRouting:
    """The router machinery of a model whose ``blocks`` are all ``DyDiTBlock``s (DyDiT, and the video DyLatte):
    router initialisation, the per-timestep (batch-independent) head/group masks and their gathered weights."""

    def build_routed(self, base_class: type, config, routers: RouterConfig) -> None:
        """``base_class``'s embedders and final layer (built at depth 0), then ``config.depth`` DyDiT blocks, the
        base's weight initialisation and the routers'; called by the model's ``__init__``."""
        self.routers = routers
        self.num_groups = routers.groups(config)
        if routers.router_init not in ("xavier", "zero"):
            raise InputError(f"router_init must be 'xavier' or 'zero', got {routers.router_init!r}")
        base_class.__init__(self, replace(config, depth=0))
        self.config = config
        self.blocks = nn.ModuleList(
            [DyDiTBlock(config.hidden_size, config.num_heads, config.mlp_ratio, self.num_groups)
             for _ in range(config.depth)]
        )
        self.initialize_weights()
        self.init_routers()
        self.clear_width_cache()

    def init_routers(self) -> None:
        """Routers as the spec: xavier weights (or zeros), width biases +15, token router's last bias +35."""
        g = torch.Generator().manual_seed(self.routers.seed)
        with torch.no_grad():
            for block in self.blocks:
                linears = [m for m in (block.head_router, block.group_router) if m is not None]
                linears += [block.token_router[0], block.token_router[2]]
                for lin in linears:
                    if self.routers.router_init == "zero" and lin is not block.token_router[0]:
                        lin.weight.zero_()  # token hidden layer keeps xavier, so its output layer can learn
                    else:
                        nn.init.xavier_uniform_(lin.weight, generator=g)
                    lin.bias.zero_()
                for lin in linears[:-2]:
                    lin.bias.fill_(self.routers.width_bias_init)
                block.token_router[2].bias.fill_(self.routers.token_bias_init)

    def router_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if "router" in n]

    @torch.no_grad()
    def width_masks(self, t: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the boolean head [H] and group [G] masks at model timestep ``t`` (batch-independent)."""
        device = self.pos_embed.device
        t_emb = self.t_embedder(torch.tensor([int(t)], device=device))
        masks = []
        for block in self.blocks:
            heads, groups = block.width_logits(t_emb)
            masks.append((with_forced_unit(heads[0] > 0), with_forced_unit(groups[0] > 0)))
        return masks

    @torch.no_grad()
    def gather_widths(self, masks, cache_numel: int | None = None) -> list[LayerWidth]:
        """Sliced weights of the active heads/groups per layer (cached per pattern, bounded by ``cache_numel``)."""
        if cache_numel is None:
            cache_numel = sum(p.numel() for p in self.blocks.parameters())
        return [self._layer_width(i, heads, groups, cache_numel) for i, (heads, groups) in enumerate(masks)]

    def _layer_width(self, layer: int, head_mask, group_mask, cache_numel: int) -> LayerWidth:
        block = self.blocks[layer]
        device = block.attn.qkv.weight.device  # masks made before a move still index the moved weights
        heads, groups = head_mask.nonzero().squeeze(1).to(device), group_mask.nonzero().squeeze(1).to(device)
        key = (layer, tuple(heads.tolist()), tuple(groups.tolist()), device, block.attn.qkv.weight.dtype)
        if key in self._width_cache:
            self._width_cache.move_to_end(key)
            return self._width_cache[key]
        attn, mlp = block.attn, block.mlp
        d, dh = attn.proj.weight.shape[0], attn.head_dim
        if len(heads) == attn.num_heads:
            qkv_w, qkv_b, proj_w = attn.qkv.weight, attn.qkv.bias, attn.proj.weight
        else:
            cols = (heads[:, None] * dh + torch.arange(dh, device=heads.device)).flatten()
            rows = torch.cat([cols + part * d for part in range(3)])
            qkv_w, qkv_b = attn.qkv.weight.index_select(0, rows), attn.qkv.bias.index_select(0, rows)
            proj_w = attn.proj.weight.index_select(1, cols)
        if len(groups) == block.groups:
            fc1_w, fc1_b, fc2_w = mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight
        else:
            k = mlp.fc1.weight.shape[0] // block.groups
            rows = (groups[:, None] * k + torch.arange(k, device=groups.device)).flatten()
            fc1_w, fc1_b = mlp.fc1.weight.index_select(0, rows), mlp.fc1.bias.index_select(0, rows)
            fc2_w = mlp.fc2.weight.index_select(1, rows)
        width = LayerWidth(heads, groups, qkv_w, qkv_b, proj_w, fc1_w, fc1_b, fc2_w)
        numel = sum(w.numel() for w in (qkv_w, qkv_b, proj_w, fc1_w, fc1_b, fc2_w))
        self._width_cache[key] = width
        self._width_cache_numel += numel
        while self._width_cache_numel > cache_numel and len(self._width_cache) > 1:
            _, old = self._width_cache.popitem(last=False)
            self._width_cache_numel -= sum(w.numel() for w in (old.qkv_w, old.qkv_b, old.proj_w, old.fc1_w,
                                                                 old.fc1_b, old.fc2_w))
        return width

    def clear_width_cache(self) -> None:
        self._width_cache: OrderedDict = OrderedDict()
        self._width_cache_numel = 0


class DyDiT(WidthRouting, DiT):
    """DiT with DyDiT's routers; ``forward`` is the masked path (Gumbel gates in training, hard gates in eval)."""

    def __init__(self, config: DiTConfig, routers: RouterConfig = RouterConfig()):
        self.build_routed(DiT, config, routers)

    @classmethod
    def from_dit(cls, base: DiT, routers: RouterConfig = RouterConfig()) -> DyDiT:
        """Converted model: the base's weights (validated, strict) plus freshly initialised routers."""
        model = cls(base.config, routers)
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        if unexpected or any("router" not in k for k in missing):
            raise InputError(f"base DiT does not fit DyDiT: missing {missing}, unexpected {unexpected}")
        return model

    # ------------------------------------------------------------------ masked path (training)
    def forward_masked(self, x, t, y, mode: str = "gumbel", widths=None, noise: float = 1.0):
        """Output and per-layer gates ``[(m_head [B,H], m_grp [B,G], m_tok [B,N]), ...]``.

        ``mode``: "gumbel" (straight-through Gumbel-sigmoid), "hard" (logit > 0) or "complete" (all units on, routers
        unused); ``widths`` optionally forces per-layer ([B, H], [B, G]) width masks; ``noise`` scales the Gumbel noise.
        """
        if mode not in GATE_MODES:
            raise ValueError(f"mode must be one of {GATE_MODES}, got {mode!r}")
        t_emb = self.t_embedder(t)
        c = t_emb + self.y_embedder(y, self.training)
        x = self.x_embedder(x) + self.pos_embed
        gates = []
        for i, block in enumerate(self.blocks):
            width = None if widths is None else widths[i]
            x, g = block.forward_masked(x, c, t_emb, mode, self.routers.tau, width, noise)
            gates.append(g)
        return self.unpatchify(self.final_layer(x, c)), gates

    def forward(self, x, t, y):
        return self.forward_masked(x, t, y, "gumbel" if self.training else "hard")[0]

    # ------------------------------------------------------------------ sliced path (inference)
    @torch.no_grad()
    def forward_sliced(self, x, t, y, widths: list[LayerWidth], stats: RoutingStats | None = None):
        """Inference forward with real savings; ``widths`` must be those of the batch's (shared) timestep."""
        c = self.condition(t, y)
        x = self.x_embedder(x) + self.pos_embed
        for i, (block, width) in enumerate(zip(self.blocks, widths)):
            x = block.forward_sliced(x, c, width, i, stats)
        return self.unpatchify(self.final_layer(x, c))


def compute_ratio(gates, config: DiTConfig) -> torch.Tensor:
    """Per-sample block-FLOPs ratio [B]: sum_l (a_l F_attn,l + g_l s_l F_mlp,l) / sum_l (F_attn,l + F_mlp,l), each
    block's units weighted by that block's MACs (``block_flops``: one pair for every DiT block, L (F_attn + F_mlp)
    below; a Latte model's spatial and temporal blocks differ)."""
    flops = block_flops(config)
    if len(flops) != len(gates):
        raise ValueError(f"{len(gates)} layers of gates for a model of {len(flops)} blocks")
    total = 0
    for (m_head, m_grp, m_tok), (f_attn, f_mlp) in zip(gates, flops):
        total = total + m_head.mean(1) * f_attn + m_grp.mean(1) * m_tok.mean(1) * f_mlp
    return total / sum(f_attn + f_mlp for f_attn, f_mlp in flops)


def flops_loss(gates, config: DiTConfig, target: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DyDiT's FLOPs constraint (batch-mean ratio - target)^2, and the batch-mean ratio."""
    ratio = compute_ratio(gates, config).mean()
    return (ratio - target) ** 2, ratio
