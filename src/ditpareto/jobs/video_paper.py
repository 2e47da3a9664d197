"""The paper video setting's jobs (config ``video.dataset``): clips of Latte's datasets encoded frame by frame with
the SD-VAE, and FVD as StyleGAN-V computes it (I3D features of 2 048 real clips from the training split, every 3rd
frame, against the generated clips). Nothing is downloaded: every input is a local path."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ditpareto.bootstrap import moments
from ditpareto.data import LatentSet, save_draw
from ditpareto.errors import InputError
from ditpareto.fvd import FVD_CLIPS, FVD_FRAMES, REAL_STRIDE, i3d_features, load_i3d, real_clip_windows
from ditpareto.npzfiles import read_npz, save_npz
from ditpareto.results import provenance, sha256_of, write_json
from ditpareto.study import SD_VAE_SCALE

FVD_STATS_KEYS = ("mu", "sigma", "clips", "frames", "stride", "size", "seed")


def encode_video_dataset(*, layout: str, root: str, vae: str, out: str, clips: int, frames: int = 16,
                         interval: int = 3, size: int = 256, latent_scale: float = SD_VAE_SCALE, seed: int = 0,
                         batch_size: int = 4, device: str = "auto") -> dict:
    """Training clips of one of Latte's datasets as SD-VAE latents (N, F, 4, size/8, size/8), each frame encoded
    alone: ``clips`` windows of ``frames`` frames evenly spaced over ``frames`` x ``interval`` (Latte's temporal
    crop), videos in a seeded order; labels are UCF101's class indices (0 for the unconditional datasets). A record
    <out>.json beside it.

    Example: python -m ditpareto encode-video-dataset --layout ffs --root external/ffs --vae external/sd-vae-ft-ema
    --clips 20000 --out resources/video/train.npz
    """
    from ditpareto.latents import encode_clips, load_vae, vae_factor
    from ditpareto.runtime import resolve_device
    from ditpareto.video_datasets import clip_windows, list_videos, read_window

    entries = list_videos(layout, root)
    windows = clip_windows(entries, clips, frames=frames, interval=interval, seed=seed)
    autoencoder = load_vae(vae, resolve_device(device))
    if size % vae_factor(autoencoder):
        raise InputError(f"frame size {size} is not divisible by the VAE's factor {vae_factor(autoencoder)}")
    generator = torch.Generator().manual_seed(seed)
    latents, labels = [], []
    for start in tqdm(range(0, len(windows), batch_size), desc="encode clips", disable=len(windows) <= batch_size):
        chunk = windows[start:start + batch_size]
        pixels = np.stack([read_window(entries[w.video], w.indices, size) for w in chunk])
        latents.append(encode_clips(autoencoder, torch.from_numpy(pixels), latent_scale, generator).numpy())
        labels.extend(entries[w.video].label for w in chunk)
    data = LatentSet(np.concatenate(latents).astype(np.float32), np.asarray(labels, dtype=np.int64))
    save_draw(data, out)
    record = {"layout": layout, "root": str(root), "videos": len(entries), "clips": len(windows), "frames": frames,
              "interval": interval, "size": size, "latent_shape": list(data.latents.shape[1:]), "vae": str(vae),
              "latent_scale": latent_scale, "seed": seed, "sha256": sha256_of(out), **provenance()}
    write_json(record, str(out) + ".json")
    return {"clips": len(windows), "videos": len(entries), "out": out}


def fvd_reference(*, layout: str, root: str, i3d: str, out: str, clips: int = FVD_CLIPS, frames: int = FVD_FRAMES,
                  stride: int = REAL_STRIDE, size: int = 256, seed: int = 0, batch_size: int = 8,
                  device: str = "auto") -> dict:
    """The real side of FVD, computed once: I3D feature mean and covariance of ``clips`` real clips from the
    training split (StyleGAN-V: ``frames`` consecutive frames taken every ``stride``-th, at a seeded start per
    video; videos too short are discarded), with the count and protocol pinned in the file.

    Example: python -m ditpareto fvd-reference --layout ffs --root external/ffs --i3d external/fvd/i3d_torchscript.pt
    --out resources/video/fvd_reference.npz
    """
    from ditpareto.runtime import resolve_device
    from ditpareto.video_datasets import list_videos, read_window

    target = resolve_device(device)
    detector = load_i3d(i3d, target)
    entries = list_videos(layout, root)
    windows = real_clip_windows([e.num_frames for e in entries], clips, frames, stride, seed)
    features = []
    for start in tqdm(range(0, len(windows), batch_size), desc="real clips", disable=len(windows) <= batch_size):
        chunk = np.stack([read_window(entries[w.video], w.indices, size) for w in windows[start:start + batch_size]])
        features.append(i3d_features(detector, chunk, batch_size, target))
    features = np.concatenate(features)
    mu, sigma = moments(features)
    save_npz({"mu": mu, "sigma": sigma, "clips": np.int64(len(windows)), "frames": np.int64(frames),
              "stride": np.int64(stride), "size": np.int64(size), "seed": np.int64(seed)}, out, compress=False)
    write_json({"layout": layout, "root": str(root), "videos": len(entries), "clips": len(windows), "frames": frames,
                "stride": stride, "size": size, "seed": seed, "i3d_sha256": sha256_of(i3d), "sha256": sha256_of(out),
                **provenance()}, str(out) + ".json")
    return {"clips": len(windows), "videos": len(entries), "out": out}


def read_fvd_reference(path: str) -> dict[str, np.ndarray]:
    """An ``fvd-reference`` file, checked: its keys, a square covariance of the mean's size, finite values."""
    arrays = read_npz(path, "FVD reference")
    missing = [k for k in FVD_STATS_KEYS if k not in arrays]
    if missing:
        raise InputError(f"FVD reference {path} lacks {missing} (write it with fvd-reference)")
    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputError(f"FVD reference {path}: mu {mu.shape} and sigma {sigma.shape} are not a finite mean and "
                         "its square covariance")
    return arrays


