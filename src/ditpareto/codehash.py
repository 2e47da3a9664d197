"""What code a job runs, as one digest: the package modules a step module imports, transitively (every ``import`` of
``ditpareto`` in the source, at module level or inside a function), read from a checkout's ``src`` folder. The
workflow puts it in each rule's params, so an edit reruns exactly the jobs whose code changed (and what depends on
their outputs); the sample records carry it, so shards of two code versions never merge. Standard library only."""

from __future__ import annotations

import ast
import hashlib
import re
from functools import lru_cache
from pathlib import Path

PACKAGE = "ditpareto"
# The package version is a label, not code: a version bump alone reruns nothing.
_VERSION_LINE = re.compile(rb"^__version__\s*=.*$", re.MULTILINE)


def module_file(src: Path, module: str) -> Path | None:
    """The file of ``module`` (``ditpareto.x.y``) under ``src``: ``x/y.py`` or ``x/y/__init__.py``; None if neither."""
    path = Path(src).joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imported(src: Path, module: str) -> set[str]:
    """The package modules one module's source imports (and the packages that hold them)."""
    path = module_file(src, module)
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from pkg import module"
    out = set()
    for name in found:
        if name.split(".")[0] != PACKAGE or module_file(src, name) is None:
            continue
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # importing a.b runs a/__init__ too
    return out


def closure(src: str | Path, *modules: str) -> set[str]:
    """Every package module the given modules import, transitively (themselves included)."""
    src, seen, todo = Path(src), set(), list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        if module_file(src, module) is None:
            raise ValueError(f"module {module} is not under {src}")
        seen.add(module)
        todo.extend(_imported(src, module) - seen)
    return seen


@lru_cache(maxsize=None)
def code_hash(src: str | Path, *modules: str) -> str:
    """sha256 (16 hex digits) of the source files ``closure(src, *modules)`` names, the version line left out."""
    digest = hashlib.sha256()
    for module in sorted(closure(src, *modules)):
        digest.update(module.encode() + b"\0" + _VERSION_LINE.sub(b"", module_file(Path(src), module).read_bytes()))
    return digest.hexdigest()[:16]


def running_code_hash(*modules: str) -> str:
    """``code_hash`` of the package this process imported (a job's own record of the code it ran)."""
    return code_hash(Path(__file__).resolve().parents[1], *modules)
