"""What the local stack installs from Debian's packages, and running its set-up commands."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
from typing import Any

from pinapp.errors import StackError

__all__ = ["ensure_debian_package", "ensure_jemalloc", "run_checked"]


def run_checked(argv: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]  # noqa: S603 - our own argv
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise StackError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc


def ensure_debian_package(binary: str, packages: list[str], *, found: Any = shutil.which) -> str:
    """The path of ``binary``, installing Debian ``packages`` with apt-get first when it is missing.

    Raises:
        StackError: not root or no apt-get (with the command to run), or the install failed.
    """
    path = found(binary)
    if path:
        return str(path)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"{binary} is not installed; run: sudo apt-get install -y {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_checked(["apt-get", "update", "-q"], "apt-get update", env=env)
    run_checked(["apt-get", "install", "-y", "-q", *packages], f"installing {' '.join(packages)}", env=env)
    path = found(binary)
    if not path:
        raise StackError(f"{binary} is still missing after apt-get install {' '.join(packages)}")
    return str(path)


def ensure_jemalloc() -> None:
    """Install Debian's jemalloc if it is missing (``make setup``); a warning if that cannot be done."""
    from pinapp.topology.allocator import JEMALLOC_PACKAGE

    try:
        ensure_debian_package("libjemalloc", [JEMALLOC_PACKAGE], found=lambda _: ctypes.util.find_library("jemalloc"))
    except StackError as exc:
        print(f"warning: {exc}\n  workers will run on the system allocator (see docs/operations.md)", file=sys.stderr)
