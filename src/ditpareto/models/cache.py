"""Feature caching across sampling steps for a frozen DiT: FORA's fixed schedule and Learning-to-Cache's router.

A schedule is a boolean table ``compute[step, block, sublayer]`` (sublayer 0 = attention, 1 = MLP) over the
sampler's S steps; step 0 computes everything. A computed unit adds its gated residual ``gate * sublayer(modulate(
norm(x)))`` and, when a later step reuses it, keeps it in a ``FeatureCache``; a cached unit adds the kept residual
and executes nothing (a block with both units cached also skips its adaLN modulation). With CFG the cache holds
the doubled batch. The cache is reset at step 0 of every trajectory.

``CachedDiT`` is a DiT (same state dict keys) plus, for L2C, a router: ``router.logits`` of shape (S-1, D, 2),
one logit per routed (step 1..S-1, block, sublayer). Its training objective (``L2CLoss``) mixes each unit as
beta * fresh + (1 - beta) * cached with beta = sigmoid(logit).

Where ``L2CLoss`` differs from the authors' DiT/train_router.py: it mixes the gated residual (what the cache holds;
they mix the sublayer output before its gate), each sample draws its own routed step (they draw one per batch),
the logits start at 0 (theirs: N(0, 1)) and are not clamped to [-5, 5] (a budget ranks the logits, and a clamp
would tie the saturated ones), and lambda multiplies the mean of the betas (theirs: the sum over one step's 2 D).
They route every other step only (``routed_steps="odd"`` in the l2c options).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from ditpareto.archs import DiTConfig
from ditpareto.diffusion import GaussianDiffusion
from ditpareto.models.checkpoint import CheckpointError, extract_state_dict, read_checkpoint, validate_state_dict
from ditpareto.models.dit import DiT, modulate
from ditpareto.spec.cache import cache_macs_per_image, computed_routed_units
from ditpareto.errors import InputError

ROUTER_KEY = "router.logits"
ATTENTION, MLP = 0, 1


# ------------------------------------------------------------------------------------------------------ schedules
def fora_schedule(steps: int, depth: int, interval: int, blocks: Sequence[int] | range | None = None
                  ) -> torch.Tensor:
    """FORA's table (S, D, 2): every unit of the caching ``blocks`` (a range, a [start, stop) pair or None for all)
    computes at steps where step % interval == 0; the other blocks always compute."""
    if not (isinstance(interval, int) and interval >= 1):
        raise InputError(f"the FORA interval must be an integer >= 1, got {interval!r}")
    if blocks is None:
        blocks = range(depth)
    elif not isinstance(blocks, range):
        start, stop = blocks
        blocks = range(start, stop)
    if not (0 <= blocks.start < blocks.stop <= depth):
        raise InputError(f"fora option blocks [{blocks.start}, {blocks.stop}) is outside the model's {depth} blocks")
    table = torch.ones(steps, depth, 2, dtype=torch.bool)
    for step in range(steps):
        if step % interval:
            table[step, blocks.start:blocks.stop] = False
    return table


def router_schedule(logits: torch.Tensor, fraction: float, routed_steps: Sequence[int] | None = None
                    ) -> torch.Tensor:
    """L2C's table (S, D, 2) from router logits (S-1, D, 2; row s-1 routes step s): among the units of
    ``routed_steps`` (default 1..S-1), those with the highest logits compute until round(fraction x routed steps
    x D x 2) do (ties: earlier step, then lower block, then attention first); step 0 and unrouted steps compute
    everything."""
    if logits.ndim != 3 or logits.shape[-1] != 2:
        raise ValueError(f"router logits must have shape (steps - 1, depth, 2), got {tuple(logits.shape)}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the computed fraction must be in [0, 1], got {fraction}")
    steps, depth = logits.shape[0] + 1, logits.shape[1]
    routed = sorted(set(range(1, steps) if routed_steps is None else routed_steps))
    if routed and not 1 <= routed[0] <= routed[-1] < steps:
        raise ValueError(f"routed steps must lie in 1..{steps - 1}, got {routed}")
    values = logits.detach().to("cpu", torch.float64)[[s - 1 for s in routed]].flatten()
    if not bool(torch.isfinite(values).all()):
        raise ValueError("router logits hold non-finite values (NaN/Inf)")
    keep = computed_routed_units(fraction, len(routed), depth)
    order = torch.argsort(-values, stable=True)
    computed = torch.zeros(values.numel(), dtype=torch.bool)
    computed[order[:keep]] = True
    table = torch.ones(steps, depth, 2, dtype=torch.bool)
    table[routed] = computed.view(len(routed), depth, 2)
    return table


@dataclass(frozen=True)
class CacheSchedule:
    """A validated table with what the forward reads from it: per step, per block, (attention, MLP) computes; and
    the units kept in the cache (those cached at some step)."""

    table: torch.Tensor
    rows: tuple[tuple[tuple[bool, bool], ...], ...]
    stored: frozenset[tuple[int, int]]

    @classmethod
    def of(cls, table: torch.Tensor | CacheSchedule, depth: int | None = None) -> CacheSchedule:
        if isinstance(table, CacheSchedule):
            schedule = table
        else:
            if not isinstance(table, torch.Tensor) or table.dtype != torch.bool or table.ndim != 3 \
                    or table.shape[-1] != 2 or table.shape[0] < 1:
                raise ValueError("a cache schedule is a bool tensor (steps, depth, 2), got "
                                 f"{getattr(table, 'dtype', type(table))} {tuple(getattr(table, 'shape', ()))}")
            table = table.detach().cpu()
            if not bool(table[0].all()):
                raise ValueError("a cache schedule must compute every unit at step 0 (nothing is cached yet)")
            rows = tuple(tuple((bool(a), bool(m)) for a, m in step) for step in table.tolist())
            stored = frozenset((block, sub) for block in range(table.shape[1]) for sub in (ATTENTION, MLP)
                               if not bool(table[:, block, sub].all()))
            schedule = cls(table, rows, stored)
        if depth is not None and schedule.table.shape[1] != depth:
            raise ValueError(f"the cache schedule has {schedule.table.shape[1]} blocks, the model {depth}")
        return schedule

    @property
    def steps(self) -> int:
        return len(self.rows)

    def units_per_step(self) -> list[int]:
        return [sum(a + m for a, m in row) for row in self.rows]

    def computed_fraction(self) -> float:
        """Share of the units of steps 1..S-1 that compute (1.0 for a one-step schedule)."""
        routed = self.table[1:]
        return float(routed.float().mean()) if routed.numel() else 1.0


# ---------------------------------------------------------------------------------------------------------- cache
class FeatureCache:
    """The gated residuals of the units a schedule reuses, keyed by (block, sublayer), for one batch."""

    def __init__(self):
        self.entries: dict[tuple[int, int], torch.Tensor] = {}

    def reset(self) -> None:
        self.entries.clear()

    def store(self, block: int, sublayer: int, value: torch.Tensor) -> None:
        self.entries[(block, sublayer)] = value

    def load(self, block: int, sublayer: int, like: torch.Tensor) -> torch.Tensor:
        value = self.entries.get((block, sublayer))
        if value is None:
            raise RuntimeError(f"block {block} {('attention', 'MLP')[sublayer]} is cached but nothing is stored: a "
                               "trajectory must start at step 0, which fills the cache")
        if value.shape != like.shape:
            raise RuntimeError(f"the cache holds a batch of shape {tuple(value.shape)}, this call {tuple(like.shape)}:"
                               " the batch changed within a trajectory (step 0 resets the cache)")
        return value

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.entries.values())

    def bytes_per_row(self) -> float:
        """Stored bytes per batch row (one single-image network call)."""
        if not self.entries:
            return 0.0
        return self.nbytes / next(iter(self.entries.values())).shape[0]


def cache_bytes_per_image(config: DiTConfig, schedule: torch.Tensor | CacheSchedule, guided: bool,
                          element_size: int = 4) -> int:
    """Cache memory per generated image: one (T, d) residual per reused unit, twice with CFG (the doubled batch),
    at ``element_size`` bytes (4: float32; 2 under bf16 autocast)."""
    schedule = CacheSchedule.of(schedule, config.depth)
    return len(schedule.stored) * config.num_tokens * config.hidden_size * element_size * (2 if guided else 1)


def cached_macs_per_image(config: DiTConfig, schedule: torch.Tensor | CacheSchedule, guided: bool) -> int:
    """Closed-form MACs per image of a trajectory under ``schedule`` (``spec.cache.cache_macs_per_call``)."""
    return cache_macs_per_image(config, CacheSchedule.of(schedule, config.depth).rows, guided)


# --------------------------------------------------------------------------------------------------------- forward
def _blocks(dit: DiT, h: torch.Tensor, c: torch.Tensor, row, cache: FeatureCache, stored=frozenset(),
            beta: torch.Tensor | None = None) -> torch.Tensor:
    """The blocks under one schedule row: computed units add (and, if ``stored``, keep) their gated residual,
    cached ones add the kept one; with ``beta`` (N, D, 2) every unit adds beta * fresh + (1 - beta) * cached."""
    for index, block in enumerate(dit.blocks):
        attn_on, mlp_on = row[index]
        if attn_on or mlp_on:
            modulation = block.adaLN_modulation(c).chunk(6, dim=1)
        for sub, on, norm, layer in ((ATTENTION, attn_on, block.norm1, block.attn),
                                     (MLP, mlp_on, block.norm2, block.mlp)):
            if on:
                shift, scale, gate = modulation[3 * sub: 3 * sub + 3]
                delta = gate.unsqueeze(1) * layer(modulate(norm(h), shift, scale))
                if beta is not None:
                    weight = beta[:, index, sub].view(-1, 1, 1)
                    delta = weight * delta + (1 - weight) * cache.load(index, sub, h)
                elif (index, sub) in stored:
                    cache.store(index, sub, delta)
            else:
                delta = cache.load(index, sub, h)
            h = h + delta
    return h


def _embed(dit: DiT, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and the adaLN condition (labels never dropped: the DiT is frozen, label dropout is the loss's)."""
    return dit.x_embedder(x) + dit.pos_embed, dit.t_embedder(t) + dit.y_embedder(y, False)


