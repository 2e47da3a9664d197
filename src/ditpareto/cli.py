"""Command line: ``python -m ditpareto <command> --help``. Every Snakemake rule calls one of these commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ditpareto import __version__
from ditpareto.errors import InputError


def _model_args(parser: argparse.ArgumentParser) -> None:
    from ditpareto.models import DIT_ARCHS

    group = parser.add_argument_group("model")
    group.add_argument("--model", required=True, choices=sorted(DIT_ARCHS), metavar="NAME",
                       help="registered DiT name, e.g. dit-tiny-2, dit-xl-2")
    group.add_argument("--image-size", type=int, required=True, metavar="PX", help="image side in pixels")
    group.add_argument("--in-channels", type=int, default=4, metavar="C",
                       help="model input channels: 4 for SD-VAE latents (image/8), else pixels (default: 4)")
    group.add_argument("--num-classes", type=int, default=1000, metavar="K", help="number of classes (default: 1000)")


def _add(sub, name: str, func, help_text: str, example: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=f"{help_text}\n\nexample:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from ditpareto import commands

    parser = argparse.ArgumentParser(prog="python -m ditpareto", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ditpareto {__version__}")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for spec in commands.COMMANDS:
        p = _add(sub, spec.name, spec.func, spec.help, spec.example)
        if spec.model_args:
            _model_args(p)
        spec.add_args(p)
    return parser


def main(argv: list[str] | None = None) -> None:
    import ditpareto.compat  # noqa: F401  (before torchvision / torch_fidelity / diffusers)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        result = args.func(args)
    except (InputError, FileNotFoundError) as exc:
        # Bad input: one message naming the problem, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))
