"""The study's grid and path scheme, without torch: what the workflow plans and the results table is keyed by.

A grid point is (method, budget, steps, ft, cfg, seed):
  budget  the method's own compute knob (dit: the step count, "10i": 10 steps guided only inside the guidance
          interval; "full@B": the budget-B model at full compute), with "+S" sampled by sampler S instead of the
          study's (the sampler axis: "10+dpmpp-2m", "0.50+dpmpp-2m")
  steps   sampling steps (for dit and dit-ft equal to the budget)
  ft      fine-tuning compute as a multiple of the shared budget: "1.00", "0.00" for dit (no fine-tune), other
          values for the plateau check; "1.00s2": the shared compute with fine-tune seed 2 (seed noise)
Paths (the Snakefile's scheme):
  results/samples/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.npz
  results/checkpoints/{method}/[budget~{budget}/]ft~{ft}/finetuned.pt   (per-budget methods name the budget)
  assets/finetuned/{method}/[budget~{budget}/]finetuned.pt               (shipped fine-tunes, ft 1.00)
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ditpareto.errors import InputError
from ditpareto.respacing import SAMPLERS
from ditpareto.spec import (
    FINETUNE_MODES, FULL_PREFIX, INTERVAL_SUFFIX, SAMPLER_QUALIFIER, STEP_BUDGET_METHODS, split_sampler,
)

# Who trained the model a grid point samples (records' ``finetune_source``): the pipeline, the method's authors
# (training compute unknown: train_gmacs null), or nobody (the untouched base).
PIPELINE, OFFICIAL, NO_SOURCE = "pipeline", "official", "none"
NO_FINETUNE, UNIT_FINETUNE = "0.00", "1.00"
SHARED = "shared"  # the sha256 key of a shared fine-tune
# A method's full-compute point within this FID of dit-ft at full steps is at parity; beyond, "conversion cost".
PARITY_TOLERANCE = 0.3
# The paper video datasets' folder layouts, as Latte's loaders expect them (ditpareto.video_datasets reads them):
# FaceForensics, SkyTimelapse, Taichi-HD, UCF101 (class-conditional).
VIDEO_LAYOUTS = ("ffs", "sky", "taichi", "ucf101")
# DiT's SD-VAE latent scale: z = vae.encode(x).latent_dist.sample() * SD_VAE_SCALE.
SD_VAE_SCALE = 0.18215


@dataclass(frozen=True)
class ModelSpec:
    """The base DiT's shape, as given in config (``base`` section)."""

    name: str
    image_size: int
    in_channels: int = 4
    num_classes: int = 1000

    def overrides(self) -> dict:
        return {"in_channels": self.in_channels, "num_classes": self.num_classes}


def _help(text: str):
    return {"help": text}


@dataclass(frozen=True)
class SamplingSettings:
    """Sampler settings shared by every method (the budget may change ``steps`` for step-reduction methods). The
    fields' defaults and help are the sampling commands' flags (``commands.add_flags``)."""

    sampler: str = field(default="ddim", metadata={"help": "respaced sampler", "choices": SAMPLERS})
    steps: int = field(default=10, metadata={"help": "sampling steps of dynamic methods; the dit baseline's budget "
                                             "overrides it", "minimum": 1})
    cfg_scale: float = field(default=1.5, metadata=_help("guidance scale; 1 = off"))
    guidance_channels: str = field(default="dit3", metadata={
        "help": "guide DiT's first 3 noise channels (official) or all", "choices": ("dit3", "all")})
    eta: float = 0.0

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


# Independent draws of a procedural study (glyph images and glyph clips alike): one file each.
DRAWS = ("train", "reference", "floor", "extractor", "extractor_val")
GLYPH_EXTRACTOR, DIGITS_EXTRACTOR, INCEPTION_EXTRACTOR = "glyph-cnn", "digits-classifier", "inception-v3-compat"
EXTRACTORS = (GLYPH_EXTRACTOR, DIGITS_EXTRACTOR, INCEPTION_EXTRACTOR)
DEVICE_HELP = ("torch device: auto (cuda when torch sees a GPU; the choice is logged and recorded), cpu or cuda[:N] "
               "(an error when there is no GPU, never a CPU fallback)")