def cached_forward(dit: DiT, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, step: int,
                   schedule: torch.Tensor | CacheSchedule, cache: FeatureCache) -> torch.Tensor:
    """One network call of sampling step ``step`` of any DiT under ``schedule`` (step 0 resets ``cache``)."""
    schedule = CacheSchedule.of(schedule, len(dit.blocks))
    if not 0 <= step < schedule.steps:
        raise ValueError(f"step {step} is outside the cache schedule's {schedule.steps} steps")
    if step == 0:
        cache.reset()
    h, c = _embed(dit, x, t, y)
    h = _blocks(dit, h, c, schedule.rows[step], cache, schedule.stored)
    return dit.unpatchify(dit.final_layer(h, c))


# ----------------------------------------------------------------------------------------------------------- model
class CacheRouter(nn.Module):
    """L2C's router: one logit per routed (step 1..S-1, block, sublayer); beta = sigmoid(logit)."""

    def __init__(self, steps: int, depth: int):
        super().__init__()
        if steps < 2:
            raise InputError(f"an L2C router needs at least 2 sampling steps (step 0 is never routed), got {steps}")
        self.logits = nn.Parameter(torch.zeros(steps - 1, depth, 2))

    @property
    def steps(self) -> int:
        return self.logits.shape[0] + 1

    def beta(self, step: torch.Tensor) -> torch.Tensor:
        """(N, D, 2) mixing weights of sampler steps ``step`` (N,), each in 1..S-1."""
        return torch.sigmoid(self.logits[step - 1])


