"""Experiment definitions, the sample-ratio test, and the generator's allocation (with its bug)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from pinapp.domain.experiments import Experiment, load_experiments, srm_test
from pinapp.domain.geo import GeoLocator
from pinapp.errors import ConfigError
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator
from tests.paths import REPO

START = datetime(2026, 1, 1, tzinfo=UTC)
HALVES = Experiment("search", {"control": 0.5, "treatment": 0.5}, START)


def test_the_demo_definitions_load() -> None:
    names = [e.name for e in load_experiments(REPO / "config" / "experiments.toml")]
    assert names == ["search_ranking_v2", "checkout_flow"]


def test_weights_become_shares_and_start_is_utc(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('[[experiment]]\nname = "e"\nstart = 2026-03-01T02:00:00+02:00\ngroups = { a = 1, b = 3 }\n')
    [e] = load_experiments(path)
    assert dict(e.shares) == {"a": 0.25, "b": 0.75}
    assert e.start == datetime(2026, 3, 1, tzinfo=UTC)
    assert (e.group_of(0.1), e.group_of(0.3), e.group_of(0.999999)) == ("a", "b", "b")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1 }\n", "two or more groups"),
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00\ngroups = { a = 1, b = 1 }\n", "with a zone"),
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1, b = 0 }\n", "finite weight"),
        ("[[experiment]]\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1, b = 1 }\n", "name must be"),
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1, b = 1 }\n" * 2, "twice"),
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1, b = nan }\n", "finite weight"),
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1, b = inf }\n", "finite weight"),
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1e308, b = 1e308 }\n", "up to"),
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1, b = 1e-9 }\n", "share"),
        ("[[experiment]]\nname = 'e'\nstart = 2026-01-01T00:00:00Z\ngroups = { a = 1, b = '1' }\n", "finite weight"),
        ("experiment = [1, 2]\n", "experiment 1 must be a table"),
        ("experiment = 3\n", "array of tables"),
        ("not toml [", "is not TOML"),
    ],
)
def test_a_bad_definition_is_one_line_naming_the_file(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_experiments(path)
    message = str(info.value)
    assert says in message and str(path) in message and "\n" not in message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_experiments(tmp_path / "nope.toml")


def test_an_even_split_passes_and_a_skewed_one_is_a_mismatch() -> None:
    even = srm_test(HALVES, {"control": 5040, "treatment": 4960}, p_threshold=0.001, min_users=100)
    assert not even.mismatch and even.p_value is not None and even.p_value > 0.4
    skewed = srm_test(HALVES, {"control": 5250, "treatment": 4750}, p_threshold=0.001, min_users=100)
    assert skewed.mismatch and skewed.p_value is not None and skewed.p_value < 1e-5
    assert skewed.reason.startswith("sample ratio mismatch, p = ")


def test_too_few_users_give_no_verdict_and_strangers_are_a_mismatch() -> None:
    few = srm_test(HALVES, {"control": 60, "treatment": 20}, p_threshold=0.001, min_users=100)
    assert (few.p_value, few.mismatch) == (None, False)
    assert dict(few.users) == {"control": 60, "treatment": 20}
    stray = srm_test(HALVES, {"control": 10, "treatment": 10, "beta": 3}, p_threshold=0.001, min_users=100)
    assert stray.mismatch and "beta (3)" in stray.reason
    missing = srm_test(HALVES, {"control": 500}, p_threshold=0.001, min_users=100)
    assert missing.mismatch and dict(missing.users) == {"control": 500, "treatment": 0}


def _users(gen: TrafficGenerator, events: int) -> dict[str, dict[str, str]]:
    users: dict[str, dict[str, str]] = {}
    for record in (next(gen) for _ in range(events)):
        if record.kind == "valid":
            doc = orjson.loads(record.value)
            for name, group in doc.get("experiments", {}).items():
                assert users.setdefault(name, {}).setdefault(doc["user_id"], group) == group, "a user keeps its group"
    return users


def test_the_generator_splits_users_as_defined_and_leaks_on_request() -> None:
    checkout = Experiment("checkout", {"control": 0.5, "streamlined": 0.5}, START)
    config = GeneratorConfig(seed=2, users=4000, experiments=(HALVES, checkout), leaks={"checkout": 0.2})
    users = _users(TrafficGenerator(config, GeoLocator()), 20_000)
    search, buggy = Counter(users["search"].values()), Counter(users["checkout"].values())
    enrolled = len(users["search"])
    assert 0.4 * 4000 < enrolled < 0.6 * 4000, "about half the users are in each experiment"
    assert not srm_test(HALVES, search, p_threshold=0.001, min_users=100).mismatch
    assert srm_test(checkout, buggy, p_threshold=0.001, min_users=100).mismatch
    assert buggy["control"] > 1.3 * buggy["streamlined"]


def test_without_experiments_the_stream_is_unchanged() -> None:
    plain = TrafficGenerator(GeneratorConfig(seed=5, start_ms=0), GeoLocator())
    none = TrafficGenerator(GeneratorConfig(seed=5, start_ms=0, experiments=()), GeoLocator())
    assert [next(plain).value for _ in range(300)] == [next(none).value for _ in range(300)]
