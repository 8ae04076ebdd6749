"""No code outside pinapp/faust_ext touches a private name of faust, mode, aiokafka or
prometheus_client: the internals pinapp depends on stay in one fenced, fingerprinted place."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

from tests.paths import REPO

FENCED = REPO / "pinapp" / "topology" / "faust_ext"
CHECKED = [REPO / name for name in ("pinapp", "agents", "tables", "config")]
LIBRARIES = ("faust", "mode", "aiokafka", "prometheus_client")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        yield from sorted(root.rglob("*.py"))


def _defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, assigned names and attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if _private(n)}


@cache
def library_private_names() -> frozenset[str]:
    names: set[str] = set()
    for lib in LIBRARIES:
        for path in _files(Path(p) for p in importlib.import_module(lib).__path__):
            names |= _defined(ast.parse(path.read_bytes(), str(path)))
    return frozenset(names)


@cache
def pinapp_private_names() -> frozenset[str]:
    """Private names pinapp defines itself, outside the fence (inside it, faust's are overridden)."""
    names: set[str] = set()
    for path in _files(CHECKED):
        if FENCED not in path.parents:
            names |= _defined(ast.parse(path.read_bytes(), str(path)))
    return frozenset(names)


def violations(source: str, filename: str, theirs: frozenset[str], ours: frozenset[str]) -> list[str]:
    """``file:line: what`` for each use of a library's private name that pinapp does not define."""
    foreign = theirs - ours
    out: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and node.attr in foreign:
            out.append(f"{filename}:{node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value in foreign
        ):
            out.append(f"{filename}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            parts = (node.module or "").split(".")
            out += [
                f"{filename}:{node.lineno}: from {node.module} import {a.name}" for a in node.names if _private(a.name)
            ]
            if any(_private(p) for p in parts[1:]):
                out.append(f"{filename}:{node.lineno}: from {node.module}")
        elif isinstance(node, ast.Import):
            out += [
                f"{filename}:{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in LIBRARIES and any(_private(p) for p in a.name.split(".")[1:])
            ]
    return out


def test_nothing_outside_the_fence_uses_a_private_name_of_faust_mode_aiokafka_or_prometheus() -> None:
    found: list[str] = []
    for path in _files(CHECKED):
        if FENCED in path.parents:
            continue
        found += violations(
            path.read_text(), str(path.relative_to(REPO)), library_private_names(), pinapp_private_names()
        )
    assert not found, "private library names outside pinapp/faust_ext (move the use into it):\n" + "\n".join(found)


def test_the_fence_flags_each_kind_of_private_use() -> None:
    theirs = frozenset({"_committed_offset", "_value", "_dbs", "_current_event", "_client"})
    source = """
from faust.streams import _current_event
from faust.types._env import DATADIR
import faust.transport._cython
consumer._committed_offset.get(tp)
metrics.COUNTER._value.get()
getattr(table.data, "_dbs", {})
self._own_state = 1
"""
    found = violations(source, "m.py", theirs, frozenset({"_own_state"}))
    assert sorted(f.split(": ", 1)[1] for f in found) == sorted(
        [
            "from faust.streams import _current_event",
            "from faust.types._env",
            "import faust.transport._cython",
            "._committed_offset",
            "._value",
            "getattr(..., '_dbs')",
        ]
    )


def test_a_name_pinapp_defines_itself_is_not_flagged() -> None:
    theirs = frozenset({"_queue"})
    assert violations("self._queue.put(x)", "m.py", theirs, frozenset({"_queue"})) == []
    assert violations("self._queue.put(x)", "m.py", theirs, frozenset()) == ["m.py:1: ._queue"]
