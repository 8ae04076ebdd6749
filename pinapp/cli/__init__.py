"""The ``pinapp`` command line: one module per command group, on the root group of :mod:`.base`."""

from __future__ import annotations

import sys

import click

from pinapp.cli import (  # noqa: F401 - each module registers its commands on the root group
    alerter,
    archive,
    audit,
    db,
    experiments,
    generate,
    query,
    singer,
    stack,
    worker,
)
from pinapp.cli.base import cli
from pinapp.errors import PinappError

__all__ = ["cli", "main"]


def main() -> None:
    """Console entry point: errors pinapp raises on purpose print as one clear line."""
    try:
        cli(obj={})
    except PinappError as exc:
        click.echo(f"pinapp: error: {exc}", err=True)
        sys.exit(2)
