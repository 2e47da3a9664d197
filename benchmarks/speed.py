"""Device-aware speed of every dynamic method against the static DiT at the same shapes, precision and batch.

Measures, with random weights (nothing is downloaded; speed does not depend on the weights):

* ``forward``: one guided network call (one sampling step with CFG: 2 x batch images through the network), per
  image. A method whose compute changes over the steps (FlexDiT's token density, FlexiDiT's patch size) is timed
  once per distinct kind of step at a step of that kind, and the row is their mean weighted by how many of the plan's
  ``--steps`` steps each kind takes: the mean step of the whole trajectory;
* ``trajectory``: the method's whole sampling plan (``--steps`` DDIM steps with CFG, the project's own sampler loop),
  per image.

Methods and budgets (the papers'): DyDiT λ 0.50 / 0.70 (random-weight routers set to switch off heads, MLP groups
and tokens so that the executed FLOPs ratio is about λ), FlexDiT pruning ranges 0.44-0.61 / 0.61-0.86, FlexiDiT
weak-step fractions 0.48 / 0.72, and FlexiDiT's weak call alone (forward only: patch 4 vs the static DiT's 2).

Per row: ms per image (median, min and max of the timed repeats after warm-up; for a forward row the same weighted
sum of the per-kind median, min and max), the executed FLOPs ratio to the static DiT (MACs counted with
``ditpareto.flops.count_macs`` while the method's plan runs on the device: executed ops, not a formula), the
realised speedup over the static DiT at the same precision and batch, and efficiency = speedup x FLOPs ratio
(1.0: the wall clock falls exactly as the FLOPs do). Timing uses ``ditpareto.timing.DeviceClock`` (CUDA events
and a synchronize on a GPU, perf_counter on a CPU); precisions go through ``ditpareto.runtime.precision_scope``
(fp32 = TF32 off, tf32, bf16 autocast). Repeats are interleaved over the methods, so that drifts in the machine's
load hit all alike. A method that fails at a precision or on the device gets a row with status ``failed`` and the
error's first line; the others go on.

Output: one CSV row per (mode, method, budget, precision, batch) with the device, torch version, compile and
CUDA-graph settings (``--out``), and a markdown table on stdout; progress lines go to stderr.

Time on an H200 (estimate): the default DiT-XL/2 256 px configuration (forward at batches 1 4 16 64 256 in fp32,
tf32 and bf16; trajectories of 25 steps at batch 64 in tf32 and bf16) takes about 3-4 minutes, most of it fp32 at
batch 256; fp32 trajectories at XL cost about a minute per repeat, hence ``--trajectory-precisions auto``.

Usage:
  # CPU, small shapes (about a minute on 2 cores)
  python benchmarks/speed.py --device cpu --model dit-s-2 --image-size 64 --batches 1 8 --steps 5 \\
      --precisions fp32 bf16 --out /tmp/speed-cpu.csv
  # GPU, the paper shapes (DiT-XL/2 at 256 px latents; the defaults)
  python benchmarks/speed.py --device cuda --out speed-h200.csv
  # GPU with torch.compile (about a minute of compiling per kind of call, batch and precision, in the warm-up;
  # --cuda-graphs = torch.compile's reduce-overhead mode)
  python benchmarks/speed.py --device cuda --compile --methods flexidit --batches 64 --precisions bf16 \
      --out speed-compiled.csv
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ditpareto.compat  # noqa: F401
import torch

from ditpareto.diffusion import sample_generators, sample_loop
from ditpareto.flops import count_macs
from ditpareto.methods import METHODS, ModelSpec, SamplingSettings
from ditpareto.models import DIT_ARCHS, build_dit
from ditpareto.runtime import describe, device_record, precision_scope, resolve_device
from ditpareto.study import PRECISIONS
from ditpareto.timing import DeviceClock, summarize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dydit_speed import set_synthetic_routers  # noqa: E402  (the one copy of the synthetic-router logic)

COLUMNS = [
    "mode", "method", "budget", "model", "image_size", "precision", "batch", "steps", "cfg_scale", "status",
    "ms_per_image_median", "ms_per_image_min", "ms_per_image_max", "repeats", "gmacs_per_image", "flops_ratio",
    "speedup", "efficiency", "call_kinds", "device", "device_name", "torch", "threads", "compile", "cuda_graphs",
    "error",
]
DYNAMIC = ("dydit", "flexdit", "flexidit")
WEAK_CALL = "weak call"


class BenchmarkError(Exception):
    """A setting this benchmark cannot run with (one clear message, exit status 2)."""


# ------------------------------------------------------------------------------------------------ what is timed
@dataclass(eq=False)
class Kind:
    """One kind of guided network call: a step of one plan whose compute equals that of the other steps with the
    same key. ``call(x, y)`` runs it on a batch (2 x batch images through the network with CFG)."""

    name: str
    call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    macs_per_image: float = math.nan
    count_error: str = ""  # the FLOPs count failed: every row using this kind fails


@dataclass(eq=False)
class Case:
    """A (method, budget): its forward decomposition into kinds (weights sum to 1) and its plan for trajectories."""

    method: str
    budget: str
    weights: dict  # Kind -> fraction of the steps
    plan: object = None  # SamplingPlan; None: forward only
    traj_macs_per_image: float = math.nan
    setup_error: str = ""
    forward_only: bool = False

    @property
    def name(self) -> str:
        return f"{self.method} {self.budget}"


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def compute_key(method: str, plan, step: int):
    """Steps with equal keys run identical compute (at a given batch). FlexDiT's stages are keyed by their sparse
    side (two stages may share one); DyDiT by its active heads and MLP groups at the step (its routers are
    timestep-wise; token routing is data-dependent and is what it is on the inputs)."""
    if method == "flexdit":
        return ("side", plan.details["sparse_sides"][plan.step_key(step)])
    if method == "dydit":
        heads = plan.details["heads_active_per_step"].split()
        groups = plan.details["groups_active_per_step"].split()
        return ("width", int(heads[step]), int(groups[step]))
    if method == "flexidit":
        return ("patch", plan.step_key(step))
    return ("dense",)


def kind_label(method: str, key) -> str:
    if key[0] == "side":
        return f"s={key[1]}"
    if key[0] == "width":
        return f"heads {key[1]} groups {key[2]}"
    if key[0] == "patch":
        p = key[1]
        return f"p{p[0]}/{p[1]}" if isinstance(p, tuple) and p[0] != p[1] else f"p{p[0] if isinstance(p, tuple) else p}"
    return "dense"


class Bench:
    """Models, plans, kinds and cases of one run, all on ``device``."""

    def __init__(self, args, device: torch.device):
        self.args, self.device = args, device
        self.spec = ModelSpec(args.model, args.image_size, args.in_channels, args.num_classes)
        self.settings = SamplingSettings(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale)
        self.kinds: dict = {}  # (id(model), key) -> Kind
        self.cases: list[Case] = []
        self.models: list = []  # keeps the models alive (kind keys hold their ids)
        self.compiled = False  # the switch of the compiled forwards (off while FLOPs are counted)
        self.compile_mode = args.compile_mode if args.compile else None

    # ---------------------------------------------------------------------------------------------- models
    def _compile(self, model, attribute: str) -> None:
        """Route ``model.<attribute>`` through torch.compile while ``self.compiled`` is on (eager otherwise:
        the FLOPs counter runs the eager code). Done before the plan is built, because plans bind the method."""
        if not self.compile_mode:
            return
        eager = getattr(model, attribute)
        compiled = torch.compile(eager, mode=self.compile_mode, dynamic=False)

        def switch(*a, **k):
            return (compiled if self.compiled else eager)(*a, **k)

        setattr(model, attribute, switch)

    def _plan(self, method: str, model, budget: str):
        return METHODS[method].plan(model, budget, self.settings, self.spec)

    def _add_case(self, method: str, model, budget: str, plan, trajectory: bool = True, prefix: str = "") -> None:
        steps = plan.num_steps
        counts: dict = {}
        for step in range(steps):
            key = compute_key(method, plan, step)
            if key not in counts:
                counts[key] = [step, 0]
            counts[key][1] += 1
        weights = {}
        for key, (step, count) in counts.items():
            ident = (id(model), key)
            if ident not in self.kinds:
                self.kinds[ident] = Kind(f"{method}{prefix} {kind_label(method, key)}", self._kind_call(plan, step))
            weights[self.kinds[ident]] = count / steps
        self.cases.append(Case(method, budget, weights, plan if trajectory else None, forward_only=not trajectory))

    def _kind_call(self, plan, step: int):
        model_t = int(plan.diffusion.timestep_map[plan.num_steps - 1 - step])
        ts: dict = {}

        def call(x, y):
            if len(x) not in ts:
                ts[len(x)] = torch.full((len(x),), model_t, dtype=torch.long, device=x.device)
            return plan.denoise(x, step, ts[len(x)], y)

        return call

    def build(self) -> None:
        a, spec, device = self.args, self.spec, self.device
        torch.manual_seed(a.seed)
        base = build_dit(spec.name, spec.image_size, **spec.overrides()).eval().requires_grad_(False)
        side = base.config.input_size
        converted = []
        for method in a.methods:  # converted on the CPU (routers' CPU generators), then moved
            m = METHODS[method]
            options = m.parse_options({})
            try:
                if method == "dydit":
                    for lam in a.dydit_budgets:
                        converted.append((method, [lam], m.convert(base, options)))
                elif method == "flexdit":
                    converted.append((method, a.flexdit_budgets, m.convert(base, options)))
                else:
                    converted.append((method, a.flexidit_budgets + [WEAK_CALL], m.convert(base, options)))
            except Exception as exc:  # noqa: BLE001 - one row per budget says why
                budgets = {"dydit": a.dydit_budgets, "flexdit": a.flexdit_budgets,
                           "flexidit": a.flexidit_budgets + [WEAK_CALL]}[method]
                for budget in budgets:
                    self.cases.append(Case(method, budget, {}, setup_error=f"convert: {first_line(exc)}",
                                           forward_only=budget == WEAK_CALL))
        base = base.to(device)
        self.models.append(base)
        self._compile(base, "forward")
        self._add_case("dit", base, "full", self._plan("dit", base, str(a.steps)))
        gen = torch.Generator().manual_seed(a.seed + 1)
        calibration = (torch.randn(8, spec.in_channels, side, side, generator=gen).to(device),
                       torch.full((8,), 500, device=device), (torch.arange(8) % spec.num_classes).to(device))
        for method, budgets, model in converted:
            model = model.to(device).eval().requires_grad_(False)
            self.models.append(model)
            try:
                if method == "dydit":
                    set_synthetic_routers(model, float(budgets[0]), calibration, seed=a.seed)
                self._compile(model, "forward_sliced" if method == "dydit" else "forward")
            except Exception as exc:  # noqa: BLE001
                for budget in budgets:
                    self.cases.append(Case(method, budget, {}, setup_error=f"setup: {first_line(exc)}",
                                           forward_only=budget == WEAK_CALL))
                continue
            for budget in budgets:
                try:
                    if budget == WEAK_CALL:  # every step weak: its one kind is the weak call alone
                        self._add_case(method, model, f"{WEAK_CALL} (p{model.weak_patch_size} vs "
                                       f"p{model.patch_size})", self._plan(method, model, "1.00"), trajectory=False)
                    else:
                        prefix = f" λ{budget}" if method == "dydit" else ""
                        self._add_case(method, model, budget, self._plan(method, model, budget), prefix=prefix)
                except Exception as exc:  # noqa: BLE001
                    self.cases.append(Case(method, budget, {}, setup_error=f"plan: {first_line(exc)}",
                                           forward_only=budget == WEAK_CALL))

    # ---------------------------------------------------------------------------------------------- inputs
    def inputs(self, batch: int, seed: int):
        side = self.models[0].config.input_size
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, self.spec.in_channels, side, side, generator=gen)
        y = torch.randint(0, self.spec.num_classes, (batch,), generator=gen)
        return x.to(self.device), y.to(self.device)

    def trajectory(self, plan, noise: torch.Tensor, y: torch.Tensor, generators) -> torch.Tensor:
        return sample_loop(plan.diffusion, lambda v, step, t: plan.denoise(v, step, t, y), noise, generators,
                           self.settings.sampler, self.settings.eta)

    def generators(self, batch: int):
        return sample_generators(0, range(batch)) if self.settings.sampler == "ddpm" else []

    # ---------------------------------------------------------------------------------------------- FLOPs
    @torch.no_grad()
    def count_flops(self) -> None:
        """Executed MACs per image of every kind (one guided call) and, when trajectories are timed, every plan
        (whole trajectory), counted on ``--flops-images`` images in fp32 with the eager model."""
        n = self.args.flops_images
        x, y = self.inputs(n, seed=self.args.seed + 2)
        with precision_scope("fp32", self.device):
            for kind in self.kinds.values():
                try:
                    kind.macs_per_image = count_macs(lambda: kind.call(x, y)) / n
                except Exception as exc:  # noqa: BLE001
                    kind.count_error = f"FLOPs count: {first_line(exc)}"
            for case in self.cases if "trajectory" in self.args.modes else []:
                if case.plan is not None and not case.setup_error:
                    try:
                        case.traj_macs_per_image = count_macs(
                            lambda: self.trajectory(case.plan, x, y, self.generators(n))) / n
                    except Exception as exc:  # noqa: BLE001
                        case.setup_error = f"FLOPs count: {first_line(exc)}"


# ------------------------------------------------------------------------------------------------ timing
@contextlib.contextmanager
def deadline(seconds: float | None, what: str):
    """Interrupt the block after ``seconds`` and end the run with one BenchmarkError (an interrupted compile leaves
    torch.compile's workers unusable). Main thread on POSIX only; elsewhere no limit."""
    usable = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return
    expired = []

    def expire(signum, frame):
        expired.append(True)
        raise TimeoutError(f"{what} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except BaseException:
        if not expired:
            raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expired:
        raise BenchmarkError(f"{what} did not finish within --compile-timeout {seconds:g} s: torch.compile is too "
                             "slow or hangs here; run without --compile (or raise --compile-timeout)")


def timed_rounds(items: list, run: Callable, warm: Callable, clock: DeviceClock, args, bench: Bench) -> dict:
    """Per item: warm-up (``warm(item)``, under the compile deadline), then timed ``run(item)`` calls interleaved
    over the items, at least --min-repeats and at most --repeats rounds, stopping early once the timed rounds
    took --max-seconds. Returns item -> list of seconds, or item -> error line."""
    results: dict = {}
    alive = []
    limit = args.compile_timeout if bench.compile_mode else None
    for item in items:
        try:
            with deadline(limit, f"torch.compile ({bench.compile_mode}) warm-up of {item.name}"):
                for _ in range(args.warmup):
                    warm(item)
            clock_sync(bench.device)
            alive.append(item)
            results[item] = []
        except BenchmarkError:
            raise
        except Exception as exc:  # noqa: BLE001 - the row says why
            results[item] = first_line(exc)
    spent = 0.0
    for r in range(args.repeats):
        for item in list(alive):
            try:
                with clock.measure() as elapsed:
                    run(item)
                seconds = elapsed()
            except Exception as exc:  # noqa: BLE001
                results[item] = first_line(exc)
                alive.remove(item)
                if bench.device.type == "cuda":
                    torch.cuda.empty_cache()  # e.g. after an out-of-memory error
                continue
            results[item].append(seconds)
            spent += seconds
        if r + 1 >= args.min_repeats and spent >= args.max_seconds:
            break
    return results


def clock_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_forward(bench: Bench, precision: str, batch: int, clock: DeviceClock) -> dict:
    """Kind -> Timing (seconds per image of one guided call) or error line, at one precision and batch."""
    x, y = bench.inputs(batch, seed=bench.args.seed + 3)
    kinds = sorted({k for c in bench.cases if not c.setup_error for k in c.weights}, key=lambda k: k.name)
    kinds = [k for k in kinds if not k.count_error]

    def run(kind):
        kind.call(x, y)

    with torch.no_grad(), precision_scope(precision, bench.device):
        results = timed_rounds(kinds, run, run, clock, bench.args, bench)
    return {k: (summarize([s / batch for s in v]) if isinstance(v, list) and v else (v or "no timing"))
            for k, v in results.items()}


def measure_trajectory(bench: Bench, precision: str, batch: int, clock: DeviceClock) -> dict:
    """Case -> Timing (seconds per image of the whole plan) or error line. Warm-up: each of the case's kinds of
    step, --warmup times at this batch: every shape and kernel the trajectory's network calls run."""
    noise, y = bench.inputs(batch, seed=bench.args.seed + 4)
    cases = [c for c in bench.cases if c.plan is not None and not c.setup_error]

    def run(case):
        bench.trajectory(case.plan, noise, y, bench.generators(batch))

    def warm(case):
        for kind in case.weights:
            kind.call(noise, y)

    with torch.no_grad(), precision_scope(precision, bench.device):
        results = timed_rounds(cases, run, warm, clock, bench.args, bench)
    return {c: (summarize([s / batch for s in v]) if isinstance(v, list) and v else (v or "no timing"))
            for c, v in results.items()}


# ------------------------------------------------------------------------------------------------ rows
def row_base(bench: Bench, mode: str, case: Case, precision: str, batch: int, env: dict) -> dict:
    a = bench.args
    return {"mode": mode, "method": case.method, "budget": case.budget, "model": a.model, "image_size": a.image_size,
            "precision": precision, "batch": batch, "steps": a.steps, "cfg_scale": a.cfg_scale, **env,
            "call_kinds": " + ".join(f"{w:.2f} x {k.name}" for k, w in case.weights.items())}


def forward_rows(bench: Bench, precision: str, batch: int, timings: dict, env: dict) -> list[dict]:
    rows = []
    for case in bench.cases:
        row = row_base(bench, "forward", case, precision, batch, env)
        errors = [case.setup_error] if case.setup_error else []
        errors += [k.count_error for k in case.weights if k.count_error]
        errors += [timings[k] for k in case.weights if isinstance(timings.get(k), str)]
        if errors:
            rows.append({**row, "status": "failed", "error": errors[0]})
            continue
        med = sum(w * timings[k].median for k, w in case.weights.items())
        lo = sum(w * timings[k].min for k, w in case.weights.items())
        hi = sum(w * timings[k].max for k, w in case.weights.items())
        macs = sum(w * k.macs_per_image for k, w in case.weights.items())
        row.update(status="ok", ms_per_image_median=1e3 * med, ms_per_image_min=1e3 * lo, ms_per_image_max=1e3 * hi,
                   repeats=min(timings[k].count for k in case.weights), gmacs_per_image=macs / 1e9)
        rows.append(row)
    return finish(rows)


def trajectory_rows(bench: Bench, precision: str, batch: int, timings: dict, env: dict) -> list[dict]:
    rows = []
    for case in bench.cases:
        if case.forward_only:
            continue  # the weak call alone
        row = row_base(bench, "trajectory", case, precision, batch, env)
        result = timings.get(case, case.setup_error or "not run")
        if isinstance(result, str):
            rows.append({**row, "status": "failed", "error": result})
            continue
        row.update(status="ok", ms_per_image_median=1e3 * result.median, ms_per_image_min=1e3 * result.min,
                   ms_per_image_max=1e3 * result.max, repeats=result.count,
                   gmacs_per_image=case.traj_macs_per_image / 1e9)
        rows.append(row)
    return finish(rows)


def finish(rows: list[dict]) -> list[dict]:
    """FLOPs ratio, speedup and efficiency against the static DiT's row of the same mode, precision and batch."""
    ref = next((r for r in rows if r["method"] == "dit" and r["status"] == "ok"), None)
    for row in rows:
        if row["status"] != "ok":
            continue
        if ref is None:
            row["error"] = "no static DiT timing to compare with"
            continue
        ratio = row["gmacs_per_image"] / ref["gmacs_per_image"]
        speedup = ref["ms_per_image_median"] / row["ms_per_image_median"]
        row.update(flops_ratio=ratio, speedup=speedup, efficiency=speedup * ratio)
    return rows


def fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def fmt_ms(value) -> str:
    """Three significant digits, without an exponent for long times."""
    return fmt(value, ".0f" if isinstance(value, (int, float)) and value >= 100 else ".3g")


def markdown(rows: list[dict]) -> str:
    out = ["| mode | method | budget | precision | batch | ms/img median (min-max) | FLOPs ratio | speedup | "
           "efficiency |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["status"] == "ok":
            ms = f"{fmt_ms(r['ms_per_image_median'])} ({fmt_ms(r['ms_per_image_min'])}-{fmt_ms(r['ms_per_image_max'])})"
            rest = [fmt(r.get("flops_ratio"), ".3f"), f"{fmt(r.get('speedup'), '.2f')}x",
                    fmt(r.get("efficiency"), ".2f")]
        else:
            ms, rest = f"failed: {r['error'].replace('|', '/')}", ["-", "-", "-"]
        out.append(f"| {r['mode']} | {r['method']} | {r['budget']} | {r['precision']} | {r['batch']} | {ms} | "
                   + " | ".join(rest) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ CLI
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("shapes")
    g.add_argument("--model", default="dit-xl-2", choices=sorted(DIT_ARCHS),
                   help="DiT architecture (default: dit-xl-2)")
    g.add_argument("--image-size", type=int, default=256, help="image size in pixels; latent = size/8 with 4 input "
                   "channels (default: 256)")
    g.add_argument("--in-channels", type=int, default=4, help="input channels, 4 = SD-VAE latents (default: 4)")
    g.add_argument("--num-classes", type=int, default=1000, help="classes (default: 1000)")
    g = p.add_argument_group("methods")
    g.add_argument("--methods", nargs="+", default=list(DYNAMIC), choices=DYNAMIC,
                   help="dynamic methods to time; the static DiT always runs as the reference (default: all)")
    g.add_argument("--dydit-budgets", nargs="+", default=["0.50", "0.70"], help="DyDiT λ (default: 0.50 0.70)")
    g.add_argument("--flexdit-budgets", nargs="+", default=["0.44-0.61", "0.61-0.86"],
                   help="FlexDiT pruning-rate ranges RMIN-RMAX (default: 0.44-0.61 0.61-0.86)")
    g.add_argument("--flexidit-budgets", nargs="+", default=["0.48", "0.72"],
                   help="FlexiDiT weak-step fractions; the weak call alone is always added (default: 0.48 0.72)")
    g = p.add_argument_group("what is timed")
    g.add_argument("--modes", nargs="+", default=["forward", "trajectory"], choices=["forward", "trajectory"],
                   help="forward: one guided call (mean step); trajectory: the whole plan (default: both)")
    g.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16, 64, 256],
                   help="images per forward batch (a guided call runs 2x as many) (default: 1 4 16 64 256)")
    g.add_argument("--trajectory-batches", nargs="+", type=int, default=None,
                   help="images per trajectory batch (default: the largest --batches value <= 64, else the smallest)")
    g.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="precisions of the forward rows (default: fp32 tf32 bf16)")
    g.add_argument("--trajectory-precisions", nargs="+", default=["auto"], choices=["auto", *PRECISIONS],
                   help="precisions of the trajectory rows; auto = --precisions, on a GPU without fp32 (TF32 off) when "
                        "another precision is left: fp32 XL trajectories take minutes (default: auto)")
    g.add_argument("--steps", type=int, default=25, help="sampling steps of the plans (default: 25)")
    g.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"], help="sampler (default: ddim)")
    g.add_argument("--cfg-scale", type=float, default=1.5, help="classifier-free guidance scale; 1 = unguided "
                   "(default: 1.5)")
    g = p.add_argument_group("measurement")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]; cuda without a GPU is an error "
                   "(default: auto)")
    g.add_argument("--warmup", type=int, default=1,
                   help="untimed calls of each kind of call before the timed rounds; a trajectory warms up on each "
                        "kind of step of its plan (at least 3 with --compile-mode reduce-overhead) (default: 1)")
    g.add_argument("--repeats", type=int, default=5, help="most timed rounds per measurement (default: 5)")
    g.add_argument("--min-repeats", type=int, default=2, help="fewest timed rounds (default: 2)")
    g.add_argument("--max-seconds", type=float, default=10.0,
                   help="no new round once a measurement's timed rounds took this long (default: 10)")
    g.add_argument("--flops-images", type=int, default=4, help="images the MACs are counted on (default: 4)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs (default: 0)")
    g = p.add_argument_group("compilation")
    g.add_argument("--compile", action="store_true", help="torch.compile each model's forward (DyDiT: forward_sliced) "
                   "with static shapes; compile time is spent in the warm-up, not timed")
    g.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile mode; reduce-overhead adds CUDA graphs on a GPU (default: default)")
    g.add_argument("--cuda-graphs", action="store_true",
                   help="CUDA graphs, through torch.compile's reduce-overhead mode (implies --compile; GPU only)")
    g.add_argument("--compile-timeout", type=float, default=900.0,
                   help="seconds one compiled warm-up may take; beyond, the run stops with an error (default: 900)")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=Path("results/benchmarks/speed.csv"),
                   help="CSV of every row (default: results/benchmarks/speed.csv, git-ignored)")
    args = p.parse_args(argv)
    if args.cuda_graphs:
        if args.compile and args.compile_mode != "reduce-overhead":
            p.error(f"--cuda-graphs means --compile-mode reduce-overhead, not {args.compile_mode}")
        args.compile, args.compile_mode = True, "reduce-overhead"
    for name in ("batches", "trajectory_batches"):
        if any(b < 1 for b in getattr(args, name) or []):
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.steps < 1 or args.repeats < 1 or not 1 <= args.min_repeats <= args.repeats or args.warmup < 0 \
            or args.flops_images < 1:
        p.error("need --steps >= 1, 1 <= --min-repeats <= --repeats, --warmup >= 0 and --flops-images >= 1")
    return args


