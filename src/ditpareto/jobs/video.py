"""Video jobs: clip draws (H.264 + labels), the FVD-toy extractor and its validation, the Latte base.

One pure function per job: typed inputs, files in, files out, a small summary dict back; the CLI
(``ditpareto.commands``) only parses flags into these arguments."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from ditpareto.archs import LATTE_ARCHS, LATTE_IMAGE_BASE, latte_config
from ditpareto.clipsets import load_clip_draw, save_clip_draw
from ditpareto.data import ImageSet, save_draw
from ditpareto.errors import InputError
from ditpareto.models.checkpoint import atomic_save, extract_state_dict, load_into, read_checkpoint
from ditpareto.results import provenance, sha256_of, verified_digest, write_json
from ditpareto.study import ModelSpec, TrainConfig


def prepare_clips(*, draw: str, num: int, out: str, video: str, seed: int = 0, frames_out: str | None = None) -> dict:
    """One draw of bouncing-glyph clips: the frames as H.264 (``--video``), labels and attributes in ``--out``, a
    record <out>.json (motion settings, static-token share, codec error); optionally every decoded frame as an
    image draw (``--frames-out``: the training set of the video base's image DiT).

    Example: python -m ditpareto prepare-clips --draw train --num 10000 --out train.npz --video train.mp4
    """
    from ditpareto import glyph_clips, glyphs

    drawn = glyph_clips.draw_clips(draw, num, seed, progress=True)
    save_clip_draw(drawn.clips, drawn.labels, drawn.attributes, out, video, glyph_clips.DOWNSAMPLE)
    clips, _ = load_clip_draw(out, video)
    rendered = glyph_clips.downsample(drawn.clips)
    record = {
        "draw": draw, "num": num, "seed": seed, "frames": int(clips.clips.shape[1]),
        "frame_size": int(clips.clips.shape[2]), "render_size": int(drawn.clips.shape[2]),
        "motion": dataclasses.asdict(glyph_clips.MotionSettings()), "renderer": glyphs.renderer_versions(),
        "static_token_fraction": glyph_clips.static_token_fraction(clips.clips),
        "codec_mean_abs_error": float(np.abs(clips.clips.astype(np.int16) - rendered).mean()),
        "label_counts": {k: np.bincount(v).tolist() for k, v in drawn.attributes.items()}, **provenance(),
    }
    if frames_out:
        save_draw(ImageSet(clips.frames(), np.repeat(clips.labels, clips.clips.shape[1])), frames_out)
        record["frames_sha256"] = sha256_of(frames_out)
    record.update({"sha256": sha256_of(out), "video_sha256": sha256_of(video)})
    write_json(record, str(out) + ".json")
    return {k: record[k] for k in ("draw", "num", "static_token_fraction", "codec_mean_abs_error")}


def train_clip_extractor(*, data: str, val: str, out: str, report: str, steps: int = 800, seed: int = 0) -> dict:
    """Train the FVD-toy feature extractor: a (2+1)D CNN with one head per clip attribute.

    Example: python -m ditpareto train-clip-extractor --data extractor.npz --val extractor_val.npz --out cnn3d.pt
    --report cnn3d.json
    """
    from ditpareto.clip_extractor import save_clip_cnn, train_clip_cnn

    train, attributes = load_clip_draw(data, _video(data))
    val_clips, val_attributes = load_clip_draw(val, _video(val))
    model, stats = train_clip_cnn(train.clips, attributes, val_clips.clips, val_attributes, steps=steps, seed=seed)
    save_clip_cnn(model, out)
    write_json({**stats, "steps": steps, "seed": seed, **provenance()}, report)
    return stats


def validate_clip_extractor(*, extractor: str, reference: str, floor: str, out: str, seed: int = 0) -> dict:
    """The FVD-toy validation table: shuffled, frozen and jittered real clips each >= 10x the floor, time-reversed
    clips <= 2x (a CSV; an extractor that fails a bound is reported, not hidden).

    Example: python -m ditpareto validate-clip-extractor --extractor cnn3d.pt --reference reference.npz
    --floor floor.npz --out validation.csv
    """
    import pandas as pd

    from ditpareto.clip_extractor import load_clip_cnn, validate_clip_features

    rows = validate_clip_features(load_clip_cnn(extractor), load_clip_draw(reference, _video(reference))[0].clips,
                                  load_clip_draw(floor, _video(floor))[0].clips, seed=seed)
    pd.DataFrame(rows).to_csv(out, index=False)
    return {row["perturbation"]: round(row["ratio_to_floor"], 2) for row in rows}


def pretrain_video(*, spec: ModelSpec, train: TrainConfig, data: str, state: str, log_csv: str, out: str,
                   image_base: str | None = None, init: str | None = None, init_sha256: str | None = None,
                   class_dropout: float = 0.1) -> dict:
    """Train a Latte model on clips, starting from an image DiT inflated frame by frame (zero-gated temporal blocks)
    or, with ``init``, from a Latte checkpoint of the same arch (a previous stage, continued with a fresh schedule);
    its EMA weights in Latte's layout and a record <out>.pretrain.json (frames per clip and the frame embedding's
    place are the arch's). Resumable, as ``pretrain``.

    Example: python -m ditpareto pretrain-video --model latte-toy-2 --image-size 16 --in-channels 1
    --num-classes 10 --data train.npz --image-base frames-base.pt --steps 3000 --state s.pt --log-csv loss.csv
    --out latte.pt
    """
    from ditpareto.models.latte import Latte, inflate_image_dit
    from ditpareto.jobs.training import run_id
    from ditpareto.train import discard_state, is_main_process, run_training

    if spec.name not in LATTE_ARCHS:
        raise InputError(f"pretrain-video needs a Latte model ({', '.join(sorted(LATTE_ARCHS))}), got {spec.name}")
    config = latte_config(spec.name, spec.image_size, class_dropout_prob=class_dropout, **spec.overrides())
    clips, _ = load_clip_draw(data, _video(data))
    if clips.clips.shape[1] != config.num_frames:
        raise InputError(f"{data} has {clips.clips.shape[1]}-frame clips; {spec.name} takes {config.num_frames}")
    if (image_base is None) == (init is None):
        raise InputError("pretrain-video starts from exactly one of an image base (--image-base) or a Latte (--init)")
    torch.manual_seed(train.seed)
    model = Latte(config)
    start = image_base or init
    if init is not None:
        verified_digest(init, init_sha256, "--init")
        load_into(model, init, what=f"{spec.name} at image size {spec.image_size}")
    else:
        image_state = extract_state_dict(read_checkpoint(image_base), f"image base {image_base}")
        model.load_state_dict(inflate_image_dit(image_state, config, seed=train.seed))
    train = dataclasses.replace(train, run_id=run_id(data=sha256_of(data), video=sha256_of(_video(data)),
                                                     start=sha256_of(start), config=config.to_dict()))
    started = time.time()
    ema = run_training(model, clips.as_model_input(), torch.from_numpy(clips.labels), train, state, log_csv)
    if is_main_process():
        atomic_save(ema.state_dict(), out)
        origin = ({"init_sha256": sha256_of(init)} if init else
                  {"image_base": LATTE_IMAGE_BASE[spec.name], "image_base_sha256": sha256_of(image_base)})
        write_json({"model": spec.name, "config": config.to_dict(), **origin, "data_sha256": sha256_of(data),
                    "train": dataclasses.asdict(train), "wall_s_this_run": round(time.time() - started, 1),
                    "sha256": sha256_of(out), **provenance()}, str(out) + ".pretrain.json")
        discard_state(state)
    return {"out": out, "steps": train.steps}


def evaluate_video(*, metric_settings, samples: str, record: str, reference: str, clip_extractor: str, out: str,
                   workdir: str | None = None) -> dict:
    """FVD-toy of a grid point's clips (the (2+1)D extractor's features against the reference clips, with its
    paired-bootstrap CI) and per-frame FID beside it (the image extractor on every frame); the generated clips
    pass through H.264 and decord first, as the real ones did. Its sampling record checked first.

    Example: python -m ditpareto evaluate-video --samples s.npz --record s.json --reference reference.npz
    --clip-extractor cnn3d.pt --extractor-weights cnn.pt --out metrics.json
    """
    import tempfile

    from ditpareto.bootstrap import bootstrap_fid
    from ditpareto.clip_extractor import clip_features, load_clip_cnn
    from ditpareto.clipsets import through_codec
    from ditpareto.intervals import BASIC_ESTIMAND, CI_LEVEL, basic_ci
    from ditpareto.metrics import extract_features, fid_from_features
    from ditpareto.npzfiles import load_samples
    from ditpareto.results import SAMPLE_RECORD_KEYS, read_record
    from ditpareto.runtime import resolve_device

    result = read_record(record, required=SAMPLE_RECORD_KEYS)  # before any compute
    loaded = load_samples(samples)
    generated = loaded["images"]
    if generated.ndim != 5:
        raise InputError(f"samples {samples} hold images {generated.shape}, not clips (N, F, H, W, C)")
    count = result["params"].get("num_samples")
    if len(generated) != count or not np.array_equal(np.sort(loaded["indices"]), np.arange(len(generated))):
        raise InputError(f"samples {samples} hold {len(generated)} clips; their record {record} says num_samples "
                         f"{count}, indices 0..{count - 1 if isinstance(count, int) else '?'} each once")
    real, _ = load_clip_draw(reference, _video(reference))
    if real.clips.shape[1:] != generated.shape[1:]:
        raise InputError(f"reference clips {real.clips.shape[1:]} and generated clips {generated.shape[1:]} differ "
                         "in shape")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        decoded = through_codec(generated, real.render_factor, tmp)
    extractor = load_clip_cnn(clip_extractor)
    fake_features, real_features = clip_features(extractor, decoded), clip_features(extractor, real.clips)
    fvd = fid_from_features(fake_features, real_features)
    frame_fid = fid_from_features(extract_features(decoded.reshape(-1, *decoded.shape[2:]), metric_settings),
                                  extract_features(real.frames(), metric_settings))
    metrics = {"fvd_toy": fvd, "frame_fid": frame_fid,
               "codec_mean_abs_error": float(np.abs(decoded.astype(np.int16) - generated).mean())}
    if metric_settings.bootstrap_replicates:
        replicates = bootstrap_fid(fake_features, real_features, metric_settings.bootstrap_replicates,
                                   metric_settings.bootstrap_seed)
        metrics["fvd_toy_ci_low"], metrics["fvd_toy_ci_high"] = basic_ci(fvd, replicates)
        result["fvd_toy_bootstrap"] = [float(v) for v in replicates]
        result["bootstrap"] = {"replicates": metric_settings.bootstrap_replicates,
                               "seed": metric_settings.bootstrap_seed, "level": CI_LEVEL,
                               "fvd_toy_ci_estimand": BASIC_ESTIMAND.replace("FID", "FVD-toy")}
    result.update(metrics)
    result["params"].update({"clip_extractor_sha256": sha256_of(clip_extractor), "reference_clips": len(real.clips),
                             "frame_feature_extractor": metric_settings.feature_extractor,
                             "metrics_device": str(resolve_device(metric_settings.device))})
    write_json(result, out)
    return metrics


def video_verdicts(*, metrics: list, claims: str, validation: str, out: str, comparisons: str, fixed_cfg: float,
                   full_steps: int) -> dict:
    """The papers' video claims against their toy analogues (FVD-toy relative to the untouched Latte at full steps,
    paired-bootstrap CI, tolerance: the real-vs-real floor of the extractor's validation table) and each method
    against the dit-ft step ladder at equal GMACs; the second table: every method point against the envelopes.

    Example: python -m ditpareto video-verdicts results/video/metrics/*/*/*/seed~0.json --claims
    results/published/video-claims.csv --validation clip_validation.csv --fixed-cfg 1.5 --full-steps 10
    --comparisons comparisons.csv --out verdicts.csv
    """
    import pandas as pd

    from ditpareto.results import read_metrics_record, unique_points
    from ditpareto.verdicts import VIDEO_CLAIM_COLUMNS, compare_with_envelopes, load_points, video_claims_ledger

    try:
        published = pd.read_csv(claims)
        floors = pd.read_csv(validation)
    except (OSError, ValueError) as exc:
        raise InputError(f"video claims {claims} or validation table {validation} cannot be read ({exc})") from None
    missing = [c for c in VIDEO_CLAIM_COLUMNS if c not in published]
    if missing:
        raise InputError(f"video claims {claims} lack columns {missing}")
    floor_rows = floors[floors.get("perturbation", pd.Series(dtype=str)) == "none (floor)"]
    if floor_rows.empty:
        raise InputError(f"validation table {validation} has no 'none (floor)' row (validate-clip-extractor writes it)")
    records = [read_metrics_record(p) for p in metrics]
    unique_points(records, metrics)
    if any("fvd_toy_bootstrap" not in r for r in records):
        raise InputError("video verdicts need FVD-toy bootstrap replicates in every record (evaluate-video with "
                         "--bootstrap-replicates > 0)")
    as_fid = [{**r, "fid": r["fvd_toy"], "fid_bootstrap": r["fvd_toy_bootstrap"]} for r in records]
    try:
        points = load_points(as_fid, fixed_cfg)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    table = compare_with_envelopes(points)
    ledger = video_claims_ledger(points, table, published, full_steps, float(floor_rows["fvd_toy"].iloc[0]))
    table.rename(columns={"fid": "fvd_toy", "envelope_fid": "envelope_fvd_toy"}).to_csv(comparisons, index=False)
    ledger.to_csv(out, index=False)
    return {"rows": len(ledger), "verdicts": ledger["verdict"].value_counts().to_dict() if len(ledger) else {}}


def video_figures(*, table: str, samples: list, pareto: str, strip: str, clips: str, count: int = 4) -> dict:
    """The video study's figures: FVD-toy (toy scale) or FVD against GMACs per clip, a strip per grid point (its first
    clip's frames in a row), and an animated GIF of the first ``count`` clips of every point side by side.

    Example: python -m ditpareto video-figures --table metrics.csv --samples a.npz b.npz --pareto pareto.png
    --strip samples.png --clips clips.gif
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from ditpareto.npzfiles import load_samples
    from ditpareto.plotting import plot_pareto
    from ditpareto.results import read_metrics_csv

    points = read_metrics_csv(table)
    quality = next((q for q in ("fvd", "fvd_toy") if q in points), None)
    if quality is None:
        raise InputError(f"{table} has no fvd or fvd_toy column: not a video study's table")
    scale = "paper setting: FVD (I3D)" if quality == "fvd" else "toy scale (16-frame 16 px glyph clips): FVD-toy"
    plot_pareto(points, [pareto], y=quality, x_label="GMACs per clip (whole trajectory, CFG included)",
                title=f"{scale} vs compute", log_y=True)
    loaded = [(path, load_samples(path)["images"]) for path in samples]
    rows, frames = [], []
    for path, clip_set in loaded:
        if clip_set.ndim != 5:
            raise InputError(f"samples {path} hold images, not clips")
        clip_set = clip_set[..., 0] if clip_set.shape[-1] == 1 else clip_set  # grey (toy) or RGB (paper)
        rows.append(np.concatenate(list(clip_set[0]), axis=1))
        frames.append(np.concatenate(list(clip_set[:count]), axis=2))  # (T, H, count*W[, 3])
    names = [str(Path(p).parent.parent.parent.name) + " " + Path(p).parent.parent.name.split("~")[1] for p in samples]
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 0.7 * len(rows) + 0.4), squeeze=False)
    for ax, row, name in zip(axes[:, 0], rows, names):
        ax.imshow(row, cmap="gray", vmin=0, vmax=255)
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize="x-small")
    axes[0, 0].set_title(f"first clip of each grid point, frames left to right ({scale.split(':')[0]})",
                         fontsize="small")
    fig.tight_layout()
    fig.savefig(strip, dpi=150)
    plt.close(fig)
    grid = np.concatenate(frames, axis=1)  # (T, points*H, count*W)
    zoom = max(1, 64 // loaded[0][1].shape[2])  # toy frames (16 px) drawn 4x; paper frames as they are
    images = [Image.fromarray(f).resize((f.shape[1] * zoom, f.shape[0] * zoom), Image.NEAREST) for f in grid]
    images[0].save(clips, save_all=True, append_images=images[1:], duration=125, loop=0)
    return {"points": len(points), "pareto": pareto, "strip": strip, "clips": clips}


def _video(npz: str) -> str:
    from ditpareto.clipsets import video_path

    return str(video_path(npz))
