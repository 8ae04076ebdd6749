"""The trend score ranks what is rising, not what is big or new; the generator injects a trend."""

from __future__ import annotations

import re
from collections import Counter

import orjson
import pytest

from config import TrendSettings
from pinapp.adapters.queries import NAMED_QUERIES, query_params
from pinapp.domain.geo import GeoLocator
from pinapp.domain.trends import trend_score
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator, Trend

# Traffic as a whole unchanged: 1,000 events in the recent window for every 6,000 in the baseline.
TOTALS, PRIOR = (1000, 6000), 5.0


def score(recent: int, baseline: int, totals: tuple[int, int] = TOTALS) -> float:
    return trend_score(recent, baseline, *totals, PRIOR)


def test_a_jump_from_a_real_rate_outranks_a_handful_from_nothing() -> None:
    assert score(3, 0) == pytest.approx(1.34, abs=0.01)
    big = score(3000, 6000, totals=(3000, 6000 * 3))  # 3,000 where 1,000 were expected (the example)
    assert big == pytest.approx(2000 / 1005**0.5, abs=0.01)
    assert big > score(3, 0)
    assert score(60, 6) > score(3, 0), "60 where 1 was expected is a trend; 3 from nothing is not yet"


def test_a_steady_item_scores_near_zero_however_big() -> None:
    assert score(1000, 6000) == pytest.approx(0.0)
    assert abs(score(104, 600)) < 2, "Poisson noise of a big item is not a trend"
    assert score(50, 600) < 0, "a falling item scores below zero"


def test_traffic_that_grew_everywhere_is_no_trend() -> None:
    assert score(200, 600, totals=(2000, 6000)) == pytest.approx(0.0), "twice the traffic, the same share"
    assert score(200, 600) > 8, "the same count with unchanged traffic is a trend"


def test_every_trend_query_takes_the_parameters_it_is_given() -> None:
    params = query_params(10, 5, TrendSettings())
    assert params["baseline_minutes"] == 60
    trending = [q for name, q in NAMED_QUERIES.items() if name.startswith("trending-")]
    assert {q.name for q in trending} == {"trending-pins", "trending-categories", "trending-countries"}
    for q in trending:
        used = set(re.findall(r"%\((\w+)\)s", q.sql))
        assert used <= set(params), q.name
        assert {"min_count", "min_share", "prior", "limit", "w_m1_from", "b_m1_from"} <= used, q.name
        assert "FROM rollup_" in q.sql, "a range of a rollup's buckets"


@pytest.fixture(scope="module")
def geo() -> GeoLocator:
    return GeoLocator()


def _pin_ids(records: list, trend_pin: str) -> tuple[int, int]:  # type: ignore[type-arg]
    """(engagement events, of which about ``trend_pin``)."""
    engaged = [
        orjson.loads(r.value) for r in records if r.kind == "valid" and r.event_type in {"repin", "like", "comment"}
    ]
    return len(engaged), sum(doc["pin_id"] == trend_pin for doc in engaged)


def test_an_injected_trend_takes_its_share_from_its_start(geo: GeoLocator) -> None:
    config = GeneratorConfig(seed=3, start_ms=0, step_ms=100.0, trend=Trend(after_s=300, share=0.2))
    gen = TrafficGenerator(config, geo)
    before = [next(gen) for _ in range(3000)]  # 300 s of event time
    assert gen.truth.trend is None
    after = [next(gen) for _ in range(3000)]
    trend = gen.truth.to_json()["trend"]
    assert trend["from_ms"] >= 300_000
    engaged, on_trend = _pin_ids(after, trend["pin_id"])
    assert 0.15 * engaged < on_trend < 0.3 * engaged
    assert _pin_ids(before, trend["pin_id"])[1] <= 3, "the trend pin was the newest: little history"


def test_a_category_trend_goes_to_that_category(geo: GeoLocator) -> None:
    config = GeneratorConfig(seed=4, start_ms=0, step_ms=100.0, trend=Trend(after_s=100, share=0.5, category="pets"))
    gen = TrafficGenerator(config, geo)
    records = [next(gen) for _ in range(4000)]
    assert gen.truth.to_json()["trend"]["category"] == "pets"
    pins = {
        doc["pin"]["pin_id"]: doc["pin"]["category"]
        for doc in map(orjson.loads, (r.value for r in records if r.kind == "valid"))
        if "pin" in doc
    }
    late = Counter(
        pins.get(doc["pin_id"])
        for doc in map(orjson.loads, (r.value for r in records[2000:] if r.kind == "valid"))
        if doc["event_type"] in {"repin", "like", "comment"}
    )
    assert late["pets"] > 0.4 * sum(late.values())


def test_a_trend_not_started_changes_nothing(geo: GeoLocator) -> None:
    plain = TrafficGenerator(GeneratorConfig(seed=5, start_ms=0), geo)
    later = TrafficGenerator(GeneratorConfig(seed=5, start_ms=0, trend=Trend(after_s=10**6)), geo)
    assert [next(plain).value for _ in range(500)] == [next(later).value for _ in range(500)]


def test_a_bad_trend_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        Trend(after_s=1, share=0)
    with pytest.raises(ValueError, match="unknown category"):
        Trend(after_s=1, category="nope")
