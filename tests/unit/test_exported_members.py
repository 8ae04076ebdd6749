"""Each module's public names (its ``__all__``) are pinned, as httpx's test_exported_members.py does.

A change to what a module exports is a change of its API: this fails until
``tests/unit/exported_members.json`` says so too (``python -m tests.unit.test_exported_members``
rewrites it from the code; review the diff). Read from the syntax: nothing is imported.
"""

from __future__ import annotations

import ast
import json
import sys

from tests.paths import REPO

PACKAGES = ("pinapp", "config", "agents", "tables")
SNAPSHOT = REPO / "tests" / "unit" / "exported_members.json"


def _all_of(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def exported() -> dict[str, list[str] | None]:
    """Module -> its ``__all__`` (``None``: a package ``__init__`` that exports nothing)."""
    found: dict[str, list[str] | None] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[module] = _all_of(ast.parse(path.read_text()))
    return found


def test_every_module_declares_what_it_exports() -> None:
    missing = [m for m, names in exported().items() if names is None and not _is_package_without_api(m)]
    assert not missing, f"modules without __all__: {missing}"


def _is_package_without_api(module: str) -> bool:
    path = REPO / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text()) if path.exists() else None
    return tree is not None and all(
        isinstance(n, ast.Expr | ast.ImportFrom | ast.Import)
        or (isinstance(n, ast.Assign) and all(getattr(t, "id", "").startswith("__") for t in n.targets))
        for n in tree.body
    )


def test_each_modules_exports_are_pinned() -> None:
    pinned = json.loads(SNAPSHOT.read_text())
    now = exported()
    changed = {
        m: {"pinned": pinned.get(m), "now": now.get(m)}
        for m in sorted(pinned.keys() | now.keys())
        if sorted(pinned.get(m) or []) != sorted(now.get(m) or []) or (m in pinned) != (m in now)
    }
    assert not changed, (
        "exports changed (update tests/unit/exported_members.json with "
        f"`python -m tests.unit.test_exported_members` if meant): {json.dumps(changed, indent=1)}"
    )


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(exported(), indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {SNAPSHOT}\n")