@dataclass
class MetricFields:
    """The metrics' settings as declared fields: their defaults, help and flags (``commands.add_flags``, with the
    flag name in ``flag`` where it differs); ``metrics.MetricSettings`` adds the checks."""

    feature_extractor: str = field(default=GLYPH_EXTRACTOR, metadata={
        "flag": "extractor", "help": "torch-fidelity feature extractor", "choices": EXTRACTORS})
    weights_path: str | None = field(default=None, metadata={
        "flag": "extractor-weights", "help": "local weights file of the extractor (never downloaded)",
        "required": True, "metavar": "PT"})
    kid_subset_size: int = field(default=500, metadata={"help": "KID subset size", "minimum": 1, "metavar": "N"})
    kid_subsets: int = 50
    isc_splits: int = 10
    prc_neighborhood: int = 3
    batch_size: int = 250
    rng_seed: int = 2020  # KID subsets and IS split shuffling
    progress: bool = True  # torch-fidelity's progress bars and messages (to stderr)
    bootstrap_replicates: int = field(default=2000, metadata={
        "help": "paired-bootstrap replicates of FID (and KID, precision, recall) for their CIs; 0: none",
        "minimum": 0, "metavar": "B"})
    bootstrap_seed: int = field(default=0, metadata={
        "help": "bootstrap seed: the same in every job, so every grid point resamples the same indices",
        "minimum": 0, "metavar": "S"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP, "metavar": "DEV"})
    head_samples: int = field(default=500, metadata={
        "help": "also the FID of the first N samples by index (the CFG selection's N: its optimism at equal N); "
        "0: none", "minimum": 0, "metavar": "N"})


METRIC_FLAGS = ("feature_extractor", "weights_path", "kid_subset_size", "bootstrap_replicates", "head_samples",
                "bootstrap_seed", "device")


SCHEDULES = ("constant", "cosine")
# Numerics of a sampling or training job (``ditpareto.runtime.precision_scope``): fp32 (TF32 off), tf32 (TF32
# matmuls and convolutions on CUDA; the same as fp32 on a CPU), bf16 (autocast to bfloat16, fp32 weights).
PRECISIONS = ("fp32", "tf32", "bf16")


def _precision_help():
    return {**_help("numerics: fp32, tf32 (TF32 matmuls on CUDA) or bf16 (autocast; fp32 weights and optimizer)"),
            "choices": PRECISIONS}


