"""The CLI commands: argument tables over the package's functions (no computation here beyond wiring)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ditpareto.study import PRETRAIN_FLAGS, FinetuneRecipe, TrainConfig

log = logging.getLogger("ditpareto")


@dataclass
class Command:
    name: str
    func: Callable
    help: str
    example: str
    add_args: Callable[[argparse.ArgumentParser], None] = lambda p: None
    model_args: bool = False
    aliases: list = field(default_factory=list)


def _overrides(args) -> dict:
    return {"in_channels": args.in_channels, "num_classes": args.num_classes}


#################################################################################
#                                     Data                                      #
#################################################################################


def _prepare_data_args(p):
    p.add_argument("--dataset", default="glyphs", choices=["glyphs", "digits", "imagefolder"],
                   help="glyphs (procedural digits, pixels), digits (scikit-learn, pixels) or imagefolder (class "
                   "sub-folders -> SD-VAE latents) (default: glyphs)")
    p.add_argument("--draw", default="train", choices=["train", "reference", "floor", "extractor", "extractor_val"],
                   help="which independent draw: training, FID reference, FID floor, extractor train/validation "
                   "(default: train; imagefolder has train only)")
    p.add_argument("--image-size", type=int, default=16, metavar="PX", help="output image side (default: 16)")
    g = p.add_argument_group("glyphs")
    g.add_argument("--num", type=int, default=None, metavar="N", help="glyphs: samples in the draw")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="glyphs: dataset seed (default: 0)")
    g = p.add_argument_group("digits")
    g.add_argument("--heldout-fraction", type=float, default=0.3, metavar="F", help="held-out share (default: 0.3)")
    g.add_argument("--split-seed", type=int, default=0, metavar="S", help="seed of the split (default: 0)")
    g = p.add_argument_group("imagefolder")
    g.add_argument("--path", default=None, metavar="DIR", help="train folder, one sub-folder per class (ImageNet layout)")
    g.add_argument("--max-per-class", type=int, default=None, metavar="N", help="first N images per class (default: all)")
    g.add_argument("--encode-batch-size", type=int, default=64, metavar="B", help="VAE batch size (default: 64)")
    g.add_argument("--encode-seed", type=int, default=0, metavar="S", help="seed of the posterior samples (default: 0)")
    g.add_argument("--workers", type=int, default=0, metavar="N",
                   help="image decoding worker processes; 0 or 1 decodes in this process (default: 0)")
    g.add_argument("--device", default="auto", metavar="DEV", help="VAE device; auto: cuda if available (default)")
    _latent_args(p)
    p.add_argument("--out", required=True, metavar="NPZ", help="output .npz: images (N,H,W,C) uint8 or latents, "
                   "labels, attr_* (glyphs); a record <out>.json beside it")


def prepare_data(args):
    import numpy as np

    from ditpareto.data import ImageSet, LatentSet, digits_draw, image_folder, save_draw
    from ditpareto.errors import InputError
    from ditpareto.latents import encode_image_folder, load_vae, vae_factor
    from ditpareto.results import provenance, write_json

    record = {"dataset": args.dataset, "draw": args.draw, "image_size": args.image_size, **provenance()}
    if args.dataset == "glyphs":
        from ditpareto import glyphs

        if not args.num or args.num < 1:
            raise InputError("--dataset glyphs needs --num N >= 1 (the draw's size)")
        draw = glyphs.draw_glyphs(args.draw, args.num, args.image_size, args.seed, progress=True)
        save_draw(ImageSet(draw.images, draw.labels), args.out, attributes=draw.attributes)
        record.update({"num": args.num, "seed": args.seed, "settings": glyphs.GlyphSettings().__dict__,
                       "fonts": glyphs.font_record(), "renderer": glyphs.renderer_versions(),
                       "flat_token_fraction": glyphs.flat_token_fraction(draw.images),
                       "label_counts": np.bincount(draw.labels, minlength=10).tolist()})
    elif args.dataset == "digits":
        data = digits_draw(args.draw, args.image_size, args.heldout_fraction, args.split_seed)
        save_draw(data, args.out)
        record.update({"num": len(data.labels), "heldout_fraction": args.heldout_fraction,
                       "split_seed": args.split_seed})
    else:
        if args.draw != "train":
            raise InputError("--dataset imagefolder has only the train draw (FID uses the ADM reference batch)")
        if not args.path or not args.vae:
            raise InputError("--dataset imagefolder needs --path (the train folder) and --vae (the SD-VAE folder)")
        folder = image_folder(args.path, args.image_size, args.max_per_class)
        vae = load_vae(args.vae, resolve_device(args.device))
        if args.image_size % vae_factor(vae):
            raise InputError(f"image size {args.image_size} is not divisible by the VAE's factor {vae_factor(vae)}")
        latents, labels = encode_image_folder(folder, vae, args.latent_scale, args.encode_batch_size,
                                              args.encode_seed, args.workers if args.workers > 1 else 0)
        save_draw(LatentSet(latents, labels), args.out, classes=np.array(folder.classes),
                  image_size=np.array(args.image_size), latent_scale=np.array(args.latent_scale))
        record.update({"num": len(labels), "classes": len(folder.classes), "latent_shape": list(latents.shape[1:])})
    from ditpareto.models.checkpoint import sha256_of

    record["sha256"] = sha256_of(args.out)
    write_json(record, str(args.out) + ".json")
    return {k: record[k] for k in ("dataset", "draw", "num", "sha256")}


#################################################################################
#                                  Pretraining                                  #
#################################################################################


def add_flags(group, cls, names) -> None:
    """argparse flags from the settings dataclass ``cls`` (``ditpareto.study``): name, type, default, choices and help
    come from its fields, the one source of every default."""
    import dataclasses

    for field in dataclasses.fields(cls):
        if field.name not in names:
            continue
        default = field.default
        kwargs = {"default": default, "help": f"{field.metadata.get('help', field.name)} (default: {default})"}
        if "choices" in field.metadata:
            kwargs["choices"] = list(field.metadata["choices"])
        else:
            kwargs["type"] = type(default) if default is not None else float
            kwargs["metavar"] = field.name.split("_")[-1].upper()
        group.add_argument("--" + field.name.replace("_", "-"), **kwargs)


def _train_args(p, cls, names):
    add_flags(p.add_argument_group("training"), cls, names)
    p.add_argument("--state", required=True, metavar="PT", help="resumable training state (model, EMA, optimizer, RNG)")
    p.add_argument("--log-csv", required=True, metavar="CSV", help="loss curve output")


def run_id(**identity) -> str:
    """What is trained (plus the code version) as the id a saved state must match to be resumed."""
    import hashlib

    from ditpareto.train import code_version

    identity = {**identity, "code": code_version()}  # a state never resumes under other code
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_config(args, **identity):
    """Pretraining settings from the CLI (``study.PRETRAIN_FLAGS``); ``identity`` becomes the run_id."""
    from ditpareto.study import PRETRAIN_FLAGS, TrainConfig

    return TrainConfig(**{name: getattr(args, name) for name in PRETRAIN_FLAGS}, run_id=run_id(**identity))


def _pretrain_args(p):
    p.add_argument("--data", required=True, metavar="NPZ", help="dataset from prepare-data")
    p.add_argument("--class-dropout", type=float, default=0.1, metavar="P", help="label dropout for CFG (default: 0.1)")
    _train_args(p, TrainConfig, PRETRAIN_FLAGS)
    p.add_argument("--out", required=True, metavar="PT", help="EMA weights as a bare state dict (official DiT layout)")


def pretrain(args):
    import torch

    from ditpareto.data import load_draw
    from ditpareto.models import build_dit
    from ditpareto.models.checkpoint import atomic_save, sha256_of
    from ditpareto.train import discard_state, is_main_process, run_training

    data = load_draw(args.data)
    torch.manual_seed(args.seed)  # the initialisation is part of the run: same seed, same weights
    model = build_dit(args.model, args.image_size, class_dropout_prob=args.class_dropout, **_overrides(args))
    config = train_config(args, data=sha256_of(args.data), model=args.model, image_size=args.image_size,
                          class_dropout=args.class_dropout, overrides=_overrides(args))
    ema = run_training(model, data.as_model_input(), torch.from_numpy(data.labels), config,
                       args.state, args.log_csv)
    if is_main_process():  # under torchrun every rank holds the same weights: rank 0 writes them
        atomic_save(ema.state_dict(), args.out)
        discard_state(args.state)
    return {"out": args.out, "steps": config.steps}


#################################################################################
#                          Base checkpoint and FID model                        #
#################################################################################


def _import_base_args(p):
    p.add_argument("--checkpoint", required=True, metavar="PT", help="pretrained DiT (official layout: a state dict)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of the file (checked when given)")
    p.add_argument("--out", required=True, metavar="PT", help="validated copy for the pipeline")


def import_base(args):
    import shutil

    from ditpareto.errors import InputError
    from ditpareto.models import load_dit
    from ditpareto.models.checkpoint import sha256_of

    if not Path(args.checkpoint).is_file():
        raise InputError(f"base checkpoint {args.checkpoint} does not exist (config key base.checkpoint)")
    digest = sha256_of(args.checkpoint)
    if args.sha256 and digest != args.sha256.lower():
        raise InputError(f"base checkpoint {args.checkpoint} has sha256 {digest}, config says {args.sha256}")
    load_dit(args.checkpoint, args.model, args.image_size, **_overrides(args))  # validates keys and shapes
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.checkpoint, args.out)
    return {"out": args.out, "sha256": digest}


def _checked_copy(checkpoint: str, sha256: str | None, out: str, what: str, validate) -> str:
    """Check a file's sha256 (when given) and contents (``validate(path)``), then copy it (and its .json record,
    when one lies beside it) to ``out``; returns the digest."""
    import shutil

    from ditpareto.errors import InputError
    from ditpareto.models.checkpoint import sha256_of

    if not Path(checkpoint).is_file():
        raise InputError(f"{what} {checkpoint} does not exist")
    digest = sha256_of(checkpoint)
    if sha256 and digest != sha256.lower():
        raise InputError(f"{what} {checkpoint} has sha256 {digest}, config says {sha256}")
    validate(checkpoint)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, out)
    record = Path(str(checkpoint) + ".json")
    if record.is_file():
        from ditpareto.results import read_record, write_json

        write_json(read_record(record), str(out) + ".json")
    return digest


def _import_extractor_args(p):
    p.add_argument("--extractor", default="glyph-cnn", choices=["glyph-cnn", "digits-classifier"],
                   help="which trained extractor the file holds (default: glyph-cnn)")
    p.add_argument("--checkpoint", required=True, metavar="PT", help="extractor weights (state dict)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of the file (checked when given)")
    p.add_argument("--out", required=True, metavar="PT", help="validated copy for the pipeline")


def import_extractor(args):
    from ditpareto.glyph_extractor import load_glyph_cnn
    from ditpareto.metrics import load_classifier

    loader = load_glyph_cnn if args.extractor == "glyph-cnn" else load_classifier
    digest = _checked_copy(args.checkpoint, args.sha256, args.out, "extractor checkpoint", loader)
    return {"out": args.out, "sha256": digest}


def _import_finetuned_args(p):
    _method_args(p, budget_required=False)
    p.add_argument("--checkpoint", required=True, metavar="PT",
                   help="a fine-tune from `finetune` (its training record <checkpoint>.json beside it)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="expected sha256 of the file (checked when given)")
    p.add_argument("--out", required=True, metavar="PT", help="validated copy for the pipeline (+ its record)")


def import_finetuned(args):
    from ditpareto.errors import InputError

    method, options = method_and_options(args)
    spec = model_spec(args)
    if not Path(str(args.checkpoint) + ".json").is_file():
        raise InputError(f"fine-tune {args.checkpoint} has no training record {args.checkpoint}.json "
                         "(train_gmacs, steps, samples seen)")
    digest = _checked_copy(args.checkpoint, args.sha256, args.out, f"{method.name} fine-tune",
                           lambda path: method.load_model(path, spec, options))
    return {"method": method.name, "budget": args.budget, "out": args.out, "sha256": digest}


def _classifier_args(p):
    p.add_argument("--extractor", default="glyph-cnn", choices=["glyph-cnn", "digits-classifier"],
                   help="which network: glyph-cnn (heads for digit, font, style, rotation, background; needs a "
                   "glyphs draw) or digits-classifier (default: glyph-cnn)")
    p.add_argument("--data", required=True, metavar="NPZ", help="training draw from prepare-data (--draw extractor)")
    p.add_argument("--val", required=True, metavar="NPZ", help="validation draw (--draw extractor_val)")
    p.add_argument("--steps", type=int, default=600, metavar="N", help="training steps (default: 600)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default: 0)")
    p.add_argument("--out", required=True, metavar="PT", help="extractor weights (state dict)")
    p.add_argument("--report", required=True, metavar="JSON", help="accuracy report")


def train_extractor(args):
    from ditpareto.data import load_attributes, load_draw
    from ditpareto.results import provenance, write_json

    train, val = load_draw(args.data), load_draw(args.val)
    if args.extractor == "glyph-cnn":
        from ditpareto.glyph_extractor import save_glyph_cnn, train_glyph_cnn

        model, stats = train_glyph_cnn(train, load_attributes(args.data), val, load_attributes(args.val),
                                       steps=args.steps, seed=args.seed)
        save_glyph_cnn(model, args.out)
    else:
        from ditpareto.metrics import save_classifier, train_digits_classifier

        model, stats = train_digits_classifier(train, val, steps=args.steps, seed=args.seed)
        save_classifier(model, args.out)
    write_json({**stats, "extractor": args.extractor, "steps": args.steps, "seed": args.seed, **provenance()},
               args.report)
    return stats


def _metric_args(p):
    g = p.add_argument_group("metrics")
    reference = g.add_mutually_exclusive_group(required=True)
    reference.add_argument("--reference", metavar="NPZ", help="real draw whose statistics FID compares against")
    reference.add_argument("--reference-batch", metavar="NPZ",
                           help="ADM reference batch: FID against its mu/sigma, KID/P/R against its arr_0 images")
    g.add_argument("--extractor", default="glyph-cnn", choices=["glyph-cnn", "digits-classifier", "inception-v3-compat"],
                   help="torch-fidelity feature extractor (default: glyph-cnn)")
    g.add_argument("--extractor-weights", required=True, metavar="PT",
                   help="local weights file of the extractor (never downloaded)")
    g.add_argument("--kid-subset-size", type=int, default=500, metavar="N", help="KID subset size (default: 500)")


def metric_settings(args):
    from ditpareto.metrics import MetricSettings

    return MetricSettings(feature_extractor=args.extractor, weights_path=args.extractor_weights,
                          kid_subset_size=args.kid_subset_size)


def _reference_args(p):
    _metric_args(p)
    p.add_argument("--floor", default=None, metavar="NPZ", help="independent real draw (--draw floor): the floor")
    p.add_argument("--floor-samples", type=int, default=None, metavar="N",
                   help="use the floor draw's first N images (a grid point's size; default: all)")
    p.add_argument("--out", required=True, metavar="JSON", help="floor (real vs reference) and noise metrics")


def _first(data, n: int | None, what: str):
    from ditpareto.data import ImageSet
    from ditpareto.errors import InputError

    if n is None:
        return data
    if n < 2 or n > len(data.labels):
        raise InputError(f"{what} has {len(data.labels)} images; {n} were asked for")
    return ImageSet(data.images[:n], data.labels[:n])


def reference(args):
    from ditpareto.data import load_draw
    from ditpareto.errors import InputError
    from ditpareto.metrics import fid_floor_and_noise, load_reference_batch, reference_batch_floor_and_noise
    from ditpareto.results import provenance, write_json

    if args.reference_batch:
        result = reference_batch_floor_and_noise(load_reference_batch(args.reference_batch), metric_settings(args))
    else:
        if not args.floor:
            raise InputError("--reference needs --floor (an independent real draw)")
        floor = _first(load_draw(args.floor), args.floor_samples, f"floor draw {args.floor}")
        result = fid_floor_and_noise(load_draw(args.reference), floor, metric_settings(args))
    write_json({**result, **provenance()}, args.out)
    return result


def _calibrate_args(p):
    _metric_args(p)
    p.add_argument("--floor", required=True, metavar="NPZ", help="independent real draw of at least K x N images")
    p.add_argument("--samples", type=int, default=1000, metavar="N", help="images per set: a grid point's size")
    p.add_argument("--replicates", type=int, default=5, metavar="K",
                   help="independent clean sets of N for the seed-to-seed spread (default: 5)")
    p.add_argument("--min-ratio", type=float, default=4.0, metavar="R",
                   help="the smallest degradation must raise FID by R x the spread (default: 4)")
    p.add_argument("--out", required=True, metavar="CSV", help="calibration table; a summary JSON beside it")


def calibrate(args):
    import pandas as pd

    from ditpareto.calibration import calibrate as run_calibration
    from ditpareto.data import load_draw
    from ditpareto.errors import InputError
    from ditpareto.metrics import extract_features, fid_from_features
    from ditpareto.results import provenance, write_json

    if args.reference_batch:
        raise InputError("calibrate compares real draws: pass --reference (a draw), not --reference-batch")
    floor = load_draw(args.floor).images
    if args.replicates < 2 or args.samples < 2 or len(floor) < args.replicates * args.samples:
        raise InputError(f"calibration needs --replicates >= 2 sets of --samples >= 2 images: {args.replicates} x "
                         f"{args.samples} from a floor draw of {len(floor)}")
    settings = metric_settings(args)
    settings.progress = False
    sets = [floor[i * args.samples:(i + 1) * args.samples] for i in range(args.replicates)]
    result = run_calibration(lambda images: extract_features(images, settings), load_draw(args.reference).images,
                             sets, fid_from_features, args.min_ratio)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.rows).to_csv(args.out, index=False)
    summary = {"extractor": args.extractor, "samples": args.samples, "replicates": args.replicates,
               "seed_spread": result.spread, "floor_fid": result.floor, "monotone": result.monotone,
               "smallest_rise_over_spread": result.min_ratio, "min_ratio": args.min_ratio,
               "passed": result.passed, **provenance()}
    write_json(summary, Path(args.out).with_suffix(".json"))
    if not result.passed:
        log.warning("extractor calibration FAILED: monotone=%s, smallest rise %.2f x the spread (need %.1f)",
                    result.monotone, result.min_ratio, args.min_ratio)
    return {k: summary[k] for k in ("seed_spread", "floor_fid", "monotone", "smallest_rise_over_spread", "passed")}


#################################################################################
#                           Conversion and fine-tuning                          #
#################################################################################


def _convert_args(p):
    _method_args(p, budget_required=False)
    p.add_argument("--base", required=True, metavar="PT", help="pretrained base DiT (official layout)")
    p.add_argument("--out", required=True, metavar="PT", help="converted model (state dict)")


def convert(args):
    from ditpareto.models import load_dit
    from ditpareto.models.checkpoint import atomic_save

    method, options = method_and_options(args)
    spec = model_spec(args)
    base = load_dit(args.base, spec.name, spec.image_size, **spec.overrides())
    __import__("torch").manual_seed(0)  # any randomly initialised new parameters are reproducible
    model = method.convert(base, options)
    atomic_save(method.state_to_save(model), args.out)
    return {"method": method.name, "out": args.out, "options": options}


def _finetune_args(p):
    _method_args(p, budget_required=False)
    p.add_argument("--checkpoint", required=True, metavar="PT", help="converted model from `convert`")
    p.add_argument("--data", required=True, metavar="NPZ", help="training draw from prepare-data")
    _train_args(p, FinetuneRecipe, [f.name for f in dataclasses.fields(FinetuneRecipe)])
    p.add_argument("--out", required=True, metavar="PT",
                   help="fine-tuned EMA weights (state dict); a training record <out>.json beside it")


def finetune(args):
    import torch

    from ditpareto.data import load_draw
    from ditpareto.models.checkpoint import atomic_save, sha256_of
    from ditpareto.train import discard_state, is_main_process

    import time

    from ditpareto.errors import InputError
    from ditpareto.flops import steps_for_train_macs
    from ditpareto.results import provenance, write_json

    method, options = method_and_options(args)
    budget = method.parse_budget(args.budget) if args.budget is not None else None
    spec = model_spec(args)
    model = method.load_model(args.checkpoint, spec, options)  # the method decides what trains
    data = load_draw(args.data)
    if args.batch_size > len(data.labels):
        raise InputError(f"--batch-size {args.batch_size} exceeds the {len(data.labels)} training images")
    x0 = data.as_model_input()[: args.batch_size]
    macs_at = method.train_step_macs(model, x0, torch.from_numpy(data.labels[: args.batch_size]), options, budget)
    recipe = FinetuneRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneRecipe)})
    if recipe.train_gmacs is not None:
        if not recipe.train_gmacs > 0:
            raise InputError(f"--train-gmacs must be > 0, got {recipe.train_gmacs}")
        steps, train_macs = steps_for_train_macs(macs_at, recipe.train_gmacs * 1e9)
    else:
        steps, train_macs = recipe.steps, float(sum(macs_at(i) for i in range(recipe.steps)))
    train = recipe.train_config(steps, run_id(method=method.name, options=options, budget=args.budget, spec=spec,
                                              checkpoint=sha256_of(args.checkpoint), data=sha256_of(args.data)))
    start = time.perf_counter()
    ema = method.finetune(model, data, options, budget, train, args.state, args.log_csv)
    if is_main_process():  # under torchrun every rank holds the same weights: rank 0 writes them
        atomic_save(method.state_to_save(ema), args.out)
        record = {
            "method": method.name, "budget": args.budget, "options": options,
            "train_gmacs": train_macs / 1e9, "train_gmacs_budget": recipe.train_gmacs,
            "gmacs_per_step_first": macs_at(0) / 1e9, "optimizer_steps": train.steps,
            "samples_seen": train.steps * train.batch_size, "batch_size": train.batch_size, "lr": train.lr,
            "schedule": train.schedule, "warmup_steps": train.warmup_steps, "min_lr_ratio": train.min_lr_ratio,
            "ema_decay": train.ema_decay, "seed": train.seed, "run_id": train.run_id,
            "wall_seconds_this_run": time.perf_counter() - start, "checkpoint_in": sha256_of(args.checkpoint),
            "data": sha256_of(args.data), "sha256": sha256_of(args.out), **provenance(),
        }
        write_json(record, str(args.out) + ".json")
        discard_state(args.state)
    return {"method": method.name, "budget": args.budget, "steps": train.steps, "train_gmacs": train_macs / 1e9,
            "out": args.out}


#################################################################################
#                              Sampling and metrics                             #
#################################################################################


def _sampling_args(p):
    from ditpareto.respacing import SAMPLERS

    g = p.add_argument_group("sampling")
    g.add_argument("--sampler", default="ddim", choices=SAMPLERS, help="respaced sampler (default: ddim)")
    g.add_argument("--steps", type=int, default=10, metavar="N",
                   help="sampling steps of dynamic methods; the dit baseline's budget overrides it (default: 10)")
    g.add_argument("--cfg-scale", type=float, default=1.5, metavar="S", help="guidance scale; 1 = off (default: 1.5)")
    g.add_argument("--guidance-channels", default="dit3", choices=["dit3", "all"],
                   help="guide DiT's first 3 noise channels (official) or all (default: dit3)")


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
                   + ("" if budget_required else " (default: full compute, i.e. --steps for dit)"))
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
    p.add_argument("--seed", type=int, required=True, metavar="S", help="seed: sample i uses generator S*2**20+i (S < 4096)")
    p.add_argument("--num-samples", type=int, default=1000, metavar="N",
                   help="samples of the whole grid point, over all shards (default: 1000)")
    p.add_argument("--shard", type=int, default=0, metavar="I", help="this job's shard, 0-based (default: 0)")
    p.add_argument("--shards", type=int, default=1, metavar="K",
                   help="shards the N samples are split into; merge them with merge-samples (default: 1)")
    p.add_argument("--batch-size", type=int, default=250, metavar="B", help="sampling batch size (default: 250)")
    p.add_argument("--reference-steps", type=int, default=None, metavar="N",
                   help="the full step count nominal compute ratios refer to (default: this point's steps)")
    p.add_argument("--ft", default="1.00", metavar="X",
                   help="the checkpoint's fine-tuning compute as a multiple of the shared budget, a table label "
                   "(default: 1.00)")
    _sampling_args(p)
    _latent_args(p)
    p.add_argument("--device", default="auto", metavar="DEV", help="torch device; auto: cuda if available (default)")
    p.add_argument("--out", required=True, metavar="NPZ", help="samples: images (N,H,W,C) uint8, labels, indices")
    p.add_argument("--record", required=True, metavar="JSON", help="sampling record: FLOPs, latency, parameters")


def _latent_args(p):
    g = p.add_argument_group("latents (paper setting)")
    g.add_argument("--vae", default=None, metavar="DIR",
                   help="local diffusers AutoencoderKL folder; set for latent models (default: pixel space)")
    g.add_argument("--latent-scale", type=float, default=0.18215, metavar="S", help="latent scale (default: 0.18215)")


def resolve_device(name: str):
    import torch

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def sample(args):
    import time

    import numpy as np

    from ditpareto.errors import InputError
    from ditpareto.flops import plan_macs, summarize
    from ditpareto.latency import machine
    from ditpareto.latents import decode_latents, load_vae
    from ditpareto.models import dit_config
    from ditpareto.timing import summarize as summarize_timings
    from ditpareto.results import provenance, write_json
    from ditpareto.sampling import generate, shard_indices

    if args.num_samples < 1 or args.batch_size < 1:
        raise InputError("--num-samples and --batch-size must be >= 1")
    check_seed(args.seed)
    if args.reference_steps is not None and args.reference_steps < 1:
        raise InputError(f"--reference-steps must be >= 1, got {args.reference_steps}")
    indices = shard_indices(args.num_samples, args.shard, args.shards)
    method, options = method_and_options(args)
    budget = method.parse_budget(args.budget)
    settings, spec = sampling_settings(args), model_spec(args)
    vae = load_vae(args.vae) if args.vae else None
    model = method.load_model(args.checkpoint, spec, options)
    plan = method.plan(model, budget, settings, spec)
    config = dit_config(spec.name, spec.image_size, **spec.overrides())
    macs = plan_macs(plan, spec, (config.in_channels, config.input_size, config.input_size))  # counted on the CPU
    device = resolve_device(args.device)
    model.to(device)
    decode = None
    if vae is not None:
        vae.to(device)
        decode = lambda z: decode_latents(vae, z, args.latent_scale)  # noqa: E731
    start = time.perf_counter()
    batch, seconds = generate(plan, spec, settings, args.seed, indices, args.batch_size, decode=decode, device=device)
    wall = time.perf_counter() - start
    timed = np.array(seconds[1:] if len(seconds) > 1 else seconds)  # first batch is the warm-up
    timing = summarize_timings(timed.tolist())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(args.out) + ".tmp.npz")
    np.savez(tmp, images=batch.images, labels=batch.labels, indices=batch.indices)
    tmp.replace(args.out)
    record = {
        "method": method.name,
        "budget": method.budget_label(budget),
        "steps": plan.num_steps,
        "ft": args.ft,
        "cfg_scale": settings.cfg_scale,
        "seed": args.seed,
        # relative to the static DiT at the study's full step count: a method at fewer steps saves both ways
        "nominal_compute_ratio": method.nominal_compute_ratio(budget, settings) * plan.num_steps
        / (args.reference_steps or plan.num_steps),
        "reference_steps": args.reference_steps or plan.num_steps,
        **summarize(macs),
        "latency_ms_per_image": 1000 * timing.median,  # in-process, beside other jobs: the latency job is the clean one
        "latency_ms_per_image_std": 1000 * float(np.std(timed)),
        "latency_batch_size": args.batch_size,
        "wall_seconds": wall,
        "shard": args.shard,
        "shard_samples": len(indices),
        "device": str(device),
        "params": {
            "sampler": settings.sampler, "cfg_scale": settings.cfg_scale, "eta": settings.eta,
            "guidance_channels": settings.guidance_channels, "default_steps": settings.steps,
            "num_samples": args.num_samples, "shards": args.shards, "model": spec.name, "vae": args.vae,
            "image_size": spec.image_size, "threads": __import__("torch").get_num_threads(), **plan.details,
            "options": options,
        },
        **provenance(),
    }
    record.update(training_fields(args.checkpoint))
    record["machine"] = machine()  # what the timing columns depend on
    write_json(record, args.record)
    return {k: record[k] for k in ("method", "budget", "seed", "gmacs_per_image", "latency_ms_per_image")}


def training_fields(checkpoint: str) -> dict:
    """What the sampled model's fine-tune cost (0 for the untouched base): from <checkpoint>.json when present."""
    from ditpareto.results import read_record

    path = Path(str(checkpoint) + ".json")
    if not path.is_file():
        return {"train_gmacs": 0.0, "optimizer_steps": 0, "samples_seen": 0}
    record = read_record(path, required=("train_gmacs", "optimizer_steps", "samples_seen"))
    return {k: record[k] for k in ("train_gmacs", "optimizer_steps", "samples_seen")}


