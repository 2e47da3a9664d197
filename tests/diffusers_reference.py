"""Build diffusers' ``DiTTransformer2DModel`` from a state dict in the official facebookresearch/DiT layout.

Used only by the tests, as an independent reference implementation of the DiT forward pass. The key
mapping follows diffusers 0.42's ``DiTTransformer2DModel``:

* ``x_embedder.proj``             -> ``pos_embed.proj`` (the sin-cos table itself is a non-persistent buffer that
  diffusers recomputes, so the official ``pos_embed`` tensor has no diffusers counterpart; the tests compare them)
* ``t_embedder.mlp.0 / .2``       -> ``transformer_blocks.N.norm1.emb.timestep_embedder.linear_1 / linear_2``
* ``y_embedder.embedding_table``  -> ``transformer_blocks.N.norm1.emb.class_embedder.embedding_table``
  (diffusers' ada_norm_zero gives every block its own copy of the t/y embedders; the final layer reuses block 0's)
* ``blocks.N.adaLN_modulation.1`` -> ``transformer_blocks.N.norm1.linear`` (same chunk order: shift/scale/gate msa,
  shift/scale/gate mlp)
* ``blocks.N.attn.qkv``           -> ``transformer_blocks.N.attn1.to_q / to_k / to_v`` (split in thirds, q-k-v order)
* ``blocks.N.attn.proj``          -> ``transformer_blocks.N.attn1.to_out.0``
* ``blocks.N.mlp.fc1 / fc2``      -> ``transformer_blocks.N.ff.net.0.proj / ff.net.2``
* ``final_layer.adaLN_modulation.1`` -> ``proj_out_1`` (same shift, scale order)
* ``final_layer.linear``          -> ``proj_out_2``
"""

from __future__ import annotations

import ditpareto.compat  # noqa: F401  (before diffusers: makes the CUDA torchvision wheel importable)

import torch
from diffusers import DiTTransformer2DModel
from diffusers.models.embeddings import Timesteps

from ditpareto.archs import DiTConfig


def diffusers_config(config: DiTConfig, norm_eps: float = 1e-6) -> dict:
    """``DiTTransformer2DModel`` kwargs for a DiT config.

    ``norm_eps`` is the eps of the pre-MLP LayerNorm (``norm3``); the official DiT uses 1e-6 everywhere, while
    diffusers defaults to 1e-5 (norm1 and norm_out are hard-wired to 1e-6).
    """
    if config.hidden_size % config.num_heads:
        raise ValueError("hidden size must be divisible by the head count")
    return dict(
        num_attention_heads=config.num_heads,
        attention_head_dim=config.hidden_size // config.num_heads,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        num_layers=config.depth,
        dropout=0.0,
        attention_bias=True,
        sample_size=config.input_size,
        patch_size=config.patch_size,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=config.num_classes,
        upcast_attention=False,
        norm_type="ada_norm_zero",
        norm_elementwise_affine=False,
        norm_eps=norm_eps,
    )


def convert_state_dict(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Official DiT keys -> diffusers ``DiTTransformer2DModel`` keys (without the non-persistent pos_embed)."""
    out: dict[str, torch.Tensor] = {
        "pos_embed.proj.weight": state["x_embedder.proj.weight"],
        "pos_embed.proj.bias": state["x_embedder.proj.bias"],
        "proj_out_1.weight": state["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": state["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": state["final_layer.linear.weight"],
        "proj_out_2.bias": state["final_layer.linear.bias"],
    }
    for n in range(depth):
        src, dst = f"blocks.{n}.", f"transformer_blocks.{n}."
        emb = dst + "norm1.emb."
        out[emb + "timestep_embedder.linear_1.weight"] = state["t_embedder.mlp.0.weight"]
        out[emb + "timestep_embedder.linear_1.bias"] = state["t_embedder.mlp.0.bias"]
        out[emb + "timestep_embedder.linear_2.weight"] = state["t_embedder.mlp.2.weight"]
        out[emb + "timestep_embedder.linear_2.bias"] = state["t_embedder.mlp.2.bias"]
        out[emb + "class_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"]
        out[dst + "norm1.linear.weight"] = state[src + "adaLN_modulation.1.weight"]
        out[dst + "norm1.linear.bias"] = state[src + "adaLN_modulation.1.bias"]
        q, k, v = state[src + "attn.qkv.weight"].chunk(3, dim=0)
        qb, kb, vb = state[src + "attn.qkv.bias"].chunk(3, dim=0)
        for name, w, b in (("to_q", q, qb), ("to_k", k, kb), ("to_v", v, vb)):
            out[dst + f"attn1.{name}.weight"] = w
            out[dst + f"attn1.{name}.bias"] = b
        out[dst + "attn1.to_out.0.weight"] = state[src + "attn.proj.weight"]
        out[dst + "attn1.to_out.0.bias"] = state[src + "attn.proj.bias"]
        out[dst + "ff.net.0.proj.weight"] = state[src + "mlp.fc1.weight"]
        out[dst + "ff.net.0.proj.bias"] = state[src + "mlp.fc1.bias"]
        out[dst + "ff.net.2.weight"] = state[src + "mlp.fc2.weight"]
        out[dst + "ff.net.2.bias"] = state[src + "mlp.fc2.bias"]
    return {k: v.detach().clone() for k, v in out.items()}


def time_projections(model: torch.nn.Module) -> list[Timesteps]:
    return [m for m in model.modules() if isinstance(m, Timesteps)]


def set_downscale_freq_shift(model: torch.nn.Module, shift: float) -> int:
    """Set every time projection's ``downscale_freq_shift``; returns how many were changed."""
    projections = time_projections(model)
    for proj in projections:
        proj.downscale_freq_shift = shift
    return len(projections)


def build_diffusers_dit(
    state: dict[str, torch.Tensor], config: DiTConfig, official_time_embedding: bool = True, norm_eps: float = 1e-6
) -> DiTTransformer2DModel:
    """A diffusers DiT (eval mode, float32) holding ``state``.

    ``official_time_embedding`` sets ``downscale_freq_shift=0`` on every ``Timesteps`` module: diffusers divides the
    frequency exponent by ``half - 1`` (its default shift 1), the official DiT by ``half``.
    """
    model = DiTTransformer2DModel(**diffusers_config(config, norm_eps=norm_eps))
    converted = convert_state_dict(state, config.depth)
    expected = set(model.state_dict())
    if set(converted) != expected:
        raise KeyError(
            f"conversion mismatch: missing {sorted(expected - set(converted))[:5]}, "
            f"extra {sorted(set(converted) - expected)[:5]}"
        )
    model.load_state_dict(converted, strict=True)
    if official_time_embedding:
        set_downscale_freq_shift(model, 0)
    return model.eval()
