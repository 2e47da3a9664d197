"""The three methods on video: latency of one network call vs its executed FLOPs, against the static Latte call,
i.e. whether each method's savings are real time on video shapes:
  FlexiDiT  the weak patches (2, 2, 2) and (1, 4, 4) against the base (1, 2, 2);
  FlexDiT   the sparse sides of its SDTMs (per-frame s x s grids);
  DyDiT     the sliced path with synthetic routers keeping a fraction a of heads, MLP groups and tokens per block
            (its token thresholds calibrated block by block on the batch), as benchmarks/dydit_speed.py --synthetic.

Shapes: the toy video study's latte-toy-2 (16 frames of 16 x 16 grey, batch 16 clips) and latte-s-2 (Latte at
DiT-S/2 width: 12 spatial + 12 temporal blocks, 16 frames of 256 px SD-VAE latents, batch 1). Random weights
(latency does not depend on them). Speed only (tests never assert timings). Usage:
  python benchmarks/video_speed.py [--repeats 3] [--device cpu] [--methods flexidit flexdit dydit]
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

# FlexDiT's sparse sides per case (the grid side first: the full grid) and DyDiT's kept fractions
FLEXDIT_SIDES = {"latte-toy-2": (8, 6, 4), "latte-s-2": (16, 10, 6)}
DYDIT_KEEP = (1.0, 0.7, 0.5)

CASES = [
    # label, model, image size, in channels, classes, batch (clips)
    ("latte-toy-2 (16 x 16 px)", "latte-toy-2", 16, 1, 10, 16),
    ("latte-s-2 (256 px latents)", "latte-s-2", 256, 4, 101, 1),
]


def report(label: str, rows: dict, base: tuple) -> None:
    """One line per variant: GMACs per call, ms per clip, FLOPs and real speedups and their ratio (efficiency)
    against the static Latte call and against the method's own full-compute variant (its first row: the same code
    path, so kernel choices of the static model do not count as savings)."""
    base_macs, base_s = base
    own_macs, own_s = next(iter(rows.values()))
    for name, (macs, seconds) in rows.items():
        flops_x, real_x = base_macs / macs, base_s / seconds
        own_flops_x, own_real_x = own_macs / macs, own_s / seconds
        print(f"{label:28s} {name:>16s} {macs / 1e9:11.3f} {1000 * seconds:9.1f} {flops_x:7.2f}x {real_x:6.2f}x "
              f"{real_x / flops_x:5.2f} {own_flops_x:7.2f}x {own_real_x:6.2f}x {own_real_x / own_flops_x:5.2f}")


def measure(call, batch: int, repeats: int, single) -> tuple[float, float]:
    """(MACs of one clip's call, median seconds per clip of the batched call)."""
    return count_macs(single), time_repeated(call, repeats).median / batch


def flexidit_rows(base, x, t, y, repeats, device) -> dict:
    method = METHODS["flexidit"]
    models = {weak: method.convert(base, method.parse_options(opts)).to(device)
              for weak, opts in (((2, 2), {}), ((1, 4), {"weak_patch_size": 4}))}
    rows = {}
    for weak, model in models.items():
        model.prepare()
        for patch in (model.patch_size, weak):
            name = f"patch {patch[0]}x{patch[1]}x{patch[1]}"
            if name not in rows:
                rows[name] = measure(lambda: model(x, t, y, patch_size=patch), len(x), repeats,
                                     lambda: model(x[:1], t[:1], y[:1], patch_size=patch))
    return rows


def flexdit_rows(base, x, t, y, repeats, device, sides) -> dict:
    method = METHODS["flexdit"]
    model = method.convert(base, method.parse_options({})).to(device)
    return {f"side {s}x{s}": measure(lambda: model(x, t, y, side=s), len(x), repeats,
                                      lambda: model(x[:1], t[:1], y[:1], side=s)) for s in sides}


def synthetic_dydit(model, keep: float, x, t, y) -> list:
    """Width masks keeping round(keep x units) heads and groups (unit 0 included) per block, and token thresholds
    that keep a ``keep`` share of each block's tokens on this batch (set block by block)."""
    g = torch.Generator().manual_seed(0)
    masks = []
    for block in model.blocks:
        pair = []
        for units in (model.config.num_heads, model.num_groups):
            mask = torch.zeros(units, dtype=torch.bool)
            mask[0] = True
            mask[1 + torch.randperm(units - 1, generator=g)[:max(1, round(keep * units)) - 1]] = True
            pair.append(mask.to(x.device))
        masks.append(tuple(pair))
    with torch.no_grad():
        for block in model.blocks:
            logits = []
            hook = block.token_router.register_forward_hook(lambda m, inp, out: logits.append(out.flatten()))
            model.forward_masked(x, t, y, "hard")
            hook.remove()
            block.token_router[2].bias -= torch.quantile(logits[0].float(), 1 - keep) if keep < 1 else -1e4
    return model.gather_widths(masks)


def dydit_rows(base, x, t, y, repeats, device) -> dict:
    method = METHODS["dydit"]
    rows = {}
    for keep in DYDIT_KEEP:
        model = method.convert(base, method.parse_options({})).to(device)
        widths = synthetic_dydit(model, keep, x, t, y)
        rows[f"keep {keep:.2f}"] = measure(lambda: model.forward_sliced(x, t, y, widths), len(x), repeats,
                                           lambda: model.forward_sliced(x[:1], t[:1], y[:1], widths))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (default: 3)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--methods", nargs="+", default=["flexidit", "flexdit", "dydit"],
                        choices=["flexidit", "flexdit", "dydit"], help="methods to time (default: all three)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'shape':28s} {'variant':>16s} {'GMACs/call':>11s} {'ms/clip':>9s} {'FLOPs x':>8s} {'real x':>7s} "
          f"{'eff.':>5s} {'own FLOPs x':>11s} {'own real x':>10s} {'eff.':>5s}")
    for label, name, size, channels, classes, batch in CASES:
        torch.manual_seed(0)
        base = build_model(name, size, in_channels=channels, num_classes=classes).eval()
        frames, side = base.config.num_frames, base.config.input_size
        x = torch.randn(batch, frames, channels, side, side, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)
        y = torch.randint(0, classes, (batch,), device=device)
        with torch.inference_mode():
            static = base.to(device)
            reference = measure(lambda: static(x, t, y), batch, args.repeats, lambda: static(x[:1], t[:1], y[:1]))
            print(f"{label:28s} {'static Latte':>16s} {reference[0] / 1e9:11.3f} {1000 * reference[1]:9.1f}")
        with torch.no_grad():
            if "flexidit" in args.methods:
                report(f"{label} flexidit", flexidit_rows(base, x, t, y, args.repeats, device), reference)
            if "flexdit" in args.methods:
                report(f"{label} flexdit", flexdit_rows(base, x, t, y, args.repeats, device, FLEXDIT_SIDES[name]),
                       reference)
            if "dydit" in args.methods:
                report(f"{label} dydit", dydit_rows(base, x, t, y, args.repeats, device), reference)


if __name__ == "__main__":
    main()
