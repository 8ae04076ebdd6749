"""Every exception pinapp defines is a :class:`pinapp.errors.PinappError`, so a caller (the CLI's
one-line errors, the worker's handlers) can tell pinapp's own failures from a bug."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

from tests.paths import REPO

PINAPP = REPO / "pinapp"
BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
}


def _classes() -> dict[str, tuple[Path, list[str]]]:
    """Every class in pinapp/: its file and its bases' names (the last part of a dotted base)."""
    found: dict[str, tuple[Path, list[str]]] = {}
    for path in sorted(PINAPP.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases]
                found[node.name] = (path, bases)
    return found


def test_every_exception_pinapp_defines_is_a_pinapp_error() -> None:
    classes = _classes()
    ours = {"PinappError"}
    while more := {n for n, (_, bases) in classes.items() if n not in ours and ours & set(bases)}:
        ours |= more
    strays = [
        f"{path.relative_to(PINAPP.parent)}: {name}({', '.join(bases)})"
        for name, (path, bases) in classes.items()
        if name not in ours and BUILTIN_EXCEPTIONS & set(bases)
    ]
    assert len(ours) > 5, ours  # the walk found pinapp's errors at all
    assert not strays, "exceptions outside PinappError:\n" + "\n".join(strays)