def _latency_args(p):
    p.add_argument("--points", required=True, metavar="JSON",
                   help='grid points as a JSON list of {"method", "budget", "steps", "ft", "cfg_scale", "seed", '
                   '"options", "checkpoint"}')
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 250], metavar="B",
                   help="batch sizes to time (default: 1 250: batch 1 and the sampling batch)")
    p.add_argument("--rounds", type=int, default=3, metavar="R", help="timed rounds after one warm-up (default: 3)")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"], help="respaced sampler (default: ddim)")
    p.add_argument("--guidance-channels", default="dit3", choices=["dit3", "all"], help="guided channels")
    p.add_argument("--out", required=True, metavar="CSV", help="median/min/max ms per image per point and batch; "
                   "the machine record <out>.json beside it")


def latency(args):
    """Every point's model, timed in interleaved rounds on a machine this job holds alone."""
    import pandas as pd

    from ditpareto.errors import InputError
    from ditpareto.latency import machine, measure, prepare
    from ditpareto.methods import SamplingSettings, get_method
    from ditpareto.results import provenance, write_json
    from ditpareto.study import GridPoint, cfg_label

    try:
        points = json.loads(args.points)
    except json.JSONDecodeError as exc:
        raise InputError(f"--points is not JSON: {exc}") from None
    if not isinstance(points, list) or not points or args.rounds < 1 or min(args.batch_sizes) < 1:
        raise InputError("latency needs a non-empty --points list, --rounds >= 1 and --batch-sizes >= 1")
    spec = model_spec(args)
    timed, rows = [], {}
    for point in points:
        check_seed(int(point["seed"]))
        method = get_method(point["method"])
        options = method.parse_options(point.get("options", {}))
        settings = SamplingSettings(sampler=args.sampler, steps=int(point["steps"]),
                                    cfg_scale=float(point["cfg_scale"]), guidance_channels=args.guidance_channels)
        model = method.load_model(point["checkpoint"], spec, options)
        plan = method.plan(model, method.parse_budget(point["budget"]), settings, spec)
        key = GridPoint(point["method"], point["budget"], int(point["steps"]), point["ft"],
                        cfg_label(point["cfg_scale"]), int(point["seed"]))
        timed.append(prepare(key.stem, plan, spec, settings, key.seed))
        rows[key.stem] = key
    table = pd.DataFrame(measure(timed, args.batch_sizes, args.rounds))
    for column in ("method", "budget", "steps", "ft", "cfg", "seed"):
        table[column] = [getattr(rows[name], column) for name in table["point"]]
    table = table.rename(columns={"cfg": "cfg_scale"})
    table["cfg_scale"] = table["cfg_scale"].astype(float)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    write_json({**machine(), "rounds": args.rounds, "batch_sizes": args.batch_sizes, **provenance()},
               str(args.out) + ".json")
    return {"points": len(points), "rounds": args.rounds, "out": args.out}


