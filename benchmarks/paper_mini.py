"""A miniature paper-format study, end to end through Snakemake, on any device and precision: the GPU check.

Builds random-weight stand-ins of every paper input in the official formats (tests/paper_assets.py: a DiT state
dict, a diffusers AutoencoderKL folder, torch-fidelity's InceptionV3 state dict, an ADM reference batch, JPEGs in
ImageFolder layout; nothing is downloaded), writes config/paper-imagenet256.yaml with those inputs, DiT-S/2 shapes
(64 px images: 8 x 8 latents), every method, a few fine-tuning and sampling steps, and the given device and
precision, then runs the workflow to the metrics table and the latency table, and prints per method the executed
GMACs, the latency and what the records say about device and precision. Its FIDs mean nothing (random weights).

  python benchmarks/paper_mini.py --device cuda --precision bf16 --workdir /tmp/paper-mini   # on a GPU
  python benchmarks/paper_mini.py --device cpu --precision bf16 --workdir /tmp/paper-mini    # the same on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import paper_assets as assets  # noqa: E402
from ditpareto.models.checkpoint import sha256_of  # noqa: E402


def inputs(root: Path, model: str) -> dict:
    """The stand-ins (made once per work directory)."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "train": assets.image_folder(root / "imagenet" / "train", classes=3, per_class=8),
        "vae": assets.tiny_vae(root / "sd-vae"),
        "checkpoint": assets.official_dit(root / f"{model}-64x64.pt", model, 64, num_classes=3),
        "inception": (inception := assets.random_inception(root / "pt_inception.pth")),
        "reference": assets.reference_batch(root / "VIRTUAL_mini.npz", inception, count=16),
    }


def miniature_config(args, found: dict) -> dict:
    config = assets.load_config(REPO / "config/paper-imagenet256.yaml")
    config["device"] = args.device
    config["dataset"].update(path=str(found["train"]), image_size=64, encode_batch_size=8)
    config["latents"]["vae"] = str(found["vae"])
    config["base"].update(model=args.model, num_classes=3, checkpoint=str(found["checkpoint"]),
                          sha256=sha256_of(found["checkpoint"]))
    config["metrics"].update(inception_weights=str(found["inception"]), reference_batch=str(found["reference"]),
                             kid_subset_size=4)
    config["sampling"].update(steps=[args.steps], num_samples=args.samples, batch_size=args.batch_size, shards=2,
                              precision=args.precision)
    config["finetune"].update(train_gmacs=None, steps=args.finetune_steps, batch_size=8, precision=args.precision)
    methods = config["methods"]
    config["methods"] = {
        "dit": {"budgets": [str(args.steps), str(max(1, args.steps // 2))]},
        "dit-ft": {"budgets": [str(args.steps)]},
        "dydit": {"budgets": ["0.50"], "options": {**methods["dydit"]["options"], "complete_steps": 1,
                                                   "flops_samples": 4}},
        "flexdit": {"budgets": ["0.61-0.86"], "options": methods["flexdit"]["options"]},
        "flexidit": {"budgets": ["0.50"], "options": methods["flexidit"]["options"]},
    }
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="config `device`: auto, cpu or cuda (default: cuda)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "tf32", "bf16"],
                        help="sampling.precision and finetune.precision (default: bf16)")
    parser.add_argument("--model", default="dit-s-2", help="DiT shape of the stand-in base (default: dit-s-2)")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps (default: 4)")
    parser.add_argument("--samples", type=int, default=16, help="samples per grid point (default: 16)")
    parser.add_argument("--batch-size", type=int, default=8, help="sampling batch (default: 8)")
    parser.add_argument("--finetune-steps", type=int, default=3, help="fine-tuning steps per method (default: 3)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default: 2)")
    parser.add_argument("--workdir", type=Path, required=True, help="run directory (inputs, results, logs)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    found = inputs(args.workdir / "inputs", args.model)
    configfile = assets.write_config(miniature_config(args, found), args.workdir / "paper-mini.yaml")
    print(f"inputs ready in {time.perf_counter() - start:.0f} s; config {configfile}", file=sys.stderr)
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(args.cores),
               "--configfile", str(configfile), "--replace-workflow-config", "--directory", str(args.workdir / "run"),
               "results/tables/metrics.csv", "results/tables/latency.csv"]
    # the jobs' `python` is this interpreter's (its environment's bin first on PATH, as an activated venv)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if run.returncode:
        print(run.stdout[-3000:], run.stderr[-6000:], sep="\n", file=sys.stderr)
        print(f"FAILED after {wall:.0f} s (logs under {args.workdir / 'run' / 'logs'})", file=sys.stderr)
        return 1
    import pandas as pd

    table = pd.read_csv(args.workdir / "run/results/tables/metrics.csv", dtype={"budget": str})
    machine = json.loads((args.workdir / "run/results/tables/latency.csv.json").read_text())
    columns = ["method", "budget", "steps", "device", "sampling_precision", "train_precision", "gmacs_per_image",
               "latency_ms_per_image", "fid"]
    print(table[[c for c in columns if c in table]].to_string(index=False))
    print(json.dumps({k: machine.get(k) for k in ("device", "gpu", "driver", "cuda_runtime", "precision", "timer",
                                                  "torch", "torch_compile", "cuda_graphs")}, indent=1))
    print(f"ran in {wall:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
