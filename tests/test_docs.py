"""The docs name code that exists: every `file.py` `Name` in the methods' "where each part lives" tables."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "ditpareto"


def defined_names(path: Path) -> set[str]:
    """Top-level functions, classes and assignments; ``Class.member`` for methods, class attributes and the
    attributes ``__init__`` and other methods assign on ``self``."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.ClassDef):
            for member in ast.walk(node):
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) and member in node.body:
                    names.add(f"{node.name}.{member.name}")
                elif isinstance(member, ast.Attribute) and isinstance(member.ctx, ast.Store) \
                        and isinstance(member.value, ast.Name) and member.value.id == "self":
                    names.add(f"{node.name}.{member.attr}")
                elif isinstance(member, (ast.Assign, ast.AnnAssign)) and member in node.body:
                    targets = member.targets if isinstance(member, ast.Assign) else [member.target]
                    names |= {f"{node.name}.{t.id}" for t in targets if isinstance(t, ast.Name)}
    return names


def code_map_references() -> list[tuple[str, str, str]]:
    """(doc, file, name) for each name in a table row's first cell, under the last file named before it."""
    refs = []
    for doc in sorted((REPO / "docs" / "methods").glob("*.md")):
        for line in doc.read_text().splitlines():
            if not line.startswith("| `"):
                continue
            current = None
            for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
                if token.endswith(".py"):
                    current = token
                elif current is not None:
                    refs.append((doc.name, current, token.strip()))
    return refs


def test_the_methods_code_maps_name_code_that_exists():
    refs = code_map_references()
    assert len(refs) > 40  # the three tables are read
    stale = []
    for doc, file, name in refs:
        path = SRC / file
        if not path.is_file():
            stale.append(f"{doc}: {file} does not exist")
            continue
        defined = defined_names(path)
        # a bare name may be a member of a class the row names (`FlexPatchEmbed` (`init_from`))
        if name not in defined and not any(d.endswith(f".{name}") for d in defined):
            stale.append(f"{doc}: {file} defines no {name}")
    assert not stale, stale
