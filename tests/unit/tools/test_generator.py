"""The generator: deterministic for a seed, and its ground truth is right."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pinapp.domain.events import parse_event, routing_key
from pinapp.domain.geo import GeoLocator
from pinapp.errors import InvalidEvent
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator

START = 1_700_000_000_000


@pytest.fixture(scope="module")
def geo() -> GeoLocator:
    return GeoLocator()


def _records(geo: GeoLocator, n: int, **config: object) -> tuple[TrafficGenerator, list]:
    gen = TrafficGenerator(GeneratorConfig(start_ms=START, **config), geo)  # type: ignore[arg-type]
    return gen, [next(gen) for _ in range(n)]


def test_same_seed_same_traffic(geo: GeoLocator) -> None:
    _, a = _records(geo, 3000, seed=7)
    _, b = _records(geo, 3000, seed=7)
    _, c = _records(geo, 3000, seed=8)
    assert [(r.key, r.value) for r in a] == [(r.key, r.value) for r in b]
    assert [r.value for r in a] != [r.value for r in c]


def test_ground_truth_matches_what_the_pipeline_would_accept(geo: GeoLocator) -> None:
    gen, records = _records(geo, 5000, seed=3, duplicate_ratio=0.05, malformed_ratio=0.05)
    accepted: dict[str, set[str]] = {}
    seen_values: set[bytes] = set()
    malformed = duplicates = 0
    for rec in records:
        try:
            event = parse_event(rec.value, max_bytes=16_384)
        except InvalidEvent:
            malformed += 1
            assert rec.kind == "malformed"
            continue
        assert rec.key == routing_key(event.event_type, event.pin_id, event.user_id).encode()
        if event.event_id in accepted.get(event.event_type, set()):
            duplicates += 1
            assert rec.kind == "duplicate" and rec.value in seen_values
            continue
        accepted.setdefault(event.event_type, set()).add(event.event_id)
        seen_values.add(rec.value)
    truth = gen.truth.to_json()
    assert truth["malformed"] == malformed > 0
    assert truth["duplicates"] == duplicates > 0
    assert truth["generated"] == 5000
    for event_type, ids in accepted.items():
        assert set(truth["event_ids"][event_type]) == ids
        assert truth["valid_unique"][event_type] == len(ids)


def test_pins_exist_before_anything_refers_to_them(geo: GeoLocator) -> None:
    _, records = _records(geo, 3000, seed=5, malformed_ratio=0.0)
    created: set[str] = set()
    for rec in records:
        event = parse_event(rec.value, max_bytes=16_384)
        if event.event_type == "pin":
            created.add(event.pin_id)  # type: ignore[arg-type]
        elif event.pin_id is not None:
            assert event.pin_id in created


def test_popularity_is_skewed_and_ips_span_many_countries(geo: GeoLocator) -> None:
    gen, records = _records(geo, 10_000, seed=11, malformed_ratio=0.0, duplicate_ratio=0.0)
    refs = Counter(parse_event(r.value, max_bytes=16_384).pin_id for r in records)
    refs.pop(None, None)
    counts = sorted(refs.values(), reverse=True)
    top_share = sum(counts[: max(1, len(counts) // 100)]) / sum(counts)
    assert top_share > 0.10, "the top 1% of pins should draw a large share of engagement"
    countries = {geo.lookup(ip).country for ip in gen.ip_pool}
    assert len(countries) >= 50
    assert None not in countries


async def test_file_output_writes_one_json_line_per_record_and_the_truth(geo: GeoLocator, tmp_path: Path) -> None:
    import orjson

    from config import load_settings
    from pinapp.tools.traffic import run_generator

    gen = TrafficGenerator(GeneratorConfig(seed=9, start_ms=START), geo)
    log, truth_path = tmp_path / "logs" / "app.log", tmp_path / "truth.json"
    sent = await run_generator(
        gen,
        load_settings("test"),
        target="file",
        path=log,
        topic="unused",
        count=1234,
        duration=None,
        rate=None,
        truth_path=truth_path,
    )
    lines = log.read_bytes().splitlines()
    assert sent == len(lines) == 1234
    truth = orjson.loads(truth_path.read_bytes())
    assert truth["generated"] == 1234
    assert sum(truth["valid_unique"].values()) + truth["duplicates"] + truth["malformed"] == 1234
    again = TrafficGenerator(GeneratorConfig(seed=9, start_ms=START), geo)
    assert lines == [next(again).value for _ in range(1234)]