def environment(args, device: torch.device) -> dict:
    record = device_record(device)
    if device.type == "cuda":
        name = record["gpu"]
    else:
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "") if Path("/proc/cpuinfo").exists() else ""
        name = name or "cpu"
    return {"device": record["device"], "device_name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "compile": args.compile_mode if args.compile else "none",
            "cuda_graphs": "yes (torch.compile reduce-overhead)" if args.compile and args.compile_mode ==
            "reduce-overhead" and device.type == "cuda" else "no"}


def check_compile(args, device: torch.device) -> None:
    if not args.compile:
        return
    if args.cuda_graphs and device.type != "cuda":
        raise BenchmarkError(f"--cuda-graphs needs a CUDA device, but the device is {device}")
    if device.type == "cpu":
        print(f"warning: --compile on a CPU: each kind of call compiles for minutes at large shapes (inductor C++); "
              f"a warm-up that takes over --compile-timeout {args.compile_timeout:g} s ends the run",
              file=sys.stderr)
    try:
        import torch._dynamo

        for key in ("recompile_limit", "cache_size_limit"):  # one graph per kind x batch x precision
            if hasattr(torch._dynamo.config, key):
                setattr(torch._dynamo.config, key, 1024)
        for key in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
            if hasattr(torch._dynamo.config, key):
                setattr(torch._dynamo.config, key, 4096)
    except Exception as exc:  # noqa: BLE001
        raise BenchmarkError(f"--compile: torch.compile is unavailable in torch {torch.__version__} "
                             f"({first_line(exc)})") from None
    if args.compile_mode == "reduce-overhead":
        args.warmup = max(args.warmup, 3)  # cudagraph trees: warm-up run, record, then replays


