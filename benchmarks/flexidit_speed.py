"""FlexiDiT: latency of one network call per patch size vs its FLOPs, i.e. whether weak calls really save time.

For the tiny and dit-s-2 configurations: executed GMACs per call, median latency per call (batch 64, no grad),
the FLOPs speedup (base MACs / weak MACs), the realised speedup (base latency / weak latency) and their ratio
(goal: >= 0.8). The static DiT's own latency is listed to show the FlexiDiT overhead at the base patch size.
Speed only (tests never assert timings). Usage: python benchmarks/flexidit_speed.py [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import argparse

import ditpareto.compat  # noqa: F401
import torch

from ditpareto.flops import count_macs
from ditpareto.methods import METHODS
from ditpareto.models import build_dit
from ditpareto.timing import time_repeated

CASES = [
    # name, model, image size, in channels, classes
    ("tiny (digits 16px)", "dit-tiny-2", 16, 1, 10),
    ("dit-s-2 (256px latents)", "dit-s-2", 256, 4, 1000),
]


def median_seconds(fn, repeats: int) -> float:
    return time_repeated(fn, repeats).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="images per call (default: 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (default: 5)")
    parser.add_argument("--variant", default="shared", choices=["shared", "lora"], help="FlexiDiT variant")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (variant lora; default: 8)")
    args = parser.parse_args()
    method = METHODS["flexidit"]
    options = method.parse_options({"variant": args.variant, "lora_rank": args.lora_rank})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, variant {args.variant}")
    header = (f"{'config':26s} {'patch':>5s} {'tokens':>6s} {'GMACs/call':>11s} {'ms/call':>9s} {'img/s':>8s}")
    print(header)
    for label, name, size, channels, classes in CASES:
        torch.manual_seed(0)
        base = build_dit(name, size, in_channels=channels, num_classes=classes).eval()
        model = method.convert(base, options)
        model.prepare()
        side = base.config.input_size
        x = torch.randn(args.batch, channels, side, side)
        t = torch.randint(0, 1000, (args.batch,))
        y = torch.randint(0, classes, (args.batch,))
        rows = {}
        with torch.inference_mode():
            static_s = median_seconds(lambda: base(x, t, y), args.repeats)
            for p in (model.patch_size, model.weak_patch_size):
                macs = count_macs(lambda: model(x[:1], t[:1], y[:1], patch_size=p))
                seconds = median_seconds(lambda: model(x, t, y, patch_size=p), args.repeats)
                rows[p] = (macs, seconds)
                print(f"{label:26s} {p:5d} {(side // p) ** 2:6d} {macs / 1e9:11.4f} {1000 * seconds:9.2f} "
                      f"{args.batch / seconds:8.1f}")
        (base_macs, base_s), (weak_macs, weak_s) = rows[model.patch_size], rows[model.weak_patch_size]
        flops_speedup, realised = base_macs / weak_macs, base_s / weak_s
        verdict = "met" if realised >= 0.8 * flops_speedup else "NOT met"
        print(f"{'':26s} static DiT {1000 * static_s:.2f} ms/call; FLOPs ratio weak/base {weak_macs / base_macs:.4f} "
              f"-> FLOPs speedup {flops_speedup:.2f}x, realised {realised:.2f}x, realised/FLOPs "
              f"{realised / flops_speedup:.2f} (goal >= 0.8: {verdict})")


if __name__ == "__main__":
    main()
