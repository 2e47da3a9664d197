"""The DyDiT authors' released checkpoints (``alibaba-damo-academy/DyDiT``, files ``DyDiT/models.py`` and
``DyDiT/dynamic_model.py``; HF ``heisejiasuo/DyDiT``: ``new_dydit0.7.pt``, ``new_dydit0.5.pt``) as our ``DyDiT``.

Key map, per block i; every other key is DiT's and unchanged (the official ``DynaQKVLinear`` / ``DynaLinear`` subclass
``nn.Linear`` and keep the names ``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``)::

    blocks.{i}.attn_rate.router.{weight,bias}       -> blocks.{i}.head_router.*    Linear(D, H-1)
    blocks.{i}.mlp_rate.router.{weight,bias}        -> blocks.{i}.group_router.*   Linear(D, H-1): a group per head
    blocks.{i}.token_selection.mlp_head.{0,2}.*     -> blocks.{i}.token_router.{0,2}.*

Our conventions are the official forward's (``DiTBlock.forward`` in ``DyDiT/models.py``; ``Router``, ``TokenSelect``
and ``_gumbel_sigmoid`` in ``DyDiT/dynamic_model.py``), so nothing but the names changes:

* both width routers read the timestep embedding ``t_embedder(t)`` (not ``c = t + y``) and unit 0 is always on
  (``torch.concatenate((ones, mask))``);
* at inference (``model.eval()``) ``_gumbel_sigmoid`` keeps a unit where ``sigmoid(logit) > 0.5``, i.e. logit > 0,
  with no noise and no temperature: our "hard" gates and the sliced path's masks;
* head h's gate scales head h's attention output before ``proj``; MLP group g's gates ``fc1`` output channels
  [g k, (g + 1) k), k = MLP width / H, before the GELU (GELU(0) = 0, so the same as gating after it);
* the token router reads the residual stream after the attention update and scales the whole MLP branch, bias
  included (``x + token_select * gate_mlp * mlp(...)``).

Files are DiT training checkpoints ``{"model", "ema", "opt", "args"}`` (the EMA weights are used, as DiT's
``find_model`` does; ``args`` is an ``argparse.Namespace``, the one class allowed besides tensors) or a bare state dict.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping

import torch

from ditpareto.models.checkpoint import CheckpointError, extract_state_dict, read_checkpoint, validate_state_dict

OFFICIAL_REPOSITORY = "alibaba-damo-academy/DyDiT"
# official module path -> ours, inside blocks.{i}.
RENAMES = {"attn_rate.router": "head_router", "mlp_rate.router": "group_router",
           "token_selection.mlp_head": "token_router"}
_OFFICIAL_KEY = re.compile(r"^(blocks\.\d+\.)(" + "|".join(map(re.escape, RENAMES)) + r")\.(.+)$")
_OUR_KEY = re.compile(r"^(blocks\.\d+\.)(" + "|".join(map(re.escape, RENAMES.values())) + r")\.(.+)$")
_INVERSE = {ours: official for official, ours in RENAMES.items()}


def official_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official DyDiT state dict with our key names (router keys renamed, the rest as they are)."""
    return {_OFFICIAL_KEY.sub(lambda m: f"{m[1]}{RENAMES[m[2]]}.{m[3]}", k): v for k, v in state.items()}


def ours_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our DyDiT state dict with the official key names (the inverse of ``official_to_ours``)."""
    return {_OUR_KEY.sub(lambda m: f"{m[1]}{_INVERSE[m[2]]}.{m[3]}", k): v for k, v in state.items()}


def read_official(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in the official names, what was read: ``entry`` "ema" / "model" / "state dict", the training
    ``args`` as plain values, the ``repository``) of a released or training checkpoint; ``weights_only=True``."""
    obj = read_checkpoint(path, allowed_globals=(argparse.Namespace,))
    entry = next((k for k in ("ema", "model") if isinstance(obj.get(k), Mapping)), "state dict")
    state = extract_state_dict(obj, f"DyDiT checkpoint {path}")
    args = obj.get("args")
    plain = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))} \
        if isinstance(args, argparse.Namespace) else {}
    return state, {"entry": entry, "args": plain, "repository": OFFICIAL_REPOSITORY}


def _router_widths(state: Mapping[str, torch.Tensor], part: str) -> dict[int, int]:
    """Block index -> output count of its ``part`` router (``attn_rate`` or ``mlp_rate``) in an official state."""
    widths = {}
    for key, value in state.items():
        match = re.fullmatch(rf"blocks\.(\d+)\.{part}\.router\.weight", key)
        if match and value.dim() == 2:
            widths[int(match[1])] = value.shape[0]
    return widths


def check_official(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str,
                   what: str) -> None:
    """Raise one CheckpointError when an official state dict does not fit ``expected`` (our DyDiT's state dict):
    a plain DiT (no routers), MLP groups that are not one per head, or the generic check (every missing, unexpected,
    mis-shaped or non-finite key, named as in the file)."""
    if not any(_OFFICIAL_KEY.match(k) for k in state):
        kind = "a plain DiT" if any(k.startswith("blocks.") for k in state) else "no DyDiT blocks"
        raise CheckpointError(f"{source} holds {kind}: no DyDiT routers (blocks.<i>.attn_rate.router, "
                              "blocks.<i>.mlp_rate.router, blocks.<i>.token_selection.mlp_head); a DiT is the base "
                              "(import-base), not a DyDiT checkpoint")
    heads, groups = _router_widths(state, "attn_rate"), _router_widths(state, "mlp_rate")
    unequal = sorted(i for i in heads.keys() & groups.keys() if heads[i] != groups[i])
    if unequal:
        i = unequal[0]
        raise CheckpointError(f"{source} has {groups[i] + 1} MLP groups but {heads[i] + 1} heads in block(s) "
                              f"{unequal[:6]} (blocks.{i}.mlp_rate.router: Linear(D, {groups[i]}), attn_rate.router: "
                              f"Linear(D, {heads[i]})): the official DyDiT has one MLP group per head")
    official = ours_to_official(expected)
    want = official.get("blocks.0.attn_rate.router.weight")
    if want is not None and heads.get(0) == want.shape[0] + 1:
        raise CheckpointError(f"{source} has H-output routers (blocks.0.attn_rate.router: {heads[0]} outputs for "
                              f"{heads[0]} heads): the earlier release's format without a forced head 0; only "
                              "the 2025-03-26 release (new_dydit*.pt, H-1 outputs) is supported")
    validate_state_dict(state, official, source, what)
