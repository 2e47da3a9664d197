"""Diffusion Transformer (Peebles & Xie, 2023) with the parameter names and shapes of facebookresearch/DiT.

A re-implementation from the paper and the published checkpoint layout, so that official checkpoints
(`DiT-XL-2-256x256.pt`: a bare state dict) load without renaming.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ditpareto.archs import DiTConfig
from ditpareto.errors import InputError


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#               Embedding Layers for Timesteps and Class Labels                 #
#################################################################################


class PatchEmbed(nn.Module):
    """Image to patch tokens with a strided convolution (timm's layout: ``proj``)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Embeds scalar timesteps into vectors: sinusoidal features followed by a two-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """Embeds class labels; the extra last row is the null class used for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        drop = torch.rand(labels.shape[0], device=labels.device, generator=generator) < self.dropout_prob
        return torch.where(drop, self.num_classes, labels)

    def forward(self, labels: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        if train and self.dropout_prob > 0:
            labels = self.token_drop(labels, generator)
        return self.embedding_table(labels)


#################################################################################
#                                 Core DiT Model                                #
#################################################################################


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm's layout: ``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two-layer MLP with tanh-approximated GELU (timm's layout: ``fc1``, ``fc2``)."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """A DiT block with adaptive layer norm zero (adaLN-Zero) conditioning."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """The final layer of DiT: adaLN-modulated norm and a linear map back to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Diffusion model with a Transformer backbone."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        if config.input_size % config.patch_size:
            raise InputError(f"input size {config.input_size} is not divisible by patch size {config.patch_size}")
        self.config = config
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels
        self.patch_size = config.patch_size
        self.num_heads = config.num_heads
        hidden = config.hidden_size
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(config.num_classes, hidden, config.class_dropout_prob)
        # Fixed sin-cos embedding, stored in the state dict as in the official checkpoints.
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, hidden), requires_grad=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden, config.num_heads, mlp_ratio=config.mlp_ratio) for _ in range(config.depth)]
        )
        self.final_layer = FinalLayer(hidden, config.patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        initialize_dit_weights(self)

    def unpatchify(self, x: torch.Tensor, patch_size: int | None = None) -> torch.Tensor:
        """(N, T, p*p*C) tokens -> (N, C, H, W) images."""
        p = patch_size or self.patch_size
        c = self.out_channels
        h = w = int(round(x.shape[1] ** 0.5))
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def condition(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """adaLN conditioning vector c = t_emb + y_emb."""
        return self.t_embedder(t) + self.y_embedder(y, self.training)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) noisy input, t: (N,) diffusion timesteps, y: (N,) class labels."""
        c = self.condition(t, y)
        x = self.x_embedder(x) + self.pos_embed
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float, guidance_channels: str = "dit3"
    ) -> torch.Tensor:
        """Classifier-free guidance over a batch whose second half carries the null label."""
        return guided_forward(self.forward, x, t, y, cfg_scale, self.in_channels, guidance_channels)


def initialize_dit_weights(model: nn.Module) -> None:
    """DiT's initialisation (Xavier linears, sin-cos positions, adaLN-Zero, zero output layer) of a DiT or a Latte
    model; a model without ``y_embedder`` (unconditional) skips it."""

    def _basic_init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    model.apply(_basic_init)
    pos = get_2d_sincos_pos_embed(model.pos_embed.shape[-1], model.config.grid_size)
    model.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))
    w = model.x_embedder.proj.weight.data
    nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
    nn.init.zeros_(model.x_embedder.proj.bias)
    if hasattr(model, "y_embedder"):
        nn.init.normal_(model.y_embedder.embedding_table.weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)
    for block in model.blocks:  # adaLN-Zero
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    nn.init.zeros_(model.final_layer.adaLN_modulation[-1].weight)
    nn.init.zeros_(model.final_layer.adaLN_modulation[-1].bias)
    nn.init.zeros_(model.final_layer.linear.weight)
    nn.init.zeros_(model.final_layer.linear.bias)


def guided_forward(forward, x, t, y, cfg_scale: float, in_channels: int, guidance_channels: str = "dit3"):
    """DiT's ``forward_with_cfg`` for any ``forward(x, t, y)``.

    ``guidance_channels="dit3"`` guides the first three output channels, as the official DiT does "for exact
    reproducibility" (with 4 latent channels the 4th is left unguided); ``"all"`` guides every noise channel.
    """
    half = x[: len(x) // 2]
    model_out = forward(torch.cat([half, half], dim=0), t, y)
    guided = guided_channel_count(in_channels, guidance_channels)
    dim = 2 if x.ndim == 5 else 1  # the channel axis: clips (N, F, C, H, W) as Latte lays them out
    eps, rest = model_out.narrow(dim, 0, guided), model_out.narrow(dim, guided, model_out.shape[dim] - guided)
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
    return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=dim)


def guided_channel_count(in_channels: int, guidance_channels: str) -> int:
    if guidance_channels == "dit3":
        return min(3, in_channels)
    if guidance_channels == "all":
        return in_channels
    raise ValueError(f"guidance_channels must be 'dit3' or 'all', got {guidance_channels!r}")


#################################################################################
#                   Sine/Cosine Positional Embedding Functions                  #
#################################################################################


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """(grid_size**2, embed_dim) fixed 2-D sin-cos embedding, in the official DiT's coordinate order."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid_size, grid_size)
    return get_2d_sincos_pos_embed_from_grid(embed_dim, grid)


def get_2d_sincos_pos_embed_from_grid(embed_dim: int, grid: np.ndarray) -> np.ndarray:
    if embed_dim % 2:
        raise ValueError("embed_dim must be even")
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    if embed_dim % 2:
        raise ValueError("embed_dim must be even")
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


#################################################################################
#                                   DiT Configs                                 #
#################################################################################