def run(args: argparse.Namespace) -> list[dict]:
    """The whole benchmark; returns the rows (also written to --out and printed as markdown)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except Exception as exc:  # noqa: BLE001 - InputError: one clear message
        raise BenchmarkError(str(exc)) from None
    check_compile(args, device)
    traj_precisions = args.trajectory_precisions
    if "auto" in traj_precisions:
        traj_precisions = list(args.precisions)
        if device.type == "cuda" and len(traj_precisions) > 1:
            traj_precisions = [p for p in traj_precisions if p != "fp32"]
    traj_batches = args.trajectory_batches or [max([b for b in args.batches if b <= 64] or [min(args.batches)])]
    env = environment(args, device)
    start = time.perf_counter()
    bench = Bench(args, device)
    print(f"building {args.model} at {args.image_size}px and {len(args.methods)} dynamic method(s) on "
          f"{describe(device)} ...", file=sys.stderr, flush=True)
    bench.build()
    bench.count_flops()
    bench.compiled = bool(args.compile)  # from here on the compiled forwards run (compiled in the warm-ups)
    clock = DeviceClock(device)
    print(f"setup and FLOPs counts: {time.perf_counter() - start:.1f} s; {len(bench.kinds)} kinds of call, "
          f"{len(bench.cases)} cases", file=sys.stderr, flush=True)
    rows: list[dict] = []
    if "forward" in args.modes:
        for precision in args.precisions:
            for batch in args.batches:
                t0 = time.perf_counter()
                timings = measure_forward(bench, precision, batch, clock)
                new = forward_rows(bench, precision, batch, timings, env)
                rows += new
                progress("forward", precision, batch, new, time.perf_counter() - t0)
    if "trajectory" in args.modes:
        for precision in traj_precisions:
            for batch in traj_batches:
                t0 = time.perf_counter()
                timings = measure_trajectory(bench, precision, batch, clock)
                new = trajectory_rows(bench, precision, batch, timings, env)
                rows += new
                progress("trajectory", precision, batch, new, time.perf_counter() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
    elapsed = time.perf_counter() - start
    graphs = env["cuda_graphs"]
    print(f"{datetime.date.today().isoformat()}: {args.model} at {args.image_size}px ({args.in_channels} channels, "
          f"{args.num_classes} classes, random weights), {args.sampler} {args.steps} steps, CFG {args.cfg_scale}; "
          f"device {describe(device)} ({env['device_name']}), torch {torch.__version__}, {env['threads']} threads, "
          f"torch.compile: {env['compile']}, CUDA graphs: {graphs}; total {elapsed:.0f} s. Forward = one guided call "
          f"(the plan's mean step), trajectory = the whole plan; ms per image; efficiency = speedup x FLOPs ratio.\n")
    print(markdown(rows))
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        print(f"\n{len(failed)} row(s) failed; see the error column of {args.out}", file=sys.stderr)
    return rows


def progress(mode: str, precision: str, batch: int, rows: list[dict], seconds: float) -> None:
    parts = []
    for r in rows:
        if r["status"] == "ok" and r["method"] != "dit":
            parts.append(f"{r['method']} {r['budget']} {fmt(r.get('speedup'), '.2f')}x")
        elif r["status"] != "ok":
            parts.append(f"{r['method']} {r['budget']} FAILED")
    static = next((r for r in rows if r["method"] == "dit" and r["status"] == "ok"), None)
    ref = f"static {fmt_ms(static['ms_per_image_median'])} ms/img" if static else "static FAILED"
    print(f"[{mode} {precision} batch {batch}] {seconds:.1f} s: {ref}; " + ", ".join(parts), file=sys.stderr,
          flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