def check_seed(seed: int) -> None:
    from ditpareto.errors import InputError
    from ditpareto.diffusion import MAX_SEED

    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed must be in [0, {MAX_SEED}] (sample i uses generator seed * 2**20 + i), got {seed}")


def _merge_samples_args(p):
    p.add_argument("--shards", nargs="+", required=True, metavar="NPZ", help="shard samples from `sample --shard`")
    p.add_argument("--records", nargs="+", required=True, metavar="JSON", help="their sampling records (same order)")
    p.add_argument("--out", required=True, metavar="NPZ", help="merged samples, in global index order")
    p.add_argument("--record", required=True, metavar="JSON", help="merged sampling record")


def merge_samples(args):
    import numpy as np

    from ditpareto.errors import InputError
    from ditpareto.results import read_record, write_json
    from ditpareto.sampling import merge_records, merge_shards

    if len(args.shards) != len(args.records):
        raise InputError(f"{len(args.shards)} shard files but {len(args.records)} records")
    merged = merge_shards(args.shards)
    record = merge_records([read_record(r, required=(*SAMPLE_RECORD_KEYS, "shard_samples", "wall_seconds",
                                                      "latency_ms_per_image", "latency_ms_per_image_std"))
                            for r in args.records])
    if len(merged["indices"]) != record["params"]["num_samples"]:
        raise InputError(f"shards hold {len(merged['indices'])} samples, the records say {record['params']['num_samples']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(args.out) + ".tmp.npz")
    np.savez(tmp, **merged)
    tmp.replace(args.out)
    write_json(record, args.record)
    return {"out": args.out, "samples": len(merged["indices"]), "shards": len(args.shards)}


def _evaluate_args(p):
    p.add_argument("--samples", required=True, metavar="NPZ", help="samples from `sample`")
    p.add_argument("--record", required=True, metavar="JSON", help="sampling record from `sample`")
    _metric_args(p)
    p.add_argument("--out", required=True, metavar="JSON", help="metrics of this grid point")


SAMPLE_RECORD_KEYS = ("method", "budget", "steps", "cfg_scale", "seed", "gmacs_per_image", "params")


def evaluate(args):
    from ditpareto.data import load_draw, load_samples
    from ditpareto.errors import InputError
    from ditpareto.metrics import compute_metrics, load_reference_batch, metrics_against_reference_batch
    from ditpareto.results import read_record, write_json

    record = read_record(args.record, required=SAMPLE_RECORD_KEYS)  # before any compute
    if not isinstance(record["params"], dict):
        raise InputError(f"record {args.record}: params must be an object")
    images = load_samples(args.samples)["images"]
    if args.reference_batch:
        reference = load_reference_batch(args.reference_batch)
        metrics = metrics_against_reference_batch(images, reference, metric_settings(args))
        reference_images = 0 if reference.images is None else len(reference.images)
    else:
        reference_set = load_draw(args.reference)
        metrics = compute_metrics(images, reference_set.images, metric_settings(args))
        reference_images = len(reference_set.images)
    record.update(metrics)
    record["params"]["feature_extractor"] = args.extractor
    record["params"]["reference"] = "reference_batch" if args.reference_batch else "reference_draw"
    record["params"]["reference_images"] = int(reference_images)
    write_json(record, args.out)
    return metrics


def _convergence_args(p):
    p.add_argument("--snapshots", nargs="+", required=True, metavar="PT",
                   help="EMA snapshots of a pretraining run (pretrain --snapshot-every): ema-step<N>.pt")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed, the same for every snapshot")
    p.add_argument("--num-samples", type=int, default=1000, metavar="N", help="samples per snapshot (default: 1000)")
    p.add_argument("--batch-size", type=int, default=250, metavar="B", help="sampling batch size (default: 250)")
    _sampling_args(p)
    _metric_args(p)
    p.add_argument("--out", required=True, metavar="CSV", help="FID (and KID, precision, recall) per snapshot step")


def convergence(args):
    """The static DiT of every snapshot at --steps, the same noise and labels (paired), scored like the grid."""
    import re

    import pandas as pd

    from ditpareto.data import load_draw
    from ditpareto.errors import InputError
    from ditpareto.methods import get_method
    from ditpareto.metrics import compute_metrics
    from ditpareto.sampling import generate

    if args.reference_batch:
        raise InputError("convergence scores against a reference draw: pass --reference")
    method, settings, spec = get_method("dit"), sampling_settings(args), model_spec(args)
    reference = load_draw(args.reference).images
    rows = []
    for path in sorted(args.snapshots):
        match = re.search(r"step(\d+)", Path(path).name)
        if not match:
            raise InputError(f"snapshot {path} is not named ema-step<N>.pt")
        model = method.load_model(path, spec, {})
        plan = method.plan(model, settings.steps, settings, spec)
        batch, _ = generate(plan, spec, settings, args.seed, range(args.num_samples), args.batch_size)
        metrics = compute_metrics(batch.images, reference, metric_settings(args))
        rows.append({"step": int(match.group(1)), "snapshot": Path(path).name, **metrics})
        log.info("step %d: FID %.3f", rows[-1]["step"], metrics["fid"])
    table = pd.DataFrame(rows).sort_values("step")
    table["fid_change_from_previous"] = table["fid"].diff()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    return {"steps": table["step"].tolist(), "fid": [round(v, 3) for v in table["fid"]]}


#################################################################################
#                                FLOPs and tables                               #
#################################################################################


def _flops_args(p):
    _method_args(p, budget_required=False)
    p.add_argument("--checkpoint", default=None, metavar="PT", help="weights (default: random init)")
    _sampling_args(p)


def flops(args):
    import torch

    from ditpareto.flops import dit_macs_per_call, plan_macs, summarize
    from ditpareto.models import build_dit, dit_config

    method, options = method_and_options(args)
    settings, spec = sampling_settings(args), model_spec(args)
    budget = method.parse_budget(args.budget) if args.budget is not None else method.full_budget(settings)
    config = dit_config(spec.name, spec.image_size, **spec.overrides())
    if args.checkpoint:
        model = method.load_model(args.checkpoint, spec, options)
    else:
        torch.manual_seed(0)
        model = method.convert(build_dit(spec.name, spec.image_size, **spec.overrides()), options).eval()
    plan = method.plan(model, budget, settings, spec)
    macs = plan_macs(plan, spec, (config.in_channels, config.input_size, config.input_size))
    return {"method": method.name, "budget": method.budget_label(budget), "model": spec.name,
            "image_size": spec.image_size, **summarize(macs),
            "analytic_gmacs_per_call_static_dit": dit_macs_per_call(config) / 1e9, "details": plan.details}


def _aggregate_args(p):
    p.add_argument("metrics", nargs="+", metavar="JSON", help="metrics files of the grid points")
    p.add_argument("--latency", default=None, metavar="CSV",
                   help="the latency job's table: its medians become latency_ms_per_image (the sampling jobs' own "
                   "timing, taken beside other jobs, is kept as sampling_latency_ms_per_image)")
    p.add_argument("--out", required=True, metavar="CSV", help="table, one row per grid point")


def aggregate(args):
    from ditpareto.results import metrics_table, with_latency

    table = metrics_table(args.metrics)
    if args.latency:
        table = with_latency(table, args.latency)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    return {"rows": len(table), "out": args.out}


def _notebook_args(p):
    p.add_argument("--notebook", required=True, metavar="IPYNB", help="output-free notebook from notebooks/")
    p.add_argument("--out", required=True, metavar="IPYNB", help="executed copy, with its outputs")
    p.add_argument("--parameters", default="{}", metavar="JSON",
                   help="papermill parameters as a JSON object (default: the notebook's own defaults)")
    p.add_argument("--figures", nargs="*", default=[], metavar="FILE",
                   help="files the notebook must have written (checked after the run)")


def notebook(args):
    import papermill

    from ditpareto.errors import InputError

    try:
        parameters = json.loads(args.parameters)
    except json.JSONDecodeError as exc:
        raise InputError(f"--parameters is not JSON: {exc}") from None
    if not isinstance(parameters, dict):
        raise InputError("--parameters must be a JSON object")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 4):
        try:
            papermill.execute_notebook(args.notebook, args.out, parameters=parameters, kernel_name="python3",
                                       progress_bar=False, cwd=Path.cwd())
            break
        except RuntimeError as exc:  # kernels started at the same moment can race for a TCP port
            if "Kernel died before replying" not in str(exc) or attempt == 3:
                raise
            log.warning("kernel failed to start (attempt %d of 3): %s; retrying", attempt, exc)
    missing = [f for f in args.figures if not Path(f).is_file()]
    if missing:
        raise InputError(f"{args.notebook} ran but did not write {missing}")
    return {"notebook": args.notebook, "out": args.out, "figures": args.figures}


