"""Training steps/s and sampling network calls/s of the tiny and dit-s-2 configurations on this CPU.

Speed only (tests never assert timings). Usage: python benchmarks/throughput.py [--repeats N]
"""

from __future__ import annotations

import argparse

import ditpareto.compat  # noqa: F401
import torch

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.models import build_dit
from ditpareto.timing import time_repeated
from ditpareto.train import diffusion_loss

CASES = [
    # name, model, image size, in channels, classes, train batch, sampling batch
    ("tiny (digits 16px)", "dit-tiny-2", 16, 1, 10, 128, 256),
    ("dit-s-2 (256px latents)", "dit-s-2", 256, 4, 1000, 8, 16),
]


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    return time_repeated(fn, repeats).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (default: 5)")
    args = parser.parse_args()
    diffusion = GaussianDiffusion.base()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'config':26s} {'params':>8s} {'train steps/s':>14s} {'train img/s':>12s} {'calls/s (batch)':>18s}")
    for label, name, size, channels, classes, train_batch, sample_batch in CASES:
        model = build_dit(name, size, in_channels=channels, num_classes=classes)
        side = model.config.input_size
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(train_batch, channels, side, side)
        y = torch.randint(0, classes, (train_batch,))

        def train_step():
            loss = diffusion_loss(model, x, y, diffusion)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        model.train()
        step_s = timed(train_step, args.repeats)
        model.eval()
        xs = torch.randn(sample_batch, channels, side, side)
        ys = torch.randint(0, classes, (sample_batch,))
        ts = torch.full((sample_batch,), 500)
        with torch.no_grad():
            call_s = timed(lambda: model(xs, ts, ys), args.repeats)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{label:26s} {params:7.2f}M {1 / step_s:14.2f} {train_batch / step_s:12.1f} "
              f"{sample_batch / call_s:11.1f} ({sample_batch})")


if __name__ == "__main__":
    main()