class CachedDiT(DiT):
    """A frozen DiT that samples under a cache schedule; its state dict is the DiT's, plus ``router.logits`` when
    it has an L2C router (``router_steps`` sampler steps)."""

    def __init__(self, config: DiTConfig, router_steps: int | None = None):
        super().__init__(config)
        self.router = CacheRouter(router_steps, config.depth) if router_steps is not None else None
        self.schedule: CacheSchedule | None = None
        self.cache = FeatureCache()

    @classmethod
    def from_dit(cls, dit: DiT, router_steps: int | None = None) -> CachedDiT:
        """The DiT's weights in a CachedDiT (a fresh router, all logits 0, when ``router_steps`` is given)."""
        model = cls(dit.config, router_steps)
        router = {ROUTER_KEY: model.router.logits.detach()} if model.router is not None else {}
        model.load_state_dict({**dit.state_dict(), **router})
        reference = next(dit.parameters())
        return model.to(reference.device).train(dit.training)

    def condition(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Labels are never dropped here (the wrapped DiT is frozen; L2C's loss drops them itself)."""
        return self.t_embedder(t) + self.y_embedder(y, False)

    def set_schedule(self, schedule: torch.Tensor | CacheSchedule | None) -> None:
        self.schedule = None if schedule is None else CacheSchedule.of(schedule, self.config.depth)

    def reset(self) -> None:
        self.cache.reset()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, step: int | None = None,
                schedule: torch.Tensor | CacheSchedule | None = None, cache: FeatureCache | None = None
                ) -> torch.Tensor:
        """The static DiT when ``step`` is None; else sampling step ``step`` under ``schedule`` (default: the one
        set by ``set_schedule``) with ``cache`` (default: the model's own), reset at step 0."""
        if step is None:
            return super().forward(x, t, y)
        schedule = schedule if schedule is not None else self.schedule
        if schedule is None:
            raise ValueError("no cache schedule: pass one or call set_schedule first")
        return cached_forward(self, x, t, y, step, schedule, self.cache if cache is None else cache)

    def forward_filling(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cache: FeatureCache
                        ) -> torch.Tensor:
        """The full DiT, keeping every unit's gated residual in ``cache`` (reset first)."""
        cache.reset()
        h, c = _embed(self, x, t, y)
        every = [(True, True)] * len(self.blocks)
        units = frozenset((b, s) for b in range(len(self.blocks)) for s in (ATTENTION, MLP))
        return self.unpatchify(self.final_layer(_blocks(self, h, c, every, cache, units), c))

    def forward_mixed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cache: FeatureCache,
                      beta: torch.Tensor) -> torch.Tensor:
        """L2C's training forward: every unit adds beta * fresh + (1 - beta) * cached (``beta``: (N, D, 2))."""
        h, c = _embed(self, x, t, y)
        every = [(True, True)] * len(self.blocks)
        return self.unpatchify(self.final_layer(_blocks(self, h, c, every, cache, beta=beta), c))


