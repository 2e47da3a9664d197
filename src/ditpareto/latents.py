"""SD-VAE latents with diffusers' ``AutoencoderKL``, loaded from a local folder only (never downloaded).

DiT's convention: ``z = vae.encode(x).latent_dist.sample() * 0.18215`` for x in [-1, 1]; samples are decoded with
``vae.decode(z / 0.18215).sample``. Encoding draws the posterior sample from a seeded generator: the prepared
latents are a function of the images and the seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ditpareto.errors import InputError


def load_vae(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """``AutoencoderKL.from_pretrained(folder)`` offline (a diffusers folder: config.json + weights)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if not (Path(folder) / "config.json").is_file():
        raise InputError(f"VAE folder {folder} has no config.json (config key latents.vae; a diffusers "
                         "AutoencoderKL folder such as a local copy of stabilityai/sd-vae-ft-ema)")
    import json

    import ditpareto.compat  # noqa: F401  (before diffusers imports torchvision)
    from diffusers import AutoencoderKL

    from ditpareto.models.checkpoint import extract_state_dict, read_checkpoint

    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"VAE folder {folder}: config.json is not JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise InputError(f"VAE folder {folder}: config.json does not describe an AutoencoderKL "
                         f"(_class_name {config.get('_class_name') if isinstance(config, dict) else config!r})")
    weights = [p for p in Path(folder).iterdir() if p.name.startswith("diffusion_pytorch_model")]
    if not weights:
        raise InputError(f"VAE folder {folder} has no weights (diffusion_pytorch_model.safetensors or .bin)")
    for path in sorted(Path(folder).glob("*.bin")) + sorted(Path(folder).glob("*.pt*")):
        # pickled weights are checked with weights_only=True before diffusers opens them (safetensors hold no code)
        extract_state_dict(read_checkpoint(path), f"VAE weights {path}")
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise InputError(f"VAE folder {folder} does not load as an AutoencoderKL ({type(exc).__name__}: "
                         f"{first})") from None
    return vae.to(device).eval().requires_grad_(False)


def vae_factor(vae) -> int:
    """Pixels per latent side (8 for SD-VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> scaled latents (N, C, H/f, W/f) float32 on the CPU."""
    device = next(vae.parameters()).device
    x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
    posterior = vae.encode(x).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator).to(device)
    return ((posterior.mean + posterior.std * noise) * scale).float().cpu()


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (N, 3, H, W) on the latents' device; clips (N, F, C, h, w) frame by
    frame -> (N, F, 3, H, W)."""
    if latents.ndim == 5:
        frames = decode_latents(vae, latents.flatten(0, 1), scale)
        return frames.unflatten(0, latents.shape[:2])
    device = next(vae.parameters()).device
    return vae.decode(latents.to(device) / scale).sample.to(latents.device)


def encode_clips(vae, clips: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """uint8 clips (N, F, H, W, 3) -> scaled latents (N, F, C, H/f, W/f) float32 on the CPU, frame by frame (Latte's
    training encodes every frame alone with the image SD-VAE)."""
    return encode_images(vae, clips.flatten(0, 1), scale, generator).unflatten(0, clips.shape[:2])


def _stack(items):
    return torch.from_numpy(np.stack([image for image, _ in items])), torch.tensor([label for _, label in items])


def encode_image_folder(folder, vae, scale: float, batch_size: int, seed: int, workers: int = 0):
    """Encode every image of an ``ImageFolder`` (see ``data.image_folder``): (latents float32, labels int64)."""
    if len(folder) == 0:
        raise InputError(f"image folder {folder.root} has no images")
    loader = torch.utils.data.DataLoader(folder, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_stack)
    generator = torch.Generator().manual_seed(seed)
    latents, labels = [], []
    for images, y in tqdm(loader, desc="encode", mininterval=10):
        latents.append(encode_images(vae, images, scale, generator))
        labels.append(y)
    return torch.cat(latents).numpy(), torch.cat(labels).numpy().astype(np.int64)
