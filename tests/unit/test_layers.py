"""The layers' import rules (import-linter's contracts in pyproject.toml) hold, and cover every package.

The README's Layout section and docs/architecture.md draw these layers; these tests keep the
picture true: ``lint-imports`` fails on an import that goes up a layer (or from the logic
below the topology into faust), and a package outside every layer fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.paths import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, check=False
    )


def _layers() -> list[str]:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers: list[str] = next(c for c in contracts if c["type"] == "layers")["layers"]
    return layers


def test_the_import_contracts_hold() -> None:
    done = _lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout


def test_an_import_up_a_layer_breaks_them(tmp_path: Path) -> None:
    for name in ("pinapp", "agents", "tables", "config"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    events = tmp_path / "pinapp" / "domain" / "events.py"
    events.write_text(events.read_text() + "\nfrom pinapp.topology import app  # the domain reaching up\n")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "pinapp.domain.events -> pinapp.topology" in done.stdout


def test_every_package_and_module_is_in_a_layer() -> None:
    named = {name.strip() for layer in _layers() for name in layer.split("|")}
    pinapp = REPO / "pinapp"
    found = {f"pinapp.{p.name}" for p in pinapp.iterdir() if (p / "__init__.py").exists()}
    found |= {f"pinapp.{p.stem}" for p in pinapp.glob("*.py") if p.stem != "__init__"}
    assert found | {"agents", "tables", "config"} <= named, sorted(found - named)