@dataclass
class TrainConfig:
    """Optimisation settings of one training run (the defaults are config ``base.pretrain``'s)."""

    steps: int = field(default=6000, metadata=_help("optimizer steps"))
    batch_size: int = field(default=128, metadata=_help("batch size (global, over all processes)"))
    lr: float = field(default=1e-3, metadata=_help("peak AdamW learning rate"))
    weight_decay: float = 0.0
    ema_decay: float = field(default=0.999, metadata=_help("EMA decay"))
    seed: int = field(default=0, metadata=_help("training seed"))
    checkpoint_every: int = field(default=500, metadata=_help("resumable state every N steps"))
    log_every: int = 50
    # Learning-rate schedule: linear warm-up over warmup_steps, then constant or cosine down to min_lr_ratio x lr
    # at the last step. Every AdamW parameter group follows it at its own peak (lr x its multiplier).
    warmup_steps: int = field(default=0, metadata=_help("linear learning-rate warm-up steps"))
    schedule: str = field(default="constant", metadata={**_help("learning rate after the warm-up: constant, or "
                                                                "cosine decay to min_lr_ratio x lr"),
                                                        "choices": SCHEDULES})
    min_lr_ratio: float = field(default=0.0, metadata=_help("cosine floor, as a share of lr"))
    # Every N steps keep a copy of the EMA weights in <state dir>/snapshots/ema-step<N>.pt (0: none).
    snapshot_every: int = field(default=0, metadata=_help("keep the EMA weights every N steps in "
                                                          "<state dir>/snapshots/ (0: none)"))
    precision: str = field(default="fp32", metadata=_precision_help())
    device: str = field(default="auto", metadata=_help("auto (cuda when torch sees a GPU), cpu or cuda; under "
                                                       "--nproc each process takes cuda:LOCAL_RANK"))
    # What is trained (method, options, budget, input checkpoint...): a saved state resumes only a run with the
    # same run_id and settings, so a changed config never continues a stale run.
    run_id: str = ""

    def __post_init__(self):
        _check_ranges(self, {"steps": (0, None), "batch_size": (1, None), "seed": (0, None),
                             "checkpoint_every": (1, None), "warmup_steps": (0, None), "snapshot_every": (0, None),
                             "min_lr_ratio": (0, 1)})
        if not (math.isfinite(self.lr) and self.lr > 0) or not 0 <= self.ema_decay < 1:
            raise InputError(f"lr must be finite and > 0 and ema_decay in [0, 1), got {self.lr}, {self.ema_decay}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak learning rate for the update that ends at step ``step + 1``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _check_ranges(settings, bounds: dict) -> None:
    """Each named field is a finite number within [low, high] (None: unbounded): InputError naming its flag."""
    for name, (low, high) in bounds.items():
        value = getattr(settings, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise InputError(f"--{name.replace('_', '-')} must be {span}, got {value}")


# The flags of the pretrain command (the rest of TrainConfig is set by the code).
PRETRAIN_FLAGS = ("steps", "batch_size", "lr", "ema_decay", "seed", "checkpoint_every", "warmup_steps", "schedule",
                  "min_lr_ratio", "snapshot_every", "precision", "device")


@dataclass(frozen=True)
class FinetuneRecipe:
    """The one fine-tuning recipe every method shares (the defaults are config ``finetune``'s)."""

    train_gmacs: float | None = field(default=None, metadata=_help(
        "training compute in GMACs (forward + backward of every term of the method's loss, counted like sampling): "
        "sets the step count, replacing steps"))
    steps: int = field(default=300, metadata=_help("optimizer steps when train_gmacs is not given"))
    batch_size: int = field(default=128, metadata=_help("batch size (global, over all processes)"))
    lr: float = field(default=3e-4, metadata=_help("peak AdamW learning rate of the backbone"))
    warmup_fraction: float = field(default=0.05, metadata=_help("linear warm-up, as a share of the steps"))
    schedule: str = field(default="cosine", metadata={**_help("learning rate after the warm-up"),
                                                      "choices": SCHEDULES})
    min_lr_ratio: float = field(default=0.0, metadata=_help("cosine floor, as a share of lr"))
    ema_horizon: float = field(default=0.1, metadata=_help("EMA horizon as a share of the steps: decay = 1 - 1 / "
                                                           "(horizon x steps)"))
    seed: int = field(default=0, metadata=_help("fine-tuning seed"))
    checkpoint_every: int = field(default=500, metadata=_help("resumable state every N steps"))
    precision: str = field(default="fp32", metadata=_precision_help())

    def __post_init__(self):
        _check_ranges(self, {"steps": (1, None), "batch_size": (1, None), "seed": (0, None),
                             "checkpoint_every": (1, None), "warmup_fraction": (0, 1), "min_lr_ratio": (0, 1)})
        for name in ("lr", "ema_horizon") + (("train_gmacs",) if self.train_gmacs is not None else ()):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")

    def train_config(self, steps: int, run_id: str, device: str = "auto") -> TrainConfig:
        """The run's TrainConfig once its step count is known."""
        return TrainConfig(steps=steps, batch_size=self.batch_size, lr=self.lr,
                           ema_decay=1 - 1 / max(1.0, self.ema_horizon * steps), seed=self.seed,
                           checkpoint_every=self.checkpoint_every, warmup_steps=round(self.warmup_fraction * steps),
                           schedule=self.schedule, min_lr_ratio=self.min_lr_ratio, precision=self.precision,
                           device=device, run_id=run_id)


def cfg_label(scale: float) -> str:
    """A guidance scale as it appears in paths (cfg~2.00)."""
    return f"{float(scale):.2f}"


FT_SEED_MARK = "s"


def ft_label(multiplier: float, seed: int | None = None) -> str:
    """A fine-tune's label: its compute multiple ("1.00"), plus "s<seed>" for a repeat with another seed."""
    return f"{float(multiplier):.2f}" + ("" if seed is None else f"{FT_SEED_MARK}{int(seed)}")


def parse_ft(label) -> tuple[float, int | None]:
    """(compute multiple, fine-tune seed or None for the study's own) of an ft label ("1.00", "1.00s2", 1.0)."""
    text = str(label)
    multiple, _, seed = text.partition(FT_SEED_MARK)
    return float(multiple), int(seed) if seed else None


# A grid point's budget label as the workflow's wildcard constraint: the method's label ("full@" for parity points,
# "i" for the guidance interval) and an optional "+sampler" (spec.split_sampler).
BUDGET_PATTERN = rf"(full@)?[0-9][0-9.\-]*i?(\{SAMPLER_QUALIFIER}({'|'.join(SAMPLERS)}))?"


def interval_budget(budget) -> bool:
    """Whether a step-count budget guides only inside the guidance interval ("10i", "10i+dpmpp-2m")."""
    return split_sampler(budget)[0].endswith(INTERVAL_SUFFIX)


def budget_steps(budget) -> int:
    """The step count of a step-count budget ("10", "10i", "10+dpmpp-2m")."""
    return int(split_sampler(budget)[0].removesuffix(INTERVAL_SUFFIX))


def budget_sampler(config: dict, budget) -> str:
    """The sampler a grid point's budget runs: its "+sampler" qualifier, else the study's (sampling.sampler)."""
    return split_sampler(budget)[1] or config["sampling"]["sampler"]


def budget_cfgs(budget, labels: Iterable[str]) -> list[str]:
    """The guidance labels a budget is sampled at: an interval budget never at 1.00 (unguided: the plain budget)."""
    return [c for c in labels if not (interval_budget(budget) and float(c) == 1.0)]


def checkpoint_budget(budget: str) -> str:
    """The budget whose fine-tune a grid point samples: B for "full@B" (and "full@B+sampler"), else the budget
    without its sampler qualifier (the sampler changes no weights)."""
    budget = split_sampler(budget)[0]
    return budget[len(FULL_PREFIX):] if budget.startswith(FULL_PREFIX) else budget


@dataclass(frozen=True)
class GridPoint:
    method: str
    budget: str
    steps: int
    ft: str
    cfg: str
    seed: int

    @property
    def stem(self) -> str:
        return (f"{self.method}/budget~{self.budget}/steps~{self.steps}/ft~{self.ft}/cfg~{self.cfg}"
                f"/seed~{self.seed}")


def samples_file(root: str | Path, point: GridPoint) -> Path:
    return Path(root) / f"{point.stem}.npz"


def metrics_file(root: str | Path, point: GridPoint) -> Path:
    return Path(root) / f"{point.stem}.json"


def shard_stem(root: str | Path, point: GridPoint, shard: int, shards: int) -> str:
    """A sampling job's output stem: <root>/<point>/shard~I-of-K (+ .npz, .record.json)."""
    return f"{root}/{point.stem}/shard~{shard}-of-{shards}"


def finetuned_checkpoint(method: str, budget: str, ft: str, root: str = "results/checkpoints") -> str:
    """The fine-tune a grid point of ``method`` at (budget, ft) samples; shared fine-tunes ignore the budget."""
    if FINETUNE_MODES[method] == "per_budget":
        return f"{root}/{method}/budget~{checkpoint_budget(budget)}/ft~{ft}/finetuned.pt"
    return f"{root}/{method}/ft~{ft}/finetuned.pt"


SHIPPED_DIR = "assets/finetuned"


def shipped_checkpoint(method: str, budget: str, root: str = SHIPPED_DIR) -> tuple[str, str]:
    """(path, sha256 key) of a shipped fine-tune at the shared budget: <root>/{method}/[budget~{b}/]finetuned.pt."""
    if FINETUNE_MODES[method] == "per_budget":
        b = checkpoint_budget(budget)
        return f"{root}/{method}/budget~{b}/finetuned.pt", b
    return f"{root}/{method}/finetuned.pt", SHARED


def method_cfgs(config: dict, entry: dict, recorded: float | None = None) -> list[str]:
    """The fixed scale (sampling.cfg_scale; instead, the point's ``recorded`` scale when given: sampling.cfg_recorded),
    the method's cfg_sweep and the CFG-selection candidates, as sorted unique labels."""
    own = config["sampling"]["cfg_scale"] if recorded is None else recorded
    scales = [own, *entry.get("cfg_sweep", []), *selection_scales(config)]
    return sorted({cfg_label(s) for s in scales}, key=float)


RECORDED_COLUMNS = ("method", "budget", "steps", "ft", "cfg_selected", "selection_seed")
# What a recorded table's row depends on besides its key (method, budget, steps, ft): the sampled checkpoint, the
# sampler and the executed training compute. A row that disagrees with the study is stale.
DEPENDENCY_COLUMNS = ("checkpoint_sha256", "sampler", "train_gmacs")
# Executed training GMACs land within a step of the target: rows within this share of it agree.
TRAIN_GMACS_TOLERANCE = 0.01


def point_dependencies(config: dict, method: str, budget: str) -> dict:
    """What a grid point at the study's own fine-tune depends on (``DEPENDENCY_COLUMNS``): the sha256 the config
    pins for the checkpoint it samples (None when the checkpoint is trained or converted here: unpinned), the
    sampler, and the target training GMACs (0 for the untouched base)."""
    if FINETUNE_MODES[method] == "none":
        base = config["base"]
        digest = base.get("sha256") if base.get("source") == "checkpoint" else None
        gmacs = 0.0
    else:
        entry = config["methods"][method]
        digest = (entry.get("sha256") or {}).get(shipped_checkpoint(method, budget)[1]) \
            if entry.get("source") == "checkpoint" else None
        gmacs = float(config.get("finetune", {}).get("train_gmacs") or 0.0)
    return {"checkpoint_sha256": digest.lower() if digest else None, "sampler": budget_sampler(config, budget),
            "train_gmacs": gmacs}


def stale_rows(path: str | Path, config: dict, keys: list[tuple], what: str, how: str) -> None:
    """Check that a recorded table (CSV keyed by method, budget, steps[, ft]) holds, for every key, a row recorded
    with the checkpoint, sampler and training compute the study uses (``point_dependencies``; a checkpoint trained
    here is unpinned, so only the other two are checked for it). Raises ValueError with one line naming the first
    stale key and ``how`` to re-record the table."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in DEPENDENCY_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise ValueError(f"{what} {path} does not say what it was recorded with (columns {missing}): stale; {how}")
    by_key = {}
    for row in rows:
        by_key.setdefault((row["method"], row["budget"], int(row["steps"])), row)
    for method, budget, steps, *_ in keys:
        row = by_key.get((method, budget, int(steps)))
        if row is None:
            raise ValueError(f"{what} {path} has no row for {method}/{budget}/{steps}: stale; {how}")
        wanted = point_dependencies(config, method, budget)
        recorded_gmacs = float(row["train_gmacs"] or 0.0)
        gmacs_ok = (abs(recorded_gmacs - wanted["train_gmacs"]) <= TRAIN_GMACS_TOLERANCE * wanted["train_gmacs"]
                    if wanted["train_gmacs"] else recorded_gmacs == 0.0)
        # a checkpoint trained here is not pinned: only its sampler and training compute can be checked
        same_checkpoint = wanted["checkpoint_sha256"] is None or \
            (row["checkpoint_sha256"] or "").lower() == wanted["checkpoint_sha256"]
        if not (same_checkpoint and row["sampler"] == wanted["sampler"] and gmacs_ok):
            raise ValueError(
                f"{what} {path} is stale for {method}/{budget}/{steps}: recorded with checkpoint "
                f"{(row['checkpoint_sha256'] or '?')[:12]}, sampler {row['sampler']}, train_gmacs {recorded_gmacs:g}; "
                f"the study uses {(wanted['checkpoint_sha256'] or 'one trained here')[:16]}, {wanted['sampler']}, "
                f"{wanted['train_gmacs']:g}; {how}")


def read_recorded_scales(path: str | Path) -> dict[tuple[str, str, int, str], float]:
    """The guidance scales a long run selected (``cfg_selection.choose_scales``'s CSV): (method, budget, steps, ft)
    -> scale. Raises ValueError naming a missing column, a repeated key or a scale that is not finite and >= 1."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ValueError(f"recorded guidance scales {path} cannot be read ({exc.strerror})") from None
    missing = [c for c in RECORDED_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise ValueError(f"recorded guidance scales {path} lack columns {missing} (or rows)")
    scales: dict[tuple[str, str, int, str], float] = {}
    for row in rows:
        try:
            key = (row["method"], row["budget"], int(row["steps"]), row["ft"])
        except (TypeError, ValueError):
            raise ValueError(f"recorded guidance scales {path}: steps {row['steps']!r} is not an integer") from None
        try:
            scale = float(row["cfg_selected"])
        except (TypeError, ValueError):
            scale = math.nan
        if key in scales:
            raise ValueError(f"recorded guidance scales {path}: {'/'.join(map(str, key))} appears twice")
        if not math.isfinite(scale) or scale < 1:
            raise ValueError(f"recorded guidance scales {path}: {'/'.join(map(str, key))} has scale "
                             f"{row['cfg_selected']} (finite, >= 1 expected)")
        scales[key] = scale
    return scales


NOISE_TABLE_COLUMNS = ("method", "budget", "steps", "finetune_seed_std", "finetune_seeds")


PLATEAU_TABLE_KEYS = ("method", "budget", "steps", "seed", "multiple", "cfg_scale", "fid", "num_samples",
                      "bootstrap_seed", "replicates", "checkpoint_sha256", "base_sha256", "sampler", "train_gmacs")


def read_plateau_table(path: str | Path) -> list[dict]:
    """A recorded plateau table (JSON ``{"rows": [...]}``, ``verdicts.plateau_rows``'s rows), checked: every key,
    a finite FID, a multiple > 0 other than 1, finite replicates, one row per (method, budget, steps, seed,
    multiple). Raises ValueError naming what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"plateau table {path} cannot be read ({exc})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"plateau table {path} has no rows (a JSON object with a non-empty list \"rows\")")
    out, seen = [], set()
    for i, row in enumerate(rows):
        missing = [k for k in PLATEAU_TABLE_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"plateau table {path}: row {i} lacks {missing}")
        key = (row["method"], str(row["budget"]), row["steps"], row["seed"], row["multiple"])
        try:
            numbers = [float(row[k]) for k in ("multiple", "fid", "train_gmacs")]
            replicates = [float(v) for v in row["replicates"]]
            counts = [int(row[k]) for k in ("steps", "seed", "num_samples", "bootstrap_seed")]
        except (TypeError, ValueError):
            raise ValueError(f"plateau table {path}: row {i} has a non-numeric value") from None
        if not all(math.isfinite(v) for v in numbers + replicates) or not replicates or numbers[0] <= 0 \
                or numbers[0] == 1.0 or key in seen:
            raise ValueError(f"plateau table {path}: row {i} ({'/'.join(map(str, key))}) is repeated, has no or "
                             "non-finite replicates, a non-finite FID or a multiple that is not > 0 and != 1")
        seen.add(key)
        out.append({**row, "budget": str(row["budget"]), "multiple": numbers[0], "fid": numbers[1],
                    "train_gmacs": numbers[2], "replicates": replicates,
                    **dict(zip(("steps", "seed", "num_samples", "bootstrap_seed"), counts))})
    return out


def stale_plateau_rows(path: str | Path, rows: list[dict], config: dict, how: str) -> None:
    """Check that every recorded plateau row of a method the study runs was fine-tuned from the study's base (when
    the config pins it), sampled with its sampler, at its multiple of the study's training compute. Raises
    ValueError with one line naming the first stale row and ``how`` to re-record the table."""
    base = config["base"]
    base_sha = (base.get("sha256") or "").lower() if base.get("source") == "checkpoint" else ""
    gmacs = float(config.get("finetune", {}).get("train_gmacs") or 0.0)
    sampler = config["sampling"]["sampler"]
    for row in rows:
        if row["method"] not in config["methods"]:
            continue
        wanted = row["multiple"] * gmacs
        if not (row["sampler"] == sampler and abs(row["train_gmacs"] - wanted) <= TRAIN_GMACS_TOLERANCE * wanted
                and (not base_sha or (row["base_sha256"] or "").lower() == base_sha)):
            raise ValueError(
                f"config finetune.plateau_recorded.table {path} is stale for {row['method']}/{row['budget']} at "
                f"{row['multiple']:g}x: recorded from base {(row['base_sha256'] or '?')[:12]}, sampler "
                f"{row['sampler']}, train_gmacs {row['train_gmacs']:g}; the study uses "
                f"{base_sha[:12] or 'a base trained here'}, {sampler}, {wanted:g}; {how}")


def read_noise_table(path: str | Path) -> list[dict]:
    """A recorded fine-tune seed-noise table (``verdicts.finetune_seed_noise``'s CSV), checked: its columns, one row
    per (method, budget), a finite std >= 0 from >= 2 seeds. Raises ValueError naming what is wrong."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ValueError(f"fine-tune seed-noise table {path} cannot be read ({exc.strerror})") from None
    missing = [c for c in (*NOISE_TABLE_COLUMNS, *DEPENDENCY_COLUMNS) if not rows or c not in rows[0]]
    if missing:
        raise ValueError(f"fine-tune seed-noise table {path} lacks columns {missing} (or rows)")
    out, seen = [], set()
    for row in rows:
        key = (row["method"], row["budget"])
        try:
            std, seeds, steps = float(row["finetune_seed_std"]), int(row["finetune_seeds"]), int(row["steps"])
        except (TypeError, ValueError):
            raise ValueError(f"fine-tune seed-noise table {path}: {'/'.join(map(str, key))} has a non-numeric std, seed count "
                             "or step count") from None
        if key in seen or not math.isfinite(std) or std < 0 or seeds < 2:
            raise ValueError(f"fine-tune seed-noise table {path}: {'/'.join(map(str, key))} is repeated or has std {std} from "
                             f"{seeds} seeds (one row per budget, finite std >= 0, >= 2 seeds expected)")
        seen.add(key)
        out.append({**row, "steps": steps, "finetune_seed_std": std, "finetune_seeds": seeds})
    return out


def recorded_selection_seeds(path: str | Path) -> set[int]:
    """The selection seeds of a recorded-scales table (read after ``read_recorded_scales`` accepted it)."""
    with open(path, newline="") as handle:
        return {int(row["selection_seed"]) for row in csv.DictReader(handle)}


def selection_scales(config: dict) -> list[float]:
    """The CFG-selection candidates (sampling.cfg_selection.scales; empty: no selection)."""
    return list(config["sampling"].get("cfg_selection", {}).get("scales", []))


def selection_points(config: dict) -> list[GridPoint]:
    """The held-out-seed points of the CFG selection: every (method, budget, step count) of the grid at the shared
    fine-tune (parity points included), at each candidate scale, on the selection seed."""
    if not selection_scales(config):
        return []
    seed = config["sampling"]["cfg_selection"]["seed"]
    return [GridPoint(*key, cfg, seed) for key in guidance_keys(config)
            for cfg in budget_cfgs(key[1], [cfg_label(s) for s in selection_scales(config)])]


def guidance_keys(config: dict) -> list[tuple[str, str, int, str]]:
    """(method, budget, steps, ft) of every grid point at the study's own fine-tuning compute, parity points
    included: what a guidance scale is chosen for."""
    return list(dict.fromkeys((p.method, p.budget, p.steps, p.ft) for p in grid_points(config)
                              if p.ft in (NO_FINETUNE, UNIT_FINETUNE)))


def num_samples(config: dict, seed: int) -> int:
    """Samples of a grid point: cfg_selection.num_samples on the selection seed, sampling.num_samples otherwise."""
    selection = config["sampling"].get("cfg_selection", {})
    if selection.get("scales") and int(seed) == selection["seed"]:
        return selection["num_samples"]
    return config["sampling"]["num_samples"]


def grid_points(config: dict, recorded: dict | None = None) -> list[GridPoint]:
    """Every grid point: budgets x step counts x guidance scales x seeds per method, each method's parity point
    (first step count, every scale, every seed), the plateau points and the fine-tune seed-noise points (first step
    count, the fixed scale, first seed). Given ``recorded`` (``read_recorded_scales``: sampling.cfg_recorded), each
    (method, budget, steps) is sampled at its recorded scale instead of the fixed one (``method_cfgs``), and plateau
    and seed-noise points at the scale of the study's own fine-tune there."""
    recorded = recorded or {}
    sampling = config["sampling"]
    seeds = sampling["seeds"]
    plateau = config.get("finetune", {}).get("plateau", {})
    noise = config.get("finetune", {}).get("seed_noise", {})
    points: list[GridPoint] = []
    for method, entry in config["methods"].items():
        ft = NO_FINETUNE if FINETUNE_MODES[method] == "none" else UNIT_FINETUNE
        steps = method_steps(config, method)
        for budget in entry["budgets"]:
            counts = [budget_steps(budget)] if method in STEP_BUDGET_METHODS else steps
            points += [GridPoint(method, budget, n, ft, cfg, seed) for n in counts
                       for cfg in budget_cfgs(budget, method_cfgs(config, entry, recorded.get((method, budget, n, ft))))
                       for seed in seeds]
        if entry.get("parity"):
            scales = method_cfgs(config, {}, recorded.get((method, entry["parity"], steps[0], ft)))
            points += [GridPoint(method, entry["parity"], steps[0], ft, cfg, seed) for cfg in scales for seed in seeds]
        budget = plateau.get("budgets", {}).get(method)
        if budget is not None and ft == UNIT_FINETUNE:
            n = budget_steps(budget) if method in STEP_BUDGET_METHODS else steps[0]
            cfg = cfg_label(recorded.get((method, budget, n, ft), sampling["cfg_scale"]))
            points += [GridPoint(method, budget, n, ft_label(m), cfg, seeds[0]) for m in plateau["multipliers"]
                       if ft_label(m) != UNIT_FINETUNE]
        budget = noise.get("budgets", {}).get(method)
        if budget is not None and ft == UNIT_FINETUNE:
            n = budget_steps(budget) if method in STEP_BUDGET_METHODS else steps[0]
            cfg = cfg_label(recorded.get((method, budget, n, ft), sampling["cfg_scale"]))
            points += [GridPoint(method, budget, n, ft_label(1.0, s), cfg, seeds[0]) for s in noise["seeds"]]
    return list(dict.fromkeys(points))


def method_steps(config: dict, method: str) -> list[int]:
    """The step counts a method that is not a step ladder samples: its own ``methods.<m>.steps`` (a method trained
    for one step count, as L2C's router), else sampling.steps."""
    return list(config["methods"][method].get("steps") or config["sampling"]["steps"])


def plateau_planned(config: dict) -> bool:
    """Whether the grid samples any plateau point (a fine-tune at another multiple of the shared compute)."""
    return any(parse_ft(p.ft)[1] is None and p.ft not in (NO_FINETUNE, UNIT_FINETUNE) for p in grid_points(config))


def argv(values: dict, keys: Iterable[str] | None = None) -> str:
    """Config values as command-line flags, the one serialiser of the workflow: key ``k`` becomes ``--k`` with
    underscores as dashes (config keys equal the commands' flag names), values shell-quoted; None and False are
    left out, True is a bare flag."""
    parts = []
    for key in keys if keys is not None else values:
        value = values[key]
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)
