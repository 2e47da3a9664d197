"""The CLI's argument tables: each command is one step function (``ditpareto.jobs``), its flags are parsed here
into the step's typed arguments (settings dataclasses built once), and its help and example come from the step's
docstring. No computation here."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ditpareto.study import (
    DEVICE_HELP, DIGITS_EXTRACTOR, GLYPH_EXTRACTOR, METRIC_FLAGS, PRETRAIN_FLAGS, SD_VAE_SCALE, VIDEO_LAYOUTS,
    FinetuneRecipe, MetricFields, SamplingSettings, TrainConfig,
)

log = logging.getLogger("ditpareto")


def _prepare_data_args(p):
    p.add_argument("--dataset", default="glyphs", choices=["glyphs", "digits", "imagefolder"],
                   help="glyphs (procedural digits, pixels), digits (scikit-learn, pixels) or imagefolder (class "
                   "sub-folders -> SD-VAE latents)")
    p.add_argument("--draw", default="train", choices=["train", "reference", "floor", "extractor", "extractor_val"],
                   help="which independent draw: training, FID reference, FID floor, extractor train/validation "
                   "(imagefolder has train only)")
    p.add_argument("--image-size", type=count, default=16, metavar="PX", help="output image side")
    g = p.add_argument_group("glyphs")
    g.add_argument("--num", type=count, default=None, metavar="N", help="glyphs: samples in the draw")
    g.add_argument("--seed", type=index, default=0, metavar="S", help="glyphs: dataset seed")
    g = p.add_argument_group("digits")
    g.add_argument("--heldout-fraction", type=fraction, default=0.3, metavar="F", help="held-out share")
    g.add_argument("--split-seed", type=index, default=0, metavar="S", help="seed of the split")
    g = p.add_argument_group("imagefolder")
    g.add_argument("--path", default=None, metavar="DIR", help="train folder, one sub-folder per class (ImageNet layout)")
    g.add_argument("--max-per-class", type=count, default=None, metavar="N", help="first N images per class (omitted: all)")
    g.add_argument("--encode-batch-size", type=count, default=64, metavar="B", help="VAE batch size")
    g.add_argument("--encode-seed", type=index, default=0, metavar="S", help="seed of the posterior samples")
    g.add_argument("--workers", type=index, default=0, metavar="N",
                   help="image decoding worker processes; 0 or 1 decodes in this process")
    g.add_argument("--device", default="auto", metavar="DEV", help="VAE device; auto: cuda if available")
    _latent_args(p)
    p.add_argument("--out", required=True, type=output_path, metavar="NPZ",
                   help="output .npz: images (N,H,W,C) uint8 or latents, "
                   "labels, attr_* (glyphs); a record <out>.json beside it")


def count(text: str) -> int:
    """An integer >= 1 (argparse type: a bad value is one usage error, before any work)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def index(text: str) -> int:
    """An integer >= 0 (a seed, a shard, a replicate count that may be 0)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def output_path(text: str) -> str:
    """A file to write: not empty, not a directory (checked before any work, so nothing computed is lost)."""
    if not text.strip() or Path(text).name in ("", ".", "..") or text.endswith(("/", "\\")):
        raise argparse.ArgumentTypeError(f"{text!r} names no file")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file to write")
    return text


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


def add_flags(group, cls, names) -> None:
    """argparse flags from the settings dataclass ``cls`` (``ditpareto.study``): name (``flag`` where it differs
    from the field's), type, default, choices, help and metavar come from its fields, the one source of every
    default; ``minimum`` 1 or 0 makes the type ``count`` or ``index``, ``required`` a flag without a default."""
    for field in dataclasses.fields(cls):
        if field.name not in names:
            continue
        meta = field.metadata
        kwargs = {"help": meta.get("help", field.name)}
        if meta.get("required"):
            kwargs["required"] = True
        else:
            kwargs["default"] = field.default
        if "choices" in meta:
            kwargs["choices"] = list(meta["choices"])
        else:
            kind = type(field.default) if field.default is not None else (str if meta.get("required") else float)
            kwargs["type"] = {1: count, 0: index}.get(meta.get("minimum"), kind) if kind is int else kind
            kwargs["metavar"] = meta.get("metavar", field.name.split("_")[-1].upper())
        group.add_argument("--" + meta.get("flag", field.name.replace("_", "-")), **kwargs)


def _train_args(p, cls, names):
    add_flags(p.add_argument_group("training"), cls, names)
    p.add_argument("--state", required=True, type=output_path, metavar="PT",
                   help="resumable training state (model, EMA, optimizer, RNG)")
    p.add_argument("--log-csv", required=True, type=output_path, metavar="CSV", help="loss curve output")


def _pretrain_args(p):
    p.add_argument("--data", required=True, metavar="NPZ", help="dataset from prepare-data")
    p.add_argument("--class-dropout", type=float, default=0.1, metavar="P", help="label dropout for CFG")
    _train_args(p, TrainConfig, PRETRAIN_FLAGS)
    p.add_argument("--out", required=True, type=output_path, metavar="PT",
                   help="EMA weights as a bare state dict (official DiT layout)")


def _import_base_args(p):
    p.add_argument("--checkpoint", required=True, metavar="PT", help="pretrained DiT (official layout: a state dict)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of the file (checked when given)")
    p.add_argument("--out", required=True, type=output_path, metavar="PT", help="validated copy for the pipeline")


def _import_extractor_args(p):
    p.add_argument("--extractor", default=GLYPH_EXTRACTOR, choices=[GLYPH_EXTRACTOR, DIGITS_EXTRACTOR],
                   help="which trained extractor the file holds")
    p.add_argument("--checkpoint", required=True, metavar="PT", help="extractor weights (state dict)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of the file (checked when given)")
    p.add_argument("--out", required=True, type=output_path, metavar="PT", help="validated copy for the pipeline")


def _import_finetuned_args(p):
    _method_args(p, budget_required=False)
    p.add_argument("--checkpoint", required=True, metavar="PT",
                   help="a fine-tune from `finetune` (its training record <checkpoint>.json beside it)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of the file (checked when given)")
    p.add_argument("--train-gmacs", type=float, default=None, metavar="G",
                   help="the study's training GMACs for this run: the record's must lie within 1 %% of it")
    p.add_argument("--record-sha256", default=None, metavar="HEX",
                   help="expected sha256 of the training record <checkpoint>.json (checked when given)")
    p.add_argument("--out", required=True, type=output_path, metavar="PT",
                   help="validated copy for the pipeline (+ its record)")


def _import_official_args(p):
    from ditpareto.spec import OFFICIAL_METHODS

    p.add_argument("--method", required=True, choices=list(OFFICIAL_METHODS), help="method (registry key)")
    p.add_argument("--budget", required=True, metavar="B", help="the budget the checkpoint was trained for "
                   "(DyDiT: λ, e.g. 0.70 for new_dydit0.7.pt)")
    p.add_argument("--options", default="{}", metavar="JSON",
                   help="method options as JSON (config methods.<name>.options; default: {})")
    p.add_argument("--checkpoint", required=True, metavar="PT",
                   help="the authors' released file (their key names; a training checkpoint {model, ema, opt, args} "
                   "or a bare state dict)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of the file (checked when given)")
    p.add_argument("--out", required=True, type=output_path, metavar="PT",
                   help="our-layout weights (+ a record <out>.json)")


def _classifier_args(p):
    p.add_argument("--extractor", default=GLYPH_EXTRACTOR, choices=[GLYPH_EXTRACTOR, DIGITS_EXTRACTOR],
                   help="which network: glyph-cnn (heads for digit, font, style, rotation, background; needs a "
                   "glyphs draw) or digits-classifier")
    p.add_argument("--data", required=True, metavar="NPZ", help="training draw from prepare-data (--draw extractor)")
    p.add_argument("--val", required=True, metavar="NPZ", help="validation draw (--draw extractor_val)")
    p.add_argument("--steps", type=count, default=1500, metavar="N", help="training steps")
    p.add_argument("--seed", type=index, default=0, metavar="S", help="seed")
    p.add_argument("--out", required=True, type=output_path, metavar="PT", help="extractor weights (state dict)")
    p.add_argument("--report", required=True, metavar="JSON", help="accuracy report")


def _prepare_clips_args(p):
    from ditpareto.study import DRAWS

    p.add_argument("--draw", default="train", choices=list(DRAWS), help="which independent draw")
    p.add_argument("--num", type=count, required=True, metavar="N", help="clips in the draw")
    p.add_argument("--seed", type=index, default=0, metavar="S", help="dataset seed")
    p.add_argument("--out", required=True, type=output_path, metavar="NPZ",
                   help="labels and attributes (+ a record <out>.json)")
    p.add_argument("--video", required=True, type=output_path, metavar="MP4", help="the frames, H.264")
    p.add_argument("--frames-out", default=None, type=output_path, metavar="NPZ",
                   help="also every decoded frame as an image draw (omitted: none)")


def _clip_extractor_args(p):
    p.add_argument("--data", required=True, metavar="NPZ", help="training clips (prepare-clips --draw extractor)")
    p.add_argument("--val", required=True, metavar="NPZ", help="validation clips (--draw extractor_val)")
    p.add_argument("--steps", type=count, default=800, metavar="N", help="training steps")
    p.add_argument("--seed", type=index, default=0, metavar="S", help="seed")
    p.add_argument("--out", required=True, type=output_path, metavar="PT", help="extractor weights (state dict)")
    p.add_argument("--report", required=True, type=output_path, metavar="JSON", help="accuracy report")


def _validate_clip_extractor_args(p):
    p.add_argument("--extractor", required=True, metavar="PT", help="weights from train-clip-extractor")
    p.add_argument("--reference", required=True, metavar="NPZ", help="reference clips (prepare-clips)")
    p.add_argument("--floor", required=True, metavar="NPZ", help="independent real clips (--draw floor)")
    p.add_argument("--seed", type=index, default=0, metavar="S", help="seed of the perturbations")
    p.add_argument("--out", required=True, type=output_path, metavar="CSV", help="the validation table")


def _evaluate_video_args(p):
    p.add_argument("--samples", required=True, metavar="NPZ", help="clips from `sample` (a Latte model)")
    p.add_argument("--record", required=True, metavar="JSON", help="sampling record from `sample`")
    p.add_argument("--reference", required=True, metavar="NPZ", help="reference clips (prepare-clips; .mp4 beside)")
    p.add_argument("--clip-extractor", required=True, metavar="PT", help="weights from train-clip-extractor")
    g = p.add_argument_group("metrics")
    add_flags(g, MetricFields, ("feature_extractor", "weights_path", "bootstrap_replicates", "bootstrap_seed",
                                "device"))
    p.add_argument("--workdir", default=None, metavar="DIR", help="where the codec's temporary file goes "
                   "(omitted: the system's)")
    p.add_argument("--out", required=True, type=output_path, metavar="JSON", help="metrics of this grid point")


def _video_figures_args(p):
    p.add_argument("--table", required=True, metavar="CSV", help="the video study's metrics table (aggregate)")
    p.add_argument("--samples", nargs="+", required=True, metavar="NPZ", help="clips of the grid points (sample)")
    p.add_argument("--pareto", required=True, type=output_path, metavar="PNG", help="FVD-toy vs GMACs per clip")
    p.add_argument("--strip", required=True, type=output_path, metavar="PNG", help="a frame strip per point")
    p.add_argument("--clips", required=True, type=output_path, metavar="GIF", help="decoded clips, animated")
    p.add_argument("--count", type=count, default=4, metavar="N", help="clips per point in the GIF")


def _pretrain_video_args(p):
    p.add_argument("--data", required=True, metavar="NPZ", help="clip draw from prepare-clips (its .mp4 beside it)")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--image-base", metavar="PT",
                       help="the image DiT (same width, half the depth) whose blocks become the spatial blocks")
    start.add_argument("--init", metavar="PT", help="a Latte checkpoint of this arch to continue (a previous stage)")
    p.add_argument("--init-sha256", metavar="HEX", help="--init's expected sha256 (checked first)")
    p.add_argument("--class-dropout", type=float, default=0.1, metavar="P", help="label dropout for CFG")
    _train_args(p, TrainConfig, PRETRAIN_FLAGS)
    p.add_argument("--out", required=True, type=output_path, metavar="PT",
                   help="EMA weights (Latte layout; a record <out>.json)")


def _video_verdicts_args(p):
    p.add_argument("metrics", nargs="+", metavar="JSON", help="metrics records from evaluate-video (FVD-toy)")
    p.add_argument("--claims", required=True, metavar="CSV", help="the papers' video claims "
                   "(results/published/video-claims.csv)")
    p.add_argument("--validation", required=True, metavar="CSV",
                   help="the clip extractor's validation table (its real-vs-real floor sets the tolerance)")
    p.add_argument("--fixed-cfg", type=float, default=1.5, metavar="S", help="the study's guidance scale")
    p.add_argument("--full-steps", required=True, type=count, metavar="N", help="the study's full step count")
    p.add_argument("--comparisons", required=True, type=output_path, metavar="CSV",
                   help="every method point against the step-ladder envelopes")
    p.add_argument("--out", required=True, type=output_path, metavar="CSV", help="the claims ledger")


def _dataset_layout_args(p):
    p.add_argument("--layout", required=True, choices=VIDEO_LAYOUTS,
                   help="the dataset's folder layout, as Latte's loaders expect it (docs/video.md)")
    p.add_argument("--root", required=True, metavar="DIR", help="the dataset's root folder")
    p.add_argument("--size", type=count, default=256, metavar="PX", help="frame side after short-side resize + crop")


def _encode_video_dataset_args(p):
    _dataset_layout_args(p)
    p.add_argument("--clips", required=True, type=count, metavar="N", help="training clips to encode")
    p.add_argument("--frames", type=count, default=16, metavar="F", help="frames per clip")
    p.add_argument("--interval", type=count, default=3, metavar="K",
                   help="frame interval: F frames evenly spaced over F x K (Latte's temporal crop)")
    p.add_argument("--seed", type=index, default=0, metavar="S", help="seed of the clip windows and posteriors")
    p.add_argument("--batch-size", type=count, default=4, metavar="B", help="clips per VAE batch")
    _device_arg(p)
    _latent_args(p)
    p.add_argument("--out", required=True, type=output_path, metavar="NPZ",
                   help="latents (N, F, C, h, w) + labels; a record <out>.json beside it")


def _fvd_reference_args(p):
    from ditpareto.fvd import FVD_CLIPS, FVD_FRAMES, REAL_STRIDE

    _dataset_layout_args(p)
    p.add_argument("--i3d", required=True, metavar="PT", help="StyleGAN-V's I3D TorchScript (local file)")
    p.add_argument("--clips", type=count, default=FVD_CLIPS, metavar="N", help="real clips (pinned and recorded)")
    p.add_argument("--frames", type=count, default=FVD_FRAMES, metavar="F", help="frames per clip")
    p.add_argument("--stride", type=count, default=REAL_STRIDE, metavar="K", help="every K-th frame of the video")
    p.add_argument("--seed", type=index, default=0, metavar="S", help="seed of the clip starts")
    p.add_argument("--batch-size", type=count, default=8, metavar="B", help="clips per I3D batch")
    _device_arg(p)
    p.add_argument("--out", required=True, type=output_path, metavar="NPZ", help="mu, sigma and the protocol")


def _evaluate_fvd_args(p):
    p.add_argument("--samples", required=True, metavar="NPZ", help="clips from `sample` (decoded frames)")
    p.add_argument("--record", required=True, metavar="JSON", help="sampling record from `sample`")
    p.add_argument("--reference", required=True, metavar="NPZ", help="real statistics from fvd-reference")
    p.add_argument("--i3d", required=True, metavar="PT", help="StyleGAN-V's I3D TorchScript (local file)")
    p.add_argument("--batch-size", type=count, default=8, metavar="B", help="clips per I3D batch")
    _device_arg(p)
    p.add_argument("--out", required=True, type=output_path, metavar="JSON", help="metrics record")


def _metric_args(p):
    g = p.add_argument_group("metrics")
    reference = g.add_mutually_exclusive_group(required=True)
    reference.add_argument("--reference", metavar="NPZ", help="real draw whose statistics FID compares against")
    reference.add_argument("--reference-batch", metavar="NPZ",
                           help="ADM reference batch: FID against its mu/sigma, KID/P/R against its arr_0 images")
    add_flags(g, MetricFields, METRIC_FLAGS)


def metric_settings(args):
    from ditpareto.metrics import MetricSettings

    names = {f.name: f.metadata.get("flag", f.name).replace("-", "_") for f in dataclasses.fields(MetricFields)}
    return MetricSettings(**{name: getattr(args, names[name]) for name in METRIC_FLAGS if hasattr(args, names[name])})


def _reference_args(p):
    _metric_args(p)
    p.add_argument("--floor", default=None, metavar="NPZ", help="independent real draw (--draw floor): the floor")
    p.add_argument("--floor-samples", type=count, default=None, metavar="N",
                   help="use the floor draw's first N images (a grid point's size; default: all)")
    p.add_argument("--out", required=True, type=output_path, metavar="JSON",
                   help="floor (real vs reference) and noise metrics")


def _reference_stats_args(p):
    _metric_args(p)
    p.add_argument("--out", required=True, type=output_path, metavar="NPZ",
                   help="features, k-NN radii, resampled means, covariances and their square roots")


def _calibrate_args(p):
    _metric_args(p)
    p.add_argument("--floor", required=True, metavar="NPZ", help="independent real draw of at least K x N images")
    p.add_argument("--samples", type=count, default=1000, metavar="N", help="images per set: a grid point's size")
    p.add_argument("--replicates", type=count, default=5, metavar="K",
                   help="independent clean sets of N for the seed-to-seed spread")
    p.add_argument("--min-ratio", type=float, default=4.0, metavar="R",
                   help="the smallest degradation must raise FID by R x the spread")
    p.add_argument("--out", required=True, type=output_path, metavar="CSV",
                   help="calibration table; a summary JSON beside it")


def _convert_args(p):
    _method_args(p, budget_required=False)
    p.add_argument("--base", required=True, metavar="PT", help="pretrained base DiT (official layout)")
    p.add_argument("--out", required=True, type=output_path, metavar="PT", help="converted model (state dict)")


def _finetune_args(p):
    _method_args(p, budget_required=False)
    p.add_argument("--checkpoint", required=True, metavar="PT", help="converted model from `convert`")
    p.add_argument("--data", required=True, metavar="NPZ", help="training draw from prepare-data")
    _train_args(p, FinetuneRecipe, [f.name for f in dataclasses.fields(FinetuneRecipe)])
    _device_arg(p)
    p.add_argument("--out", required=True, type=output_path, metavar="PT",
                   help="fine-tuned EMA weights (state dict); a training record <out>.json beside it")


def _sampling_args(p):
    add_flags(p.add_argument_group("sampling"), SamplingSettings, ("sampler", "steps", "cfg_scale", "guidance_channels"))


def sampling_settings(args):
    """The sampler settings, checked before any model is loaded: a realisable step count, a finite scale >= 1."""
    import math

    from ditpareto.respacing import space_timesteps
    from ditpareto.errors import InputError
    from ditpareto.methods import SamplingSettings

    if args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    space_timesteps(1000, args.sampler, args.steps)
    if not math.isfinite(args.cfg_scale) or args.cfg_scale < 1:
        raise InputError(f"--cfg-scale must be a finite number >= 1, got {args.cfg_scale}")
    return SamplingSettings(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale,
                            guidance_channels=args.guidance_channels)


def model_spec(args):
    from ditpareto.methods import ModelSpec

    return ModelSpec(args.model, args.image_size, args.in_channels, args.num_classes)


def _method_args(p, budget_required: bool = True):
    from ditpareto.methods import METHODS

    p.add_argument("--method", required=True, choices=sorted(METHODS), help="method (registry key)")
    p.add_argument("--budget", required=budget_required, default=None, metavar="B",
                   help="method budget, e.g. a step count for dit"
                   + ("" if budget_required else " (omitted: full compute, i.e. --steps for dit)"))
    p.add_argument("--options", default="{}", metavar="JSON",
                   help="method options as JSON (config methods.<name>.options; default: {})")


def method_and_options(args):
    """The method and its validated options (InputError on unknown method, bad JSON or bad options)."""
    from ditpareto.errors import InputError
    from ditpareto.methods import get_method

    method = get_method(args.method)
    try:
        raw = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise InputError(f"--options is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"--options must be a JSON object, got {args.options!r}")
    return method, method.parse_options(raw)


def _sample_args(p):
    _method_args(p)
    p.add_argument("--checkpoint", required=True, metavar="PT",
                   help="the method's model checkpoint (a fine-tune's training record <checkpoint>.json is read too)")
    p.add_argument("--seed", type=index, required=True, metavar="S", help="seed: sample i uses generator S*2**20+i (S < 4096)")
    p.add_argument("--num-samples", type=count, default=1000, metavar="N",
                   help="samples of the whole grid point, over all shards")
    p.add_argument("--shard", type=index, default=0, metavar="I", help="this job's shard, 0-based")
    p.add_argument("--shards", type=count, default=1, metavar="K",
                   help="shards the N samples are split into; merge them with merge-samples")
    p.add_argument("--batch-size", type=count, default=250, metavar="B", help="sampling batch size")
    p.add_argument("--reference-steps", type=count, default=None, metavar="N",
                   help="the full step count nominal compute ratios refer to (omitted: this point's steps)")
    p.add_argument("--ft", default="1.00", metavar="X",
                   help="the checkpoint's fine-tuning compute as a multiple of the shared budget, a table label")
    _sampling_args(p)
    _latent_args(p)
    _device_arg(p)
    _precision_arg(p)
    p.add_argument("--out", required=True, type=output_path, metavar="NPZ",
                   help="samples: images (N,H,W,C) uint8, labels, indices")
    p.add_argument("--record", required=True, type=output_path, metavar="JSON",
                   help="sampling record: FLOPs, latency, parameters")


def _device_arg(p):
    p.add_argument("--device", default="auto", metavar="DEV", help=DEVICE_HELP)


def _precision_arg(p):
    from ditpareto.study import PRECISIONS

    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="network numerics: fp32, tf32 (TF32 matmuls on CUDA; fp32 on a CPU) or bf16 (autocast; the "
                   "sampler's state stays float32)")


def _latent_args(p):
    g = p.add_argument_group("latents (paper setting)")
    g.add_argument("--vae", default=None, metavar="DIR",
                   help="local diffusers AutoencoderKL folder; set for latent models (omitted: pixel space)")
    g.add_argument("--latent-scale", type=float, default=SD_VAE_SCALE, metavar="S",
                   help="latent scale")


def _latency_args(p):
    p.add_argument("--points", required=True, metavar="JSON",
                   help='grid points as a JSON list of {"method", "budget", "steps", "ft", "cfg_scale", "seed", '
                   '"options", "checkpoint"}')
    p.add_argument("--batch-sizes", type=count, nargs="+", default=[1, 250], metavar="B",
                   help="batch sizes to time: batch 1 and the sampling batch")
    p.add_argument("--rounds", type=count, default=3, metavar="R", help="timed rounds after one warm-up")
    add_flags(p, SamplingSettings, ("sampler", "guidance_channels"))  # each point's own steps and scale
    _device_arg(p)
    _precision_arg(p)
    p.add_argument("--out", required=True, type=output_path, metavar="CSV",
                   help="median/min/max ms per image per point and batch; "
                   "the machine record <out>.json beside it")


def _merge_samples_args(p):
    p.add_argument("--shards", nargs="+", required=True, metavar="NPZ", help="shard samples from `sample --shard`")
    p.add_argument("--records", nargs="+", required=True, metavar="JSON", help="their sampling records (same order)")
    p.add_argument("--out", required=True, type=output_path, metavar="NPZ",
                   help="merged samples, in global index order")
    p.add_argument("--record", required=True, type=output_path, metavar="JSON", help="merged sampling record")


def _evaluate_args(p):
    p.add_argument("--samples", required=True, metavar="NPZ", help="samples from `sample`")
    p.add_argument("--record", required=True, metavar="JSON", help="sampling record from `sample`")
    p.add_argument("--features", default=None, type=output_path, metavar="NPZ",
                   help="write the per-sample FID features here")
    p.add_argument("--reference-stats", default=None, metavar="NPZ",
                   help="the reference draw's features, k-NN radii and resampled statistics from `reference-stats` "
                   "(omitted: computed here)")
    _metric_args(p)
    p.add_argument("--out", required=True, type=output_path, metavar="JSON", help="metrics of this grid point")


def _convergence_args(p):
    p.add_argument("--snapshots", nargs="+", required=True, metavar="PT",
                   help="EMA snapshots of a pretraining run (pretrain --snapshot-every): ema-step<N>.pt")
    p.add_argument("--seed", type=index, default=0, metavar="S", help="sampling seed, the same for every snapshot")
    p.add_argument("--num-samples", type=count, default=1000, metavar="N", help="samples per snapshot")
    p.add_argument("--batch-size", type=count, default=250, metavar="B", help="sampling batch size")
    _sampling_args(p)
    _metric_args(p)
    p.add_argument("--out", required=True, type=output_path, metavar="CSV",
                   help="FID (and KID, precision, recall) per snapshot step")


def _flops_args(p):
    _method_args(p, budget_required=False)
    p.add_argument("--checkpoint", default=None, metavar="PT", help="weights (omitted: random init)")
    _sampling_args(p)


def _aggregate_args(p):
    p.add_argument("metrics", nargs="+", metavar="JSON", help="metrics files of the grid points")
    p.add_argument("--latency", default=None, metavar="CSV",
                   help="the latency job's table: its medians become latency_ms_per_image (the sampling jobs' own "
                   "timing, taken beside other jobs, is kept as sampling_latency_ms_per_image)")
    p.add_argument("--cfg-selection", default=None, metavar="CSV",
                   help="the select-cfg table: rows at their selected guidance scale get cfg_selected = True")
    p.add_argument("--out", required=True, type=output_path, metavar="CSV", help="table, one row per grid point")


def _select_cfg_args(p):
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--selection", nargs="+", default=[], metavar="JSON",
                        help="metrics records of the selection seed (every candidate scale)")
    source.add_argument("--recorded", default=None, metavar="CSV",
                        help="the scales a long run selected (its select-cfg table without --evaluation)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of --recorded (checked when given)")
    p.add_argument("--extend", default=None, metavar="CSV",
                   help="with --selection: a table recorded earlier on the same seed, sample count and checkpoints, "
                   "extended by the new candidates (each key's best over both; keys without it need every candidate)")
    p.add_argument("--evaluation", nargs="+", default=[], metavar="JSON",
                   help="metrics records of the evaluation seeds (at least each selected scale); without them, "
                        "only the choices are written")
    p.add_argument("--out", required=True, type=output_path, metavar="CSV",
                   help="one row per (method, budget, steps, ft)")


def _summary_args(p):
    p.add_argument("--verdicts", required=True, metavar="CSV", help="the verdict ledger (results/tables/verdicts.csv)")
    p.add_argument("--scale", required=True, metavar="TEXT", help="what scale this run is (toy or paper, in words)")
    p.add_argument("--figures", nargs="*", default=[], metavar="PNG", help="figures to link")
    p.add_argument("--readme", default=None, metavar="MD",
                   help="also rewrite this file's generated ledger block (between its markers) from the ledger")
    p.add_argument("--metrics", default=None, metavar="CSV", help="the metrics table (for --metrics-html)")
    p.add_argument("--ledger-html", default=None, type=output_path, metavar="HTML",
                   help="also the ledger as an HTML table")
    p.add_argument("--metrics-html", default=None, type=output_path, metavar="HTML",
                   help="also a compact metrics table as HTML")
    p.add_argument("--answer-html", default=None, type=output_path, metavar="HTML",
                   help="also the report's landing block: the question, the scale, the answer and the ledger (HTML)")
    p.add_argument("--config-json", default=None, metavar="JSON", help="the run's configuration (for --config-out)")
    p.add_argument("--config-out", default=None, type=output_path, metavar="YAML",
                   help="also the run's configuration as YAML")
    p.add_argument("--out", required=True, type=output_path, metavar="MD", help="the summary (Markdown)")


def _verdicts_args(p):
    p.add_argument("metrics", nargs="+", metavar="JSON", help="metrics records of the grid points (with fid_bootstrap)")
    p.add_argument("--claims", required=True, metavar="CSV", help="published claims (results/published/claims.csv)")
    p.add_argument("--fixed-cfg", type=float, required=True, metavar="S", help="the study's fixed guidance scale")
    p.add_argument("--full-steps", type=count, required=True, metavar="N", help="the study's full step count")
    p.add_argument("--comparisons", required=True, type=output_path, metavar="CSV",
                   help="per-point comparison with the envelopes")
    p.add_argument("--finetune-noise", default=None, type=output_path, metavar="CSV",
                   help="FID spread across fine-tune seeds per repeated (method, budget) (finetune.seed_noise)")
    p.add_argument("--dominance", default=None, type=output_path, metavar="CSV",
                   help="also where each method beats each other: every pair of points of two series (methods, "
                   "baselines, static ladders on another sampler) at no more compute, paired FID difference")
    p.add_argument("--cfg-selection", default=None, metavar="CSV",
                   help="the select-cfg table (each point's selected scale)")
    p.add_argument("--guidance", nargs="+", choices=["fixed", "selected"], default=["fixed"],
                   help="ledgers: every point at the fixed scale and/or each at its selected scale")
    p.add_argument("--noise-recorded", default=None, metavar="CSV",
                   help="fine-tune seed spreads a long run recorded (its --finetune-noise table), used when this run "
                   "measures none (finetune.noise_recorded)")
    p.add_argument("--noise-sha256", default=None, metavar="HEX", help="the recorded table's expected sha256")
    p.add_argument("--plateau-out", default=None, type=output_path, metavar="JSON",
                   help="also this run's plateau points with their replicates (finetune.plateau), to record")
    p.add_argument("--plateau-recorded", default=None, metavar="JSON",
                   help="plateau points a long run recorded (its --plateau-out), for the points this run has none "
                   "of (finetune.plateau_recorded)")
    p.add_argument("--plateau-sha256", default=None, metavar="HEX", help="the recorded plateau table's sha256")
    p.add_argument("--out", required=True, type=output_path, metavar="CSV", help="the claims ledger (verdicts)")


def _compare_runs_args(p):
    p.add_argument("--baseline", nargs="+", required=True, metavar="JSON",
                   help="metrics records of the baseline run (e.g. the fp32 study's results/metrics/**.json)")
    p.add_argument("--other", nargs="+", required=True, metavar="JSON",
                   help="metrics records of the same grid sampled another way (e.g. --precision bf16)")
    p.add_argument("--out", required=True, type=output_path, metavar="CSV",
                   help="one row per shared grid point, one per method")


def _notebook_args(p):
    p.add_argument("--notebook", required=True, metavar="IPYNB", help="output-free notebook from notebooks/")
    p.add_argument("--out", required=True, type=output_path, metavar="IPYNB", help="executed copy, with its outputs")
    p.add_argument("--parameters", default="{}", metavar="JSON",
                   help="papermill parameters as a JSON object ({}: the notebook's own defaults)")
    p.add_argument("--figures", nargs="*", default=[], metavar="FILE",
                   help="files the notebook must have written (checked after the run)")



#################################################################################
#                       Flags -> a step's typed arguments                       #
#################################################################################


def pretrain_settings(args) -> TrainConfig:
    return TrainConfig(**{name: getattr(args, name) for name in PRETRAIN_FLAGS})


def finetune_recipe(args) -> FinetuneRecipe:
    return FinetuneRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneRecipe)})


# Step parameters built from several flags; every other parameter is the flag of its name.
BUILDERS: dict[str, Callable] = {
    "spec": model_spec,
    "settings": sampling_settings,
    "metric_settings": metric_settings,
    "method": lambda args: method_and_options(args)[0],
    "options": lambda args: method_and_options(args)[1],
    "train": pretrain_settings,
    "recipe": finetune_recipe,
}


def call(step: Callable, args) -> dict:
    """Run ``step`` with its parameters from the parsed flags."""
    return step(**{name: BUILDERS[name](args) if name in BUILDERS else getattr(args, name)
                   for name in inspect.signature(step).parameters})


@dataclass
class Command:
    """A CLI command: the step it runs (``ditpareto.jobs.<module>.<function>``, imported only when the command is
    built) and its argument table; help and example are the step's docstring."""

    name: str
    module: str
    function: str
    add_args: Callable[[argparse.ArgumentParser], None]
    model_args: bool = False

    @property
    def step(self) -> Callable:
        return getattr(importlib.import_module(f"ditpareto.jobs.{self.module}"), self.function)

    @property
    def help(self) -> str:
        """The docstring's first sentence, whole (it may span lines)."""
        paragraph = " ".join(inspect.getdoc(self.step).split("\n\n")[0].split())
        end = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", paragraph)
        return paragraph[: end.start() + 1] if end else paragraph

    @property
    def example(self) -> str:
        doc = inspect.getdoc(self.step)
        return " ".join(doc.split("Example:", 1)[1].split()) if "Example:" in doc else ""

    def func(self, args) -> dict:
        return call(self.step, args)


def commands() -> list[Command]:
    """Every command, its step not imported yet (a job pays for its own step's imports only)."""
    return [
        Command("prepare-data", "data", "prepare_data", _prepare_data_args),
        Command("pretrain", "training", "pretrain", _pretrain_args, model_args=True),
        Command("import-base", "checkpoints", "import_base", _import_base_args, model_args=True),
        Command("import-extractor", "checkpoints", "import_extractor", _import_extractor_args),
        Command("import-finetuned", "checkpoints", "import_finetuned", _import_finetuned_args, model_args=True),
        Command("import-official", "checkpoints", "import_official", _import_official_args, model_args=True),
        Command("train-extractor", "metrics", "train_extractor", _classifier_args),
        Command("prepare-clips", "video", "prepare_clips", _prepare_clips_args),
        Command("train-clip-extractor", "video", "train_clip_extractor", _clip_extractor_args),
        Command("validate-clip-extractor", "video", "validate_clip_extractor", _validate_clip_extractor_args),
        Command("pretrain-video", "video", "pretrain_video", _pretrain_video_args, model_args=True),
        Command("evaluate-video", "video", "evaluate_video", _evaluate_video_args),
        Command("video-figures", "video", "video_figures", _video_figures_args),
        Command("video-verdicts", "video", "video_verdicts", _video_verdicts_args),
        Command("encode-video-dataset", "video_paper", "encode_video_dataset", _encode_video_dataset_args),
        Command("fvd-reference", "video_paper", "fvd_reference", _fvd_reference_args),
        Command("evaluate-fvd", "video_paper", "evaluate_fvd", _evaluate_fvd_args),
        Command("reference", "metrics", "reference", _reference_args),
        Command("reference-stats", "metrics", "reference_stats", _reference_stats_args),
        Command("calibrate", "metrics", "calibrate", _calibrate_args),
        Command("convert", "training", "convert", _convert_args, model_args=True),
        Command("finetune", "training", "finetune", _finetune_args, model_args=True),
        Command("sample", "sampling", "sample", _sample_args, model_args=True),
        Command("merge-samples", "shards", "merge_samples", _merge_samples_args),
        Command("evaluate", "metrics", "evaluate", _evaluate_args),
        Command("convergence", "metrics", "convergence", _convergence_args, model_args=True),
        Command("latency", "sampling", "latency", _latency_args, model_args=True),
        Command("flops", "sampling", "flops", _flops_args, model_args=True),
        Command("aggregate", "tables", "aggregate", _aggregate_args),
        Command("select-cfg", "tables", "select_cfg", _select_cfg_args),
        Command("verdicts", "tables", "verdicts", _verdicts_args),
        Command("summary", "tables", "summary", _summary_args),
        Command("compare-runs", "tables", "compare_runs", _compare_runs_args),
        Command("notebook", "tables", "notebook", _notebook_args),
    ]