COMMANDS = [
    Command("prepare-data", prepare_data, "Prepare a dataset as uint8 train/held-out arrays.",
            "python -m ditpareto prepare-data --dataset digits --image-size 16 --out resources/data/digits.npz",
            _prepare_data_args),
    Command("pretrain", pretrain, "Train a class-conditional DiT from scratch (the study's base model).",
            "python -m ditpareto pretrain --model dit-tiny-2 --image-size 16 --in-channels 1 --num-classes 10 "
            "--data resources/data/digits.npz --steps 8000 --state s.pt --log-csv loss.csv --out base.pt",
            _pretrain_args, model_args=True),
    Command("import-base", import_base, "Check a pretrained DiT (sha256, keys, shapes) and copy it into the study.",
            "python -m ditpareto import-base --model dit-xl-2 --image-size 256 --checkpoint DiT-XL-2-256x256.pt "
            "--sha256 HEX --out resources/pretrained/base.pt", _import_base_args, model_args=True),
    Command("import-extractor", import_extractor, "Check a shipped FID extractor (sha256, keys, shapes) and copy it.",
            "python -m ditpareto import-extractor --checkpoint assets/extractor/glyph-cnn-16.pt --sha256 HEX "
            "--out resources/fid/extractor.pt", _import_extractor_args),
    Command("import-finetuned", import_finetuned, "Check a fine-tune (sha256, keys, shapes, record) and copy it.",
            "python -m ditpareto import-finetuned --method dydit --budget 0.50 --model dit-toy-2 --image-size 16 "
            "--in-channels 1 --num-classes 10 --checkpoint assets/finetuned/dydit/budget~0.50/finetuned.pt "
            "--out finetuned.pt", _import_finetuned_args, model_args=True),
    Command("train-extractor", train_extractor, "Train the FID feature extractor (glyphs CNN or digits classifier).",
            "python -m ditpareto train-extractor --data resources/data/extractor.npz "
            "--val resources/data/extractor_val.npz --out cnn.pt --report cnn.json", _classifier_args),
    Command("reference", reference, "Real-vs-real FID floor (independent draw vs reference) and pure-noise FID.",
            "python -m ditpareto reference --reference resources/data/reference.npz --floor resources/data/floor.npz "
            "--floor-samples 1000 --extractor-weights cnn.pt --out ref.json", _reference_args),
    Command("calibrate", calibrate, "Calibrate the FID extractor: graded degradations vs the seed-to-seed spread.",
            "python -m ditpareto calibrate --reference resources/data/reference.npz --floor resources/data/floor.npz "
            "--samples 1000 --extractor-weights cnn.pt --out results/metrics/calibration.csv", _calibrate_args),
    Command("convert", convert, "Convert a pretrained DiT into a method's model (its initialisation).",
            "python -m ditpareto convert --method flexidit --base base.pt --model dit-tiny-2 --image-size 16 "
            "--in-channels 1 --num-classes 10 --out converted.pt", _convert_args, model_args=True),
    Command("finetune", finetune, "Fine-tune a converted model (once, or per budget); resumable.",
            "python -m ditpareto finetune --method flexidit --checkpoint converted.pt --data dataset.npz "
            "--model dit-tiny-2 --image-size 16 --in-channels 1 --num-classes 10 --steps 300 --state s.pt "
            "--log-csv loss.csv --out finetuned.pt", _finetune_args, model_args=True),
    Command("sample", sample, "Draw a grid point's samples; record executed FLOPs and latency.",
            "python -m ditpareto sample --method dit --budget 10 --seed 0 --checkpoint base.pt --model dit-tiny-2 "
            "--image-size 16 --in-channels 1 --num-classes 10 --out s.npz --record s.json", _sample_args,
            model_args=True),
    Command("merge-samples", merge_samples, "Merge a grid point's sample shards (identical for any shard count).",
            "python -m ditpareto merge-samples --shards s0.npz s1.npz --records s0.json s1.json --out s.npz "
            "--record s.json", _merge_samples_args),
    Command("evaluate", evaluate, "FID/KID/IS/precision/recall of a grid point with torch-fidelity.",
            "python -m ditpareto evaluate --samples s.npz --record s.json --reference resources/data/reference.npz "
            "--extractor-weights clf.pt --out metrics.json", _evaluate_args),
    Command("convergence", convergence, "FID of a pretraining run's EMA snapshots (paired seeds): is it converged?",
            "python -m ditpareto convergence --snapshots snapshots/ema-step*.pt --model dit-toy-2 --image-size 16 "
            "--in-channels 1 --num-classes 10 --steps 10 --cfg-scale 2.0 --reference resources/data/reference.npz "
            "--extractor-weights resources/fid/extractor.pt --out convergence.csv", _convergence_args,
            model_args=True),
    Command("latency", latency, "Time every grid point's model in interleaved rounds on a machine held alone.",
            "python -m ditpareto --threads 2 latency --points '[{\"method\": \"dit\", \"budget\": \"10\", "
            "\"steps\": 10, \"ft\": \"0.00\", \"cfg_scale\": 2.0, \"seed\": 0, \"checkpoint\": \"base.pt\"}]' "
            "--model dit-toy-2 --image-size 16 --in-channels 1 --num-classes 10 --out latency.csv", _latency_args,
            model_args=True),
    Command("flops", flops, "Executed MACs per network call and per image (DiT's GFLOPs convention).",
            "python -m ditpareto flops --method dit --model dit-xl-2 --image-size 256", _flops_args,
            model_args=True),
    Command("aggregate", aggregate, "Collect grid-point metrics into one CSV table.",
            "python -m ditpareto aggregate results/metrics/*/*/*/*.json --out results/tables/metrics.csv",
            _aggregate_args),
    Command("notebook", notebook, "Execute a figure notebook with papermill (headless) on a study's results.",
            "python -m ditpareto notebook --notebook notebooks/pareto.ipynb --out results/notebooks/pareto.ipynb "
            "--parameters '{\"fixed_cfg\": 2.0}'", _notebook_args),
]
