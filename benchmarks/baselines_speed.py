"""The baselines' realised savings (issue 27): whole guided sampling trajectories of ToMe, FORA, Learning-to-Cache
and DPM-Solver++(2M) against the static DiT's DDIM trajectory at the same step count.

Reports per image the executed MACs (counted on the same trajectory with ``ditpareto.sampling.counted_macs``), the
MACs ratio to the static DiT, the measured speedup and efficiency = speedup x MACs ratio (1.00: the wall clock falls
as the MACs do; the goal is >= 0.8). Random weights (speed does not depend on them); L2C with a random router
(its schedule depends only on the ranking of the logits). Speed only: tests never assert timings.
Usage: python benchmarks/baselines_speed.py [--cases tiny dit-s-2-256] [--steps 10] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse

import ditpareto.compat  # noqa: F401
import torch

from ditpareto.diffusion import per_sample_randn, sample_generators, sample_loop
from ditpareto.methods import METHODS, ModelSpec, SamplingSettings
from ditpareto.models import build_dit
from ditpareto.runtime import resolve_device
from ditpareto.sampling import counted_macs
from ditpareto.timing import time_repeated

CASES = {
    # name: model, image size, in channels, classes, images per trajectory (CFG doubles the network batch)
    "tiny": ("dit-tiny-2", 16, 1, 10, 125),  # the default study (8x8 tokens, width 64)
    "dit-s-2-256": ("dit-s-2", 256, 4, 1000, 8),  # 16x16 tokens, width 384
    "dit-xl-2-256": ("dit-xl-2", 256, 4, 1000, 8),  # the paper model (a GPU)
}
# (method, budget, label): the budgets of the default study and the paper configs
POINTS = [("dit", None, "static DiT, DDIM"), ("dit", "+dpmpp-2m", "DPM-Solver++(2M)"),
          ("tome", "0.25", "ToMe 0.25"), ("tome", "0.50", "ToMe 0.50"), ("tome", "0.75", "ToMe 0.75"),
          ("fora", "2", "FORA n=2"), ("fora", "3", "FORA n=3"), ("fora", "5", "FORA n=5"),
          ("l2c", "0.50", "L2C 0.50"), ("l2c", "0.00", "L2C 0.00")]


def model_for(method: str, base, steps: int):
    if method != "l2c":
        return METHODS[method].convert(base, {})
    model = METHODS["l2c"].convert(base, {"sampler_steps": steps})
    with torch.no_grad():
        model.router.logits.normal_(generator=torch.Generator().manual_seed(0))
    return model


@torch.no_grad()
def run_case(name: str, steps: int, repeats: int, cfg_scale: float, device: torch.device) -> None:
    model_name, size, channels, classes, images = CASES[name]
    spec = ModelSpec(model_name, size, channels, classes)
    torch.manual_seed(0)
    base = build_dit(model_name, size, in_channels=channels, num_classes=classes).eval().to(device)
    c = base.config
    generators = sample_generators(0, range(images))
    noise = per_sample_randn(generators, (channels, c.input_size, c.input_size)).to(device)
    y = torch.randint(0, classes, (images,)).to(device)
    print(f"\n== {name}: {model_name} {size}px, {c.num_tokens} tokens, width {c.hidden_size}, {images} images per "
          f"trajectory, {steps} steps, CFG {cfg_scale:g}, {device}, {torch.get_num_threads()} threads")
    print(f"{'trajectory':>18s} {'GMACs/img':>10s} {'ms/img':>9s} {'MACs ratio':>10s} {'speedup':>8s} "
          f"{'efficiency':>10s}")
    static_ms = static_macs = None
    for method, budget, label in POINTS:
        sampler = "dpmpp-2m" if budget == "+dpmpp-2m" else "ddim"
        settings = SamplingSettings(sampler=sampler, steps=steps, cfg_scale=cfg_scale, guidance_channels="all")
        model = model_for(method, base, steps).to(device)
        plan_budget = str(steps) if method == "dit" else budget
        plan = METHODS[method].plan(model, plan_budget, settings, spec, {"sampler_steps": steps}
                                    if method == "l2c" else None)
        macs = counted_macs(plan, (channels, c.input_size, c.input_size))["macs_per_image"]

        def trajectory():
            sample_loop(plan.diffusion, lambda x, step, t: plan.denoise(x, step, t, y), noise, generators,
                        settings.sampler)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        ms = 1000 * time_repeated(trajectory, repeats).median / images
        if static_ms is None:
            static_ms, static_macs = ms, macs
        ratio, speedup = macs / static_macs, static_ms / ms
        print(f"{label:>18s} {macs / 1e9:10.4f} {ms:9.3f} {ratio:10.3f} {speedup:8.2f} {speedup * ratio:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["tiny", "dit-s-2-256"], choices=sorted(CASES),
                        help="model shapes (default: tiny dit-s-2-256)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of every trajectory (default: 10)")
    parser.add_argument("--cfg-scale", type=float, default=1.5, help="guidance scale (default: 1.5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (default: 3)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda or auto (default: cpu)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    for name in args.cases:
        run_case(name, args.steps, args.repeats, args.cfg_scale, device)


if __name__ == "__main__":
    main()