def evaluate_fvd(*, samples: str, record: str, reference: str, i3d: str, out: str, batch_size: int = 8,
                 device: str = "auto") -> dict:
    """FVD of a grid point's clips (uint8 frames decoded from latents) against ``fvd-reference``'s statistics, with
    its sampling record's fields (GMACs, latency); the clip counts of both sides are recorded. Record checked first.

    Example: python -m ditpareto evaluate-fvd --samples s.npz --record s.json --reference fvd_reference.npz
    --i3d external/fvd/i3d_torchscript.pt --out metrics.json
    """
    from ditpareto.bootstrap import frechet_distance
    from ditpareto.npzfiles import load_samples
    from ditpareto.results import SAMPLE_RECORD_KEYS, read_record
    from ditpareto.runtime import resolve_device

    result = read_record(record, required=SAMPLE_RECORD_KEYS)  # before any compute
    real = read_fvd_reference(reference)
    generated = load_samples(samples)["images"]
    if generated.ndim != 5 or generated.shape[1] != int(real["frames"]):
        raise InputError(f"samples {samples} hold {generated.shape}, not clips (N, {int(real['frames'])}, H, W, C) "
                         f"as the FVD reference {reference}")
    count = result["params"].get("num_samples")
    if len(generated) != count:
        raise InputError(f"samples {samples} hold {len(generated)} clips; their record {record} says {count}")
    target = resolve_device(device)
    features = i3d_features(load_i3d(i3d, target), generated, batch_size, target)
    mu, sigma = moments(features)
    fvd = frechet_distance(mu, sigma, real["mu"], real["sigma"])
    result.update({"fvd": float(fvd), "fvd_generated_clips": len(generated), "fvd_real_clips": int(real["clips"])})
    result["params"].update({"i3d_sha256": sha256_of(i3d), "fvd_reference_sha256": sha256_of(reference),
                             "fvd_real_stride": int(real["stride"])})
    write_json(result, out)
    return {"fvd": round(float(fvd), 3), "clips": len(generated)}