# ------------------------------------------------------------------------------------------------------ training
class L2CLoss:
    """Learning-to-Cache's objective for one batch: each sample draws a routed step s (default 1..S-1); x at step s-1 is
    q_sample of the data, the full model at s-1 fills the cache, DDIM (eta 0) steps to s, and the mixed forward at s
    (beta = sigmoid of the router's logits) is fitted to the full output at s: MSE + sparsity_weight x mean(beta).
    Labels are dropped to the null class at the DiT's class-dropout rate, the same label for both steps."""

    def __init__(self, sparsity_weight: float, routed_steps: Sequence[int] | None = None):
        self.sparsity_weight = sparsity_weight
        self.routed_steps = None if routed_steps is None else sorted(routed_steps)

    def __call__(self, model: CachedDiT, x0: torch.Tensor, y: torch.Tensor, diffusion: GaussianDiffusion) -> dict:
        if model.router is None:
            raise ValueError("L2C's loss needs a CachedDiT with a router")
        steps, device, n = diffusion.num_timesteps, x0.device, x0.shape[0]
        if steps != model.router.steps:
            raise ValueError(f"the router routes {model.router.steps} steps, the diffusion has {steps}")
        routed = torch.tensor(self.routed_steps if self.routed_steps is not None else range(1, steps))
        if not len(routed) or not 1 <= int(routed.min()) <= int(routed.max()) < steps:
            raise ValueError(f"routed steps must lie in 1..{steps - 1}, got {routed.tolist()}")
        step = routed[torch.randint(0, len(routed), (n,))].to(device)  # sampler step s (0 = noisiest)
        before = steps - step  # diffusion index of step s-1
        noise = torch.randn_like(x0)
        drop = model.y_embedder.dropout_prob
        if drop > 0:
            y = torch.where(torch.rand(n).to(device) < drop, model.y_embedder.num_classes, y)
        cache = FeatureCache()
        with torch.no_grad():
            x_before = diffusion.q_sample(x0, before, noise)
            out_before = model.forward_filling(x_before, diffusion.model_timesteps(before), y, cache)
            x_step = diffusion.ddim_step(out_before, x_before, before)
            t_step = diffusion.model_timesteps(before - 1)
            target = DiT.forward(model, x_step, t_step, y)
        beta = model.router.beta(step)
        mixed = model.forward_mixed(x_step, t_step, y, cache, beta)
        mse = ((mixed.float() - target.float()) ** 2).mean()
        sparsity = beta.float().mean()
        loss = mse + self.sparsity_weight * sparsity
        with torch.no_grad():
            open_share = (model.router.logits > 0).float().mean()
        return {"loss": loss, "mse": mse.detach(), "mean_beta": sparsity.detach(), "open_share": open_share}


