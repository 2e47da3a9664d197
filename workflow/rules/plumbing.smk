# Plumbing every study's rules share (image: common.smk, video: video_common.smk): the code digest in each rule's
# params, the environment file, the checkout's src on PYTHONPATH, paths named from the repository root.

import os
import shlex
from pathlib import Path

import ditpareto
from ditpareto.codehash import code_hash
from ditpareto.config import resolve_path


def code_of(*modules):
    """The digest of the code a rule's step runs (ditpareto.codehash over this checkout's src): in each rule's
    params, so an edit reruns exactly the jobs whose code it touches, and a version bump alone reruns nothing.
    """
    return code_hash(SOURCE_DIR, *(f"ditpareto.{m}" for m in modules))


# Third-party packages only: every job imports ditpareto from this checkout (PYTHONPATH below), so the venv and a
# `--sdm conda` environment run the same code.
ENV = "../../envs/ditpareto.yaml"
# the code the jobs run: this checkout's src, else (a workflow copied without it) the installed package's
SOURCE_DIR = str(resolve_path("src", REPO_ROOT))
if not Path(SOURCE_DIR, "ditpareto").is_dir():
    SOURCE_DIR = str(Path(ditpareto.__file__).resolve().parents[1])
SOURCE = shlex.quote(SOURCE_DIR)
# (doubled braces: Snakemake formats the prefix like a shell command)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={SOURCE}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


def repo_file(path):
    """A file config or the workflow names relative to the repository root, named relative to the working directory
    (an absolute path stays as given): a finished study moved together with its checkout plans no job.
    """
    return str(path) if Path(path).is_absolute() else os.path.relpath(REPO_ROOT / path)
