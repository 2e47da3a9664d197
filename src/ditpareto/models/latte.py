"""Latte-style video DiT (Ma et al., 2024, variant 1): spatial blocks (attention within a frame) alternate with
temporal blocks (attention across the frames at one location), adaLN-Zero conditioned on t (and the class).

Parameter names and shapes are those of the official Latte checkpoints (``blocks.{2i}`` spatial, ``blocks.{2i+1}``
temporal, ``temp_embed``; no ``y_embedder`` for an unconditional model), which are DiT's names, so a spatial block
is a DiT block. ``inflate_image_dit`` builds a video model from an image DiT: its blocks become the spatial
blocks, the temporal blocks start with zero adaLN gates, and with ``temporal_position="temporal"`` the result
equals the image model on every frame.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn as nn

from ditpareto.archs import LatteConfig
from ditpareto.errors import InputError
from ditpareto.models.dit import (
    DiTBlock, FinalLayer, LabelEmbedder, PatchEmbed, TimestepEmbedder, get_1d_sincos_pos_embed_from_grid,
    guided_forward, initialize_dit_weights, modulate,
)


class TemporalBlock(DiTBlock):
    """A DiT block over the frames at one location; ``position`` (frames, D), when given, is added to the input
    of its attention only (``temporal_position="temporal"``)."""

    def forward(self, x: torch.Tensor, c: torch.Tensor, position: torch.Tensor | None = None) -> torch.Tensor:
        if position is None:
            return super().forward(x, c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x + position), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


def add_latte_embedders(module: nn.Module, config: LatteConfig) -> None:
    """Latte's input side on ``module``, under its names: ``x_embedder``, ``t_embedder``, ``y_embedder`` (class-
    conditional models only), the fixed ``pos_embed`` and ``temp_embed`` tables (filled by the weight init)."""
    hidden = config.hidden_size
    module.x_embedder = PatchEmbed(config.patch_size, config.in_channels, hidden)
    module.t_embedder = TimestepEmbedder(hidden)
    if config.num_classes > 0:
        module.y_embedder = LabelEmbedder(config.num_classes, hidden, config.class_dropout_prob)
    module.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, hidden), requires_grad=False)
    module.temp_embed = nn.Parameter(torch.zeros(1, config.num_frames, hidden), requires_grad=False)


class Latte(nn.Module):
    """Video diffusion model: x (N, F, C, H, W) -> (N, F, out_channels, H, W)."""

    def __init__(self, config: LatteConfig):
        super().__init__()
        if config.input_size % config.patch_size:
            raise InputError(f"input size {config.input_size} is not divisible by patch size {config.patch_size}")
        self.config = config
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels
        self.patch_size = config.patch_size
        self.num_heads = config.num_heads
        hidden = config.hidden_size
        add_latte_embedders(self, config)
        self.blocks = nn.ModuleList(
            [(TemporalBlock if i % 2 else DiTBlock)(hidden, config.num_heads, mlp_ratio=config.mlp_ratio)
             for i in range(config.depth)]
        )
        self.final_layer = FinalLayer(hidden, config.patch_size, self.out_channels)
        self.initialize_weights()

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    def initialize_weights(self) -> None:
        """DiT's initialisation (the temporal blocks too: adaLN-Zero) and the fixed frame embedding."""
        initialize_dit_weights(self)
        self.temp_embed.data.copy_(torch.from_numpy(
            temporal_sincos_embed(self.temp_embed.shape[-1], self.config.num_frames)).float().unsqueeze(0))

    def condition(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """adaLN conditioning per clip: t_emb (+ y_emb for a class-conditional model)."""
        c = self.t_embedder(t)
        return c + self.y_embedder(y, self.training) if self.conditional else c

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N*F, T, p*p*C) tokens -> (N*F, C, H, W) frames."""
        p, c = self.patch_size, self.out_channels
        h = w = self.config.grid_size
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, F, C, H, W) noisy clips, t: (N,) timesteps, y: (N,) labels (ignored when unconditional)."""
        n, f = x.shape[:2]
        if f != self.config.num_frames:
            raise InputError(f"the model takes {self.config.num_frames}-frame clips, got {f} frames")
        c = self.condition(t, y)
        spatial_c = c.repeat_interleave(f, dim=0)  # (N*F, D): one row per frame
        x = self.x_embedder(x.flatten(0, 1)) + self.pos_embed  # (N*F, T, D)
        tokens = x.shape[1]
        temporal_c = c.repeat_interleave(tokens, dim=0)  # (N*T, D): one row per location
        in_stream = self.config.temporal_position == "stream"
        position = None if in_stream else self.temp_embed[0]
        for i in range(0, len(self.blocks), 2):
            x = self.blocks[i](x, spatial_c)
            x = x.reshape(n, f, tokens, -1).transpose(1, 2).reshape(n * tokens, f, -1)  # (N*T, F, D)
            if in_stream and i == 0:
                x = x + self.temp_embed
            x = self.blocks[i + 1](x, temporal_c, position)
            x = x.reshape(n, tokens, f, -1).transpose(1, 2).reshape(n * f, tokens, -1)  # (N*F, T, D)
        x = self.unpatchify(self.final_layer(x, spatial_c))
        return x.reshape(n, f, *x.shape[1:])

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                         guidance_channels: str = "all") -> torch.Tensor:
        """Classifier-free guidance over a batch whose second half carries the null label (Latte guides all latent
        channels)."""
        return guided_forward(self.forward, x, t, y, cfg_scale, self.in_channels, guidance_channels)


def temporal_sincos_embed(embed_dim: int, frames: int) -> np.ndarray:
    """(frames, embed_dim) 1-D sin-cos embedding of the frame index (Latte's ``temp_embed``)."""
    return get_1d_sincos_pos_embed_from_grid(embed_dim, np.arange(frames, dtype=np.float64))


def inflate_image_dit(image_state: Mapping[str, torch.Tensor], config: LatteConfig,
                      seed: int = 0) -> dict[str, torch.Tensor]:
    """A Latte state dict from an image DiT's (official layout): embedders, final layer and position embedding
    copied, image block i -> ``blocks.{2i}``, temporal blocks freshly initialised (seeded) with zero adaLN
    gates. Shapes are checked against ``config``."""
    torch.manual_seed(seed)
    model = Latte(config)
    state = model.state_dict()
    image_blocks = {int(k.split(".")[1]) for k in image_state if k.startswith("blocks.")}
    if len(image_blocks) != config.spatial_depth:
        raise InputError(f"the image DiT has {len(image_blocks)} blocks; {config.spatial_depth} spatial blocks "
                         f"need as many")
    copied = set()
    for key, value in image_state.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            target = f"blocks.{2 * int(index)}.{rest}"
        else:
            target = key
        if target not in state:
            if key.startswith("y_embedder.") and not model.conditional:
                continue  # an unconditional video model drops the class embedding
            raise InputError(f"image DiT key {key} has no place in the video model")
        if state[target].shape != value.shape:
            raise InputError(f"image DiT key {key} has shape {tuple(value.shape)}; the video model needs "
                             f"{tuple(state[target].shape)}")
        state[target] = value.detach().clone().to(state[target].dtype)
        copied.add(target)
    fresh = {k for k in state if k.startswith(tuple(f"blocks.{i}." for i in range(1, config.depth, 2)))}
    missing = sorted(set(state) - copied - fresh - {"temp_embed"})
    if missing:
        raise InputError(f"the image DiT lacks {len(missing)} key(s) the video model needs: {', '.join(missing[:6])}")
    return state
