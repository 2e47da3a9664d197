"""Inputs of the paper setting for tests: placeholders (dry runs) and real miniature assets (end-to-end runs).

The miniature assets are random-weight stand-ins in the official formats: a DiT state dict, a diffusers
AutoencoderKL folder, torch-fidelity's InceptionV3 state dict, an ADM reference batch npz (mu, sigma, arr_0) and a
few JPEGs in ImageFolder layout. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ditpareto.compat  # noqa: F401  (before torch_fidelity / diffusers)

# (config section, key) of every local input a paper config names.
PATH_KEYS = (("base", "checkpoint"), ("metrics", "inception_weights"), ("metrics", "reference_batch"),
             ("dataset", "path"), ("latents", "vae"))


def load_config(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def write_config(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def with_placeholders(config: dict, root: Path) -> dict:
    """The config with its local inputs replaced by empty placeholders under ``root`` (enough to plan a dry run)."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for section, key in PATH_KEYS:
        target = root / section / Path(config[section][key]).name
        if key == "path":
            target.mkdir(parents=True, exist_ok=True)
        elif key == "vae":
            target.mkdir(parents=True, exist_ok=True)
            (target / "config.json").write_text("{}")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        config[section][key] = str(target)
    return config


# ---------------------------------------------------------------------------------------------- real miniature


def tiny_vae(folder: Path, seed: int = 0) -> Path:
    """A random AutoencoderKL with SD-VAE's interface (4 latent channels, factor 8) saved as a diffusers folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 8, 8), sample_size=64)
    vae.save_pretrained(str(folder))
    return folder


def image_folder(root: Path, classes: int = 3, per_class: int = 4, seed: int = 0) -> Path:
    """JPEGs of varied sizes (so the centre crop does work) in ImageFolder layout, one colour per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(70, 140, size=2)
            base = np.zeros((h, w, 3), dtype=np.uint8)
            base[..., c % 3] = 200
            pixels = np.clip(base + rng.integers(0, 50, size=(h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"n{c:08d}" / f"img_{i}.JPEG", quality=90)
    return root


def official_dit(path: Path, model: str, image_size: int, num_classes: int, seed: int = 0) -> Path:
    """A random-weight DiT saved as the official checkpoints are: a bare state dict."""
    from ditpareto.models import build_dit

    torch.manual_seed(seed)
    net = build_dit(model, image_size, in_channels=4, num_classes=num_classes)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # DiT's init zeroes adaLN and the head: make the output non-trivial
    torch.save(net.state_dict(), path)
    return path


def random_inception(path: Path) -> Path:
    """A randomly initialised state dict with the exact layout of torch-fidelity's InceptionV3 (no download)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fidelity_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        net = fidelity_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():  # variance-preserving convolutions: features that vary with the input
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


def reference_batch(path: Path, inception: Path, count: int = 8, size: int = 64, seed: int = 0) -> Path:
    """An ADM-format reference batch: uint8 images ``arr_0`` and the pool3 ``mu``/``sigma`` of them."""
    from ditpareto.metrics import INCEPTION_EXTRACTOR, MetricSettings, register_extractors
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    from ditpareto.metrics import _UInt8Images

    rng = np.random.default_rng(seed + 1000)  # not the pipeline's noise images (seed 0)
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):  # one saturated channel per image plus mild texture, like image_folder's
        image[..., i % 3] = 200
        image[:] = np.clip(image + rng.integers(0, 50, size=image.shape), 0, 255)
    settings = MetricSettings(INCEPTION_EXTRACTOR, str(inception), progress=False)
    register_extractors()
    extractor = create_feature_extractor(INCEPTION_EXTRACTOR, ["2048"], cuda=False, verbose=False,
                                         feature_extractor_weights_path=settings.weights_path)
    features = get_featuresdict_from_dataset(_UInt8Images(images), extractor, count, False, True, False)
    stats = fid_featuresdict_to_statistics(features, "2048")
    np.savez(path, arr_0=images, mu=stats["mu"].astype(np.float64), sigma=stats["sigma"].astype(np.float64))
    return path


class _I3DStandIn(torch.nn.Module):
    """Random-weight stand-in with StyleGAN-V's I3D TorchScript call: uint8 (N, 3, T, H, W) and the keyword
    arguments rescale, resize, return_features -> (N, 400) features (logits otherwise)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 16, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
        self.features = torch.nn.Linear(16 * 4, 400)
        self.logits = torch.nn.Linear(400, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = torch.nn.functional.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        h = torch.relu(self.conv(x))
        h = torch.nn.functional.adaptive_avg_pool3d(h, (1, 2, 2)).flatten(1)
        features = self.features(h)
        return features if return_features else self.logits(features)


def i3d_torchscript(path: Path, seed: int = 0) -> Path:
    """A TorchScript file in the official detector's format (random weights)."""
    torch.manual_seed(seed)
    torch.jit.script(_I3DStandIn().eval()).save(str(path))
    return path


# ------------------------------------------------------------------------------------- paper video (Latte)


def write_avi(path: Path, frames: np.ndarray) -> Path:
    """uint8 frames (T, H, W, 3) as MPEG-4 part 2 in AVI, as UCF101 ships (xvid)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt, stream.bit_rate = "yuv420p", 4_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def ucf101_folder(root: Path, classes: int = 3, per_class: int = 2, frames: int = 52, seed: int = 0) -> Path:
    """UCF101's layout (videos/<Class>/v_<Class>_gXX_cYY.avi): a coloured square moving over noise per video, 48 x 64
    px (decord reads MPEG-4 frames whose sides are multiples of 16)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        name = f"Class{c}"
        for g in range(per_class):
            clip = rng.integers(0, 60, size=(frames, 48, 64, 3)).astype(np.uint8)
            for t in range(frames):
                x = (2 * t) % 56
                clip[t, 10:18, x:x + 8, c % 3] = 230
            write_avi(root / "videos" / name / f"v_{name}_g{g + 1:02d}_c01.avi", clip)
    return root


def official_latte(path: Path, model: str, image_size: int, num_classes: int, seed: int = 0) -> Path:
    """A random-weight Latte saved as Latte's train.py saves its checkpoints (the released ones too): {"ema": ...}."""
    from ditpareto.models import build_model

    torch.manual_seed(seed)
    net = build_model(model, image_size, in_channels=4, num_classes=num_classes)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)  # the zero-initialised gates and head: a non-trivial output
    state = net.state_dict()
    torch.save({"ema": state}, path)
    return path