def l2c_train_step_macs(model: CachedDiT, x0: torch.Tensor, y: torch.Tensor, diffusion: GaussianDiffusion,
                        sparsity_weight: float = 0.0, routed_steps: Sequence[int] | None = None) -> int:
    """MACs of one router-training step on (x0, y), counted by executing it (``flops.count_train_macs``): two
    no-grad full passes (step s-1, the target at s), the mixed pass at s and its backward to the router (the DiT's
    weights take no gradient)."""
    from ditpareto.flops import count_train_macs

    model.requires_grad_(False)
    model.router.logits.requires_grad_(True)
    try:
        return count_train_macs(L2CLoss(sparsity_weight, routed_steps), model, x0, y, diffusion)
    finally:
        model.router.logits.requires_grad_(False)


# ------------------------------------------------------------------------------------------------------- loading
def load_cached_state(model: CachedDiT, path_or_state: str | os.PathLike | Mapping, what: str) -> CachedDiT:
    """Validate and load a CachedDiT checkpoint: the DiT's keys, plus ``router.logits`` when the model has a
    router (its shape (S-1, D, 2) and finite values checked, with a message naming what is wrong)."""
    if isinstance(path_or_state, Mapping):
        source, obj = "state dict", path_or_state
    else:
        source, obj = f"checkpoint {path_or_state}", read_checkpoint(path_or_state)
    state = extract_state_dict(obj, source)
    expected = model.state_dict()
    if model.router is not None:
        logits = state.get(ROUTER_KEY)
        want = tuple(expected[ROUTER_KEY].shape)
        if logits is None:
            raise CheckpointError(f"{source} has no L2C router ({ROUTER_KEY}): an l2c checkpoint is a DiT state dict "
                                  f"plus {ROUTER_KEY} {want}, written by the l2c method's convert or fine-tune")
        if tuple(logits.shape) != want:
            raise CheckpointError(f"{source}: {ROUTER_KEY} has shape {tuple(logits.shape)}, {what} expects {want} "
                                  f"(sampler steps - 1 = {want[0]}, depth {want[1]}, 2 sublayers): was the router "
                                  "trained for another step count or model?")
        if not torch.is_floating_point(logits) or not bool(torch.isfinite(logits).all()):
            raise CheckpointError(f"{source}: {ROUTER_KEY} holds non-finite or non-float values")
    elif ROUTER_KEY in state:
        raise CheckpointError(f"{source} holds an L2C router ({ROUTER_KEY}); load it with the l2c method")
    validate_state_dict(state, expected, source, what)
    model.load_state_dict(state)
    return model
