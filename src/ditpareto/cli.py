"""Command line: ``python -m ditpareto <command> --help``. Every Snakemake rule calls one of these commands."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys

from ditpareto import __version__
from ditpareto.errors import InputError, TrainingDiverged

log = logging.getLogger("ditpareto.cli")

# Commands that train data-parallel under --nproc; others run in one process.
DATA_PARALLEL = ("pretrain", "finetune")


def _model_args(parser: argparse.ArgumentParser) -> None:
    from ditpareto.archs import DIT_ARCHS, LATTE_ARCHS

    group = parser.add_argument_group("model")
    group.add_argument("--model", required=True, choices=sorted(DIT_ARCHS) + sorted(LATTE_ARCHS), metavar="NAME",
                       help="registered DiT or (video commands) Latte name, e.g. dit-tiny-2, dit-xl-2, latte-toy-2")
    group.add_argument("--image-size", type=int, required=True, metavar="PX", help="image side in pixels")
    group.add_argument("--in-channels", type=int, default=4, metavar="C",
                       help="model input channels: 4 for SD-VAE latents (image/8), else pixels")
    group.add_argument("--num-classes", type=int, default=1000, metavar="K", help="number of classes")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Every optional flag's help ends in its default, read from the flag itself: no default is typed twice."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.default != []
        if action.option_strings and not action.required and shown and "%(default)" not in text:
            default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else "%(default)s"
            text += f" (default: {default})"
        return text


def _add(sub, name: str, func, help_text: str, example: str) -> argparse.ArgumentParser:
    # argparse %-formats a help string: a literal % is doubled
    parser = sub.add_parser(name, help=help_text.replace("%", "%%"),
                            description=f"{help_text}\n\nexample:\n  {example}",
                            formatter_class=DefaultsFormatter)
    parser.set_defaults(func=func)
    return parser


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole CLI; given ``argv``, its command in full and the others by name (their steps not imported)."""
    from ditpareto import commands

    table = commands.commands()
    names = {spec.name for spec in table}
    # the first command name: the global options before it take integers only
    only = next((token for token in argv if token in names), None) if argv else None

    parser = argparse.ArgumentParser(prog="python -m ditpareto", description=__doc__, formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version", version=f"ditpareto {__version__}")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="CPU threads of torch and of numpy's and scipy's BLAS, >= 1 (omitted: one per core)")
    parser.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="data-parallel processes for pretrain/finetune: N > 1 relaunches the command under "
                        "torchrun, one process per GPU (gloo on the CPU); the batch size is the global batch")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for spec in table:
        if only is not None and spec.name != only:
            sub.add_parser(spec.name)
            continue
        p = _add(sub, spec.name, spec.func, spec.help, spec.example)
        if spec.model_args:
            _model_args(p)
        spec.add_args(p)
    return parser


def limit_threads(threads: int):
    """Hold torch and every BLAS / OpenMP pool loaded (numpy's and scipy's OpenBLAS among them) to ``threads``; pools
    loaded later and child processes get it through the environment. Returns the limits as a context manager.

    Each pool defaults to one thread per core, so two one-thread jobs side by side ran numpy's linear algebra on
    four threads over two cores: the metrics job took 2.4x as long (32.5 s vs 13.8 s). Torch is not imported here
    (the table and merge jobs never load it): imported later, it sizes its pool from OMP_NUM_THREADS."""
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threadpool_limits(limits=threads)


# glibc's mallopt parameters, and the values a job runs with: freed blocks up to 32 MiB (the largest mmap threshold
# glibc accepts) stay in the heap, and the heap is trimmed only beyond 1 GiB of free top.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEPT_BLOCK_BYTES, TRIM_BYTES = 32 << 20, 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc reuse freed memory instead of returning it to the kernel (Linux with glibc; elsewhere a no-op that
    returns False). By default every tensor above the mmap threshold is mapped fresh and faulted in page by page:
    a toy DiT forward at 128 rows spent a quarter of its time there (294 -> 224 ms, the same numbers)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        kept = libc.mallopt(M_MMAP_THRESHOLD, KEPT_BLOCK_BYTES)
        return bool(kept and libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def _in_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ


def _without_nproc(argv: list[str], command: str) -> list[str]:
    """``argv`` without the global ``--nproc N`` / ``--nproc=N`` (before the command); any other spelling left in
    is harmless, since a torchrun worker ignores --nproc."""
    cut = argv.index(command)
    head, skip = [], False
    for token in argv[:cut]:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            head.append(token)
    return head + argv[cut:]


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent (torchrun) dies, so a killed job leaves no training process."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _exec_torchrun(nproc: int, argv: list[str], command: str) -> None:
    """Replace this process by torchrun running the same command in ``nproc`` processes. torchrun then holds this
    PID: a job's SIGTERM reaches it and it forwards the signal to the workers, which save their state and stop; its
    exit status is 0 or 1 (any worker's failure; rank 0 prints the reason)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "ditpareto", *_without_nproc(argv, command)]
    log.info("running %s data-parallel in %d processes: %s", command, nproc, " ".join(cmd))
    sys.stdout.flush(), sys.stderr.flush()
    os.execv(sys.executable, cmd)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    keep_freed_memory()
    worker = _in_torchrun()
    if worker:
        _die_with_parent()
        rank = os.environ.get("RANK", "0")
        fmt = f"%(asctime)s [rank {rank}] %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr)
    _main(argv, worker)


def _main(argv: list[str], worker: bool) -> None:
    # The imports (torch, the step's modules) allocate a million objects that live as long as the job: the cyclic
    # collector would scan them again and again (8 % of an evaluate job). They are frozen out of its reach instead.
    gc.disable()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    gc.freeze()
    gc.enable()
    if args.nproc > 1 and not worker:
        if args.command in DATA_PARALLEL:
            _exec_torchrun(args.nproc, argv, args.command)
        log.warning("--nproc applies to %s only: running %s in one process", " and ".join(DATA_PARALLEL),
                    args.command)
    limits = limit_threads(args.threads) if args.threads else contextlib.nullcontext()
    main_process = os.environ.get("RANK", "0") == "0"
    try:
        with limits:
            result = args.func(args)
    except (InputError, FileNotFoundError) as exc:
        # Bad input: one message naming the problem (from torchrun's rank 0 only), no traceback.
        if main_process:
            print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingDiverged as exc:
        if main_process:
            print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if result is not None and main_process:
        print(json.dumps(result, indent=2, sort_keys=True))
