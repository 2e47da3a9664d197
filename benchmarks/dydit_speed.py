"""Latency per image of static DiT vs DyDiT (sliced inference) at each λ, next to the executed FLOPs reduction.

Two sources of DyDiT models:
  --study DIR   fine-tuned checkpoints of a finished study (DIR/results/checkpoints/dydit/budget~λ/finetuned.pt,
                base DIR/resources/pretrained/base.pt), with model, options, λ grid and sampler from --config;
  --synthetic   a converted random-weight model whose routers are set to switch off heads, MLP groups and tokens
                (block FLOPs ratio ~ λ), for shapes without a trained checkpoint (e.g. --model dit-s-2).
Times the whole sampler (DDIM steps with CFG) on one batch, after one warm-up batch. Goal: speedup >= 0.8 x the
executed FLOPs reduction. Usage:
  python benchmarks/dydit_speed.py --study /tmp/run --config config/config.yaml --batches 32 128
  python benchmarks/dydit_speed.py --synthetic --model dit-s-2 --image-size 128 --lambdas 0.3 0.5 0.7
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ditpareto.compat  # noqa: F401
import numpy as np
import torch
import yaml

from ditpareto.flops import count_macs
from ditpareto.methods import METHODS, ModelSpec, SamplingSettings
from ditpareto.models import build_dit, load_dit
from ditpareto.models.dydit import DyDiT
from ditpareto.spec.dydit import layer_flops
from ditpareto.sampling import generate
from ditpareto.timing import summarize


def set_synthetic_routers(model: DyDiT, lam: float, calibration: tuple, seed: int = 0) -> None:
    """Routers that keep a fraction a of heads, groups and tokens per layer, a*F_attn + a^2*F_mlp = λ (blocks)."""
    f_attn, f_mlp = layer_flops(model.config)
    fa, fm = f_attn / (f_attn + f_mlp), f_mlp / (f_attn + f_mlp)
    a = (-fa + (fa * fa + 4 * fm * lam) ** 0.5) / (2 * fm)
    g = torch.Generator().manual_seed(seed)
    x, t, y = calibration
    with torch.no_grad():
        for block in model.blocks:
            for router, units in ((block.head_router, model.config.num_heads), (block.group_router, model.num_groups)):
                if router is None:
                    continue
                keep = max(1, round(a * units)) - 1
                order = torch.randperm(units - 1, generator=g)
                router.weight.zero_()
                router.bias.fill_(-1.0)
                router.bias[order[:keep]] = 1.0
        for i, block in enumerate(model.blocks):  # token thresholds layer by layer, on the calibration batch
            logits = []
            hook = block.token_router.register_forward_hook(lambda m, inp, out: logits.append(out.flatten()))
            model.forward_masked(x, t, y, "hard")
            hook.remove()
            block.token_router[2].bias -= torch.quantile(logits[0], 1 - a)


def time_plans(plans: dict, spec, settings, batch: int, repeats: int, clock) -> dict:
    """Per plan: seconds per image (median of ``repeats`` batches, plans interleaved so that load drifts hit all
    alike, after a warm-up batch) and executed MACs per image."""
    times = {name: [] for name in plans}
    for r in range(repeats + 1):
        for name, plan in plans.items():
            start = clock()
            generate(plan, spec, settings, 0, np.arange(r * batch, (r + 1) * batch), batch, progress=False)
            if r:
                times[name].append((clock() - start) / batch)
    return {name: (summarize(times[name]).median, count_macs(lambda: generate(plan, spec, settings, 0, np.arange(batch), batch,
                                                                   progress=False)) / batch)
            for name, plan in plans.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, help="working directory of a finished study")
    p.add_argument("--config", type=Path, default=Path("config/config.yaml"), help="the study's config")
    p.add_argument("--synthetic", action="store_true", help="random weights with routers set per λ")
    p.add_argument("--model", default="dit-tiny-2", help="DiT architecture with --synthetic (default: dit-tiny-2)")
    p.add_argument("--image-size", type=int, default=16, help="image size with --synthetic (default: 16)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels with --synthetic (default: 1)")
    p.add_argument("--num-classes", type=int, default=10, help="classes with --synthetic (default: 10)")
    p.add_argument("--lambdas", nargs="+", default=None, help="λ labels (default: the config's dydit budgets)")
    p.add_argument("--batches", nargs="+", type=int, default=[32, 128], help="batch sizes (default: 32 128)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: config's)")
    p.add_argument("--repeats", type=int, default=3, help="timed batches; the fastest counts (default: 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time, or this process's CPU time (robust on a shared machine with --threads 1)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    method = METHODS["dydit"]
    config = yaml.safe_load(args.config.read_text())
    sampling = config["sampling"]
    settings = SamplingSettings(sampler=sampling["sampler"], steps=args.steps or sampling["steps"],
                                cfg_scale=sampling["cfg_scale"], guidance_channels=sampling["guidance_channels"])
    entry = config["methods"].get("dydit", {})
    lambdas = args.lambdas or entry.get("budgets") or ["0.30", "0.50", "0.70"]
    if args.synthetic:
        spec = ModelSpec(args.model, args.image_size, args.in_channels, args.num_classes)
        options = method.parse_options({k: v for k, v in entry.get("options", {}).items() if k == "mlp_groups"})
        torch.manual_seed(0)
        base = build_dit(spec.name, spec.image_size, **spec.overrides()).eval()
    else:
        base_cfg = config["base"]
        spec = ModelSpec(base_cfg["model"], config["dataset"]["image_size"], base_cfg["in_channels"],
                         base_cfg["num_classes"])
        options = method.parse_options(entry.get("options", {}))
        base = load_dit(args.study / "resources/pretrained/base.pt", spec.name, spec.image_size, **spec.overrides())
    base.eval().requires_grad_(False)
    side = base.config.input_size
    calibration = (torch.randn(8, spec.in_channels, side, side), torch.full((8,), 500),
                   torch.arange(8) % spec.num_classes)

    def dydit_plan(label):
        if args.synthetic:
            model = method.convert(base, options)
            set_synthetic_routers(model, float(label), calibration)
        else:
            ckpt = args.study / f"results/checkpoints/dydit/budget~{label}/finetuned.pt"
            model = method.load_model(ckpt, spec, options)
        return lambda: method.plan(model, label, settings, spec)

    clock = time.perf_counter if args.clock == "wall" else time.process_time
    static_plan = lambda: METHODS["dit"].plan(base, settings.steps, settings, spec)  # noqa: E731
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {spec.name} at {spec.image_size}px, "
          f"{settings.sampler} {settings.steps} steps, cfg {settings.cfg_scale}, {args.clock} clock, "
          f"{'synthetic routers' if args.synthetic else 'fine-tuned checkpoints'}")
    print(f"{'batch':>5s} {'model':>10s} {'ms/img':>8s} {'GMACs/img':>10s} {'FLOPs red.':>10s} {'speedup':>8s} "
          f"{'speedup/red.':>12s}")
    rows = []
    plans = {"static": static_plan(), **{label: dydit_plan(label)() for label in lambdas}}
    for batch in args.batches:
        measured = time_plans(plans, spec, settings, batch, args.repeats, clock)
        t_static, m_static = measured["static"]
        print(f"{batch:5d} {'static':>10s} {1000 * t_static:8.3f} {m_static / 1e9:10.4f}")
        for label in lambdas:
            t_dy, m_dy = measured[label]
            reduction, speedup = m_static / m_dy, t_static / t_dy
            print(f"{batch:5d} {'λ=' + label:>10s} {1000 * t_dy:8.3f} {m_dy / 1e9:10.4f} {reduction:10.3f} "
                  f"{speedup:8.3f} {speedup / reduction:12.3f}", flush=True)
            rows.append({"batch": batch, "lambda": label, "ms_per_image": 1000 * t_dy, "static_ms_per_image":
                         1000 * t_static, "flops_reduction": reduction, "speedup": speedup,
                         "efficiency": speedup / reduction})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
