"""FlexDiT's realised savings: latency per image at each token density and per sampling trajectory, vs static DiT.

Reports the measured speedup next to the MACs ratio (efficiency = speedup / MACs ratio; the goal is >= 0.8).
Random weights (speed does not depend on them). Speed only: tests never assert timings.
Usage: python benchmarks/flexdit_speed.py [--cases tiny dit-s-2-256] [--budgets 0.61-0.86 0.90-0.96] [--repeats N]
"""

from __future__ import annotations

import argparse

import ditpareto.compat  # noqa: F401
import torch

from ditpareto.diffusion import per_sample_randn, sample_generators, sample_loop
from ditpareto.methods import METHODS, ModelSpec, SamplingSettings
from ditpareto.models import build_dit
from ditpareto.spec.flexdit import flexdit_macs_per_call, stage_sides
from ditpareto.spec.dit import dit_macs_per_call
from ditpareto.timing import time_repeated

CASES = {
    # name: model, image size, in channels, classes, batch (images per network call)
    "tiny": ("dit-tiny-2", 16, 1, 10, 250),  # the default study (8x8 tokens, width 64)
    "dit-s-2-256": ("dit-s-2", 256, 4, 1000, 16),  # 16x16 tokens, width 384
    "dit-b-2-256": ("dit-b-2", 256, 4, 1000, 8),  # 16x16 tokens, width 768
}


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    return time_repeated(fn, repeats).median


@torch.no_grad()
def run_case(name: str, budgets: list[str], repeats: int, steps: int, cfg_scale: float) -> None:
    model_name, size, channels, classes, batch = CASES[name]
    spec = ModelSpec(model_name, size, channels, classes)
    method, dit = METHODS["flexdit"], METHODS["dit"]
    torch.manual_seed(0)
    base = build_dit(model_name, size, in_channels=channels, num_classes=classes).eval()
    flex = method.convert(base, {})
    c = base.config
    x = torch.randn(batch, channels, c.input_size, c.input_size)
    t, y = torch.full((batch,), 500), torch.randint(0, classes, (batch,))
    dit_macs = dit_macs_per_call(c)
    dit_s = timed(lambda: base(x, t, y), repeats) / batch
    print(f"\n== {name}: {model_name} {size}px, {c.grid_size}x{c.grid_size} tokens, width {c.hidden_size}, "
          f"layout {flex.layout.to_dict()}, batch {batch}, {torch.get_num_threads()} threads")
    print(f"{'per call':>16s} {'tokens':>6s} {'GMACs':>9s} {'ms/img':>8s} {'speedup':>8s} {'MACs ratio':>10s} "
          f"{'efficiency':>10s}")
    print(f"{'static DiT':>16s} {c.num_tokens:6d} {dit_macs / 1e9:9.4f} {1000 * dit_s:8.3f} "
          f"{1:8.2f} {1:10.2f} {1:10.2f}")
    parsed = [method.parse_budget(b) for b in budgets]
    for side in sorted({s for b in parsed for s in stage_sides(b, c.grid_size, flex.stages)}, reverse=True):
        macs = flexdit_macs_per_call(c, flex.layout, side)
        seconds = timed(lambda: flex(x, t, y, side=side), repeats) / batch
        speedup, ratio = dit_s / seconds, dit_macs / macs
        print(f"{f'FlexDiT s={side}':>16s} {side * side:6d} {macs / 1e9:9.4f} {1000 * seconds:8.3f} {speedup:8.2f} "
              f"{ratio:10.2f} {speedup / ratio:10.2f}")

    settings = SamplingSettings(steps=steps, cfg_scale=cfg_scale)
    generators = sample_generators(0, range(batch // 2 if cfg_scale != 1 else batch))
    noise = per_sample_randn(generators, (channels, c.input_size, c.input_size))
    labels = y[: len(noise)]

    def trajectory(plan):
        return lambda: sample_loop(plan.diffusion, lambda v, step, tt: plan.denoise(v, step, tt, labels), noise,
                                   generators, settings.sampler)

    dit_plan = dit.plan(base, str(steps), settings, spec)
    dit_traj = timed(trajectory(dit_plan), max(1, repeats // 2)) / len(noise)
    calls = steps * dit_plan.calls_per_step
    print(f"{'trajectory':>16s} {'sides':>12s} {'GMACs/img':>10s} {'ms/img':>8s} {'speedup':>8s} {'MACs ratio':>10s} "
          f"{'efficiency':>10s}   ({steps} {settings.sampler} steps, cfg {cfg_scale})")
    print(f"{'static DiT':>16s} {'-':>12s} {calls * dit_macs / 1e9:10.4f} {1000 * dit_traj:8.3f} {1:8.2f} "
          f"{1:10.2f} {1:10.2f}")
    for label in budgets:
        plan = method.plan(flex, label, settings, spec)
        per_stage = plan.details["gmacs_per_call_by_stage"]
        macs = plan.calls_per_step * sum(per_stage[plan.step_key(s)] for s in range(steps)) * 1e9
        seconds = timed(trajectory(plan), max(1, repeats // 2)) / len(noise)
        speedup, ratio = dit_traj / seconds, calls * dit_macs / macs
        sides = "/".join(map(str, plan.details["sparse_sides"]))
        print(f"{f'FlexDiT {label}':>16s} {sides:>12s} {macs / 1e9:10.4f} {1000 * seconds:8.3f} {speedup:8.2f} "
              f"{ratio:10.2f} {speedup / ratio:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["tiny", "dit-s-2-256"], choices=sorted(CASES))
    parser.add_argument("--budgets", nargs="+", default=["0.61-0.86", "0.90-0.96"], help="RMIN-RMAX budgets")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (default: 5)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the trajectory timing (default: 10)")
    parser.add_argument("--cfg-scale", type=float, default=2.0, help="guidance scale; 1 = off (default: 2.0)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; speedup = static DiT latency / FlexDiT latency; "
          "efficiency = speedup / MACs ratio (goal >= 0.8)")
    for name in args.cases:
        run_case(name, args.budgets, args.repeats, args.steps, args.cfg_scale)


if __name__ == "__main__":
    main()
