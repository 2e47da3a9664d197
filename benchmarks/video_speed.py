"""FlexiDiT on video: latency of one network call per patch (base (1, 2, 2), weak (2, 2, 2) and (1, 4, 4)) vs its
executed FLOPs, i.e. whether weak calls save time on video shapes.

Shapes: the toy video study's latte-toy-2 (16 frames of 16 x 16 grey, batch 16 clips) and latte-s-2 (Latte at
DiT-S/2 width: 12 spatial + 12 temporal blocks, 16 frames of 256 px SD-VAE latents, batch 1). Random weights
(latency does not depend on them). Speed only (tests never assert timings). Usage:
  python benchmarks/video_speed.py [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse

import ditpareto.compat  # noqa: F401
import torch

from ditpareto.flops import count_macs
from ditpareto.methods import METHODS
from ditpareto.models import build_model
from ditpareto.runtime import resolve_device
from ditpareto.timing import time_repeated

CASES = [
    # label, model, image size, in channels, classes, batch (clips)
    ("latte-toy-2 (16 x 16 px)", "latte-toy-2", 16, 1, 10, 16),
    ("latte-s-2 (256 px latents)", "latte-s-2", 256, 4, 101, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (default: 3)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    method = METHODS["flexidit"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'shape':28s} {'patch':>7s} {'tokens':>7s} {'GMACs/call':>11s} {'ms/clip':>9s} {'FLOPs x':>8s} "
          f"{'real x':>7s} {'eff.':>5s}")
    for label, name, size, channels, classes, batch in CASES:
        torch.manual_seed(0)
        base = build_model(name, size, in_channels=channels, num_classes=classes).eval()
        models = {weak: method.convert(base, method.parse_options(opts)).to(device)
                  for weak, opts in (((2, 2), {}), ((1, 4), {"weak_patch_size": 4}))}
        frames, side = base.config.num_frames, base.config.input_size
        x = torch.randn(batch, frames, channels, side, side, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)
        y = torch.randint(0, classes, (batch,), device=device)
        rows = {}
        with torch.inference_mode():
            for weak, model in models.items():
                model.prepare()
                for patch in (model.patch_size, weak):
                    if patch in rows:
                        continue
                    macs = count_macs(lambda: model(x[:1], t[:1], y[:1], patch_size=patch))
                    seconds = time_repeated(lambda: model(x, t, y, patch_size=patch), args.repeats).median
                    rows[patch] = (macs, seconds / batch)
        base_macs, base_s = rows[(1, 2)]
        for (pt, ps), (macs, seconds) in rows.items():
            tokens = frames // pt * (side // ps) ** 2
            flops_x, real_x = base_macs / macs, base_s / seconds
            print(f"{label:28s} {pt}x{ps}x{ps:<3d} {tokens:7d} {macs / 1e9:11.3f} {1000 * seconds:9.1f} "
                  f"{flops_x:7.2f}x {real_x:6.2f}x {real_x / flops_x:5.2f}")


if __name__ == "__main__":
    main()
