"""Every upstream function pinapp.topology.faust_ext copies or depends on still has the source it was
written against; on an upgrade this fails with the list of functions to re-read."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import textwrap
from pathlib import Path

from pinapp.topology.faust_ext.fingerprints import PINNED, UPSTREAM, Upstream, changed, fingerprint, resolve


def test_the_installed_upstream_functions_are_the_ones_pinapp_was_written_against() -> None:
    stale = changed()
    assert not stale, (
        f"upstream changed since {PINNED}; re-read, adapt, then run "
        "`python -m pinapp.topology.faust_ext.fingerprints --update`:\n" + "\n".join(stale)
    )


def test_every_entry_names_a_real_function_once() -> None:
    names = [entry.name for entry in UPSTREAM]
    assert len(names) == len(set(names))
    for entry in UPSTREAM:
        assert inspect.isfunction(resolve(entry.name)), entry.name
        assert len(entry.sha256) == 64


def test_an_edited_copy_of_an_upstream_function_is_reported(tmp_path: Path) -> None:
    """The check fails on a change: a copy of faust's ``_new_offset`` with one line edited."""
    name = "faust.transport.consumer:Consumer._new_offset"
    source = textwrap.dedent(inspect.getsource(resolve(name)))
    edited = source.replace("> 1:", "> 2:")
    assert edited != source
    module_path = tmp_path / "upgraded_consumer.py"
    module_path.write_text("from __future__ import annotations\n" + edited)
    spec = importlib.util.spec_from_file_location("upgraded_consumer", module_path)
    assert spec is not None and spec.loader is not None
    upgraded = importlib.util.module_from_spec(spec)
    sys.modules["upgraded_consumer"] = upgraded
    try:
        spec.loader.exec_module(upgraded)
        entries = tuple(e for e in UPSTREAM if e.name == name)
        unchanged_copy = Upstream(name, "test", fingerprint(upgraded._new_offset))
        assert changed(entries, lookup=lambda _: upgraded._new_offset) == [
            f"{name}: source changed; re-read {entries[0].why}"
        ]
        assert changed((unchanged_copy,), lookup=lambda _: upgraded._new_offset) == []
    finally:
        del sys.modules["upgraded_consumer"]


def test_a_function_gone_upstream_is_reported() -> None:
    entry = Upstream("faust.transport.consumer:Consumer._no_such_function", "nothing", "0" * 64)
    assert changed((entry,)) == [
        (
            "faust.transport.consumer:Consumer._no_such_function: gone (AttributeError('_no_such_function')); "
            "re-read nothing"
        )
    ]
