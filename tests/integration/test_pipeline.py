"""The topology end to end on real Kafka and MariaDB, compared with the generator's truth."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson

from pinapp.domain.dead_letters import HEADER_PREFIX
from pinapp.domain.geo import GeoLocator
from pinapp.singer.keys import line_key
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator
from pinapp.tools.harness import TABLE_OF, Pipeline

# How the validator classifies each kind of malformed input the generator makes.
VALIDATOR_KIND = {
    "not_json": "not_json",
    "not_object": "not_object",
    "missing_field": "schema",
    "unknown_type": "schema",
    "bad_timestamp": "bad_timestamp",
    "naive_timestamp": "bad_timestamp",
    "too_large": "too_large",
    "bad_ip": "bad_ip",
    "wrong_type": "schema",
}
KNOWN_LOGIN = {
    "event_id": "known-ip-login",
    "event_type": "login",
    "ts": "2024-03-01T10:00:00+01:00",
    "user_id": "u-known",
    "ip": "81.2.69.160",
}


def _expected(truth: dict, extra_logins: int = 0) -> dict[str, int]:
    expected = dict(truth["valid_unique"])
    expected["login"] += extra_logins
    return expected


async def test_each_table_holds_exactly_the_unique_valid_events(pipeline: Pipeline) -> None:
    geo = GeoLocator()
    gen = TrafficGenerator(GeneratorConfig(seed=101, duplicate_ratio=0.05, malformed_ratio=0.05), geo)
    records = [next(gen) for _ in range(4000)]
    truth = gen.truth.to_json()
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()

    await pipeline.produce([*records, (b"u-known", orjson.dumps(KNOWN_LOGIN))])
    await pipeline.wait_for_rows(_expected(truth, extra_logins=1))
    await asyncio.sleep(2)  # anything extra (a duplicate) would have landed by now

    ids = await pipeline.ids_by_type()
    for event_type, expected_ids in truth["event_ids"].items():
        extra = ["known-ip-login"] if event_type == "login" else []
        assert Counter(ids[event_type]) == Counter(expected_ids + extra), event_type

    # Enrichment: a known IP resolves to its place; every row agrees with the geo database.
    [known] = await pipeline.sql(
        "SELECT country, region, city, ROUND(latitude, 2), ROUND(longitude, 2), ts FROM logins WHERE event_id = %s",
        ("known-ip-login",),
    )
    assert known[:5] == ("GB", "England", "Willesden", 51.53, -0.23)
    assert str(known[5]) == "2024-03-01 09:00:00"  # stored in UTC
    for table in TABLE_OF.values():
        for ip, country, lat in await pipeline.sql(f"SELECT ip, country, latitude FROM {table}"):
            loc = geo.lookup(ip)
            assert (country, lat) == (loc.country, loc.latitude), (table, ip)

    # Category: every engagement row carries its pin's category; no pin went unresolved.
    for table in ("repins", "comments", "likes"):
        [(mismatched, unknown, total)] = await pipeline.sql(
            f"SELECT SUM(t.category <> p.category), SUM(t.category = 'unknown'), COUNT(*) "
            f"FROM {table} t LEFT JOIN pins p ON p.pin_id = t.pin_id"
        )
        assert (int(mismatched), int(unknown), total) == (0, 0, truth["valid_unique"][table.rstrip("s")])

    # Dead letters: every malformed input, byte for byte, with its reason and source offset.
    source = {(r.partition, r.offset): r.value for r in await pipeline.read_topic(pipeline.settings.kafka.events_topic)}
    dlq = await pipeline.read_topic(pipeline.settings.kafka.dlq_topic)
    assert len(dlq) == truth["malformed"]
    kinds: Counter[str] = Counter()
    for rec in dlq:
        headers = {k.removeprefix(HEADER_PREFIX): v.decode() for k, v in rec.headers}
        assert headers["reason"] and headers["stage"] == "validate"
        assert headers["topic"] == pipeline.settings.kafka.events_topic
        assert source[(int(headers["partition"]), int(headers["offset"]))] == rec.value
        kinds[headers["kind"]] += 1
    expected_kinds: Counter[str] = Counter()
    for kind, n in truth["malformed_by_kind"].items():
        expected_kinds[VALIDATOR_KIND[kind]] += n
    assert kinds == expected_kinds

    metrics = worker.metrics()
    assert metrics["pinapp_duplicates_dropped_total"] == truth["duplicates"]
    assert metrics["pinapp_events_in_total"] == len(records) + 1


async def _written_past_kafka_commit(pipeline: Pipeline) -> bool:
    """Whether the database holds a partition's rows past the offset the group committed to Kafka."""
    topic = pipeline.settings.kafka.events_topic
    committed, _ = await pipeline.group_position(topic, pipeline.settings.worker.app_id)
    stored = dict(await pipeline.sql("SELECT part, next_offset FROM stream_offsets WHERE topic = %s", (topic,)))
    return any(n > committed.get(p, 0) for p, n in stored.items())


async def test_a_worker_killed_and_restarted_mid_stream_loses_and_doubles_nothing(pipeline: Pipeline) -> None:
    gen = TrafficGenerator(GeneratorConfig(seed=202, duplicate_ratio=0.03, malformed_ratio=0.02), GeoLocator())
    records = [next(gen) for _ in range(9000)]
    truth = gen.truth.to_json()
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()

    producing = asyncio.create_task(pipeline.produce(records, rate=1000))
    # SIGKILL mid-batch: nothing flushed. Killed between a batch's database commit and its Kafka
    # commit (the database's positions past the group's offsets), the restarted worker fetches
    # records whose rows and rollup counts are in already: they must pass unwritten and uncounted.
    for attempt in range(5):
        await asyncio.sleep(2.0)
        worker.kill()
        if await _written_past_kafka_commit(pipeline):
            break
        assert attempt < 4, "never killed between a database commit and its Kafka commit"
        worker.start()
        await worker.wait_ready()
    await asyncio.sleep(1.0)
    worker.start()
    await worker.wait_ready()
    await asyncio.sleep(1.5)
    worker.stop()  # graceful stop mid-stream
    worker.start()
    await worker.wait_ready()
    assert await producing == len(records)

    await pipeline.wait_for_rows(_expected(truth), timeout=180)
    await asyncio.sleep(2)
    ids = await pipeline.ids_by_type()
    for event_type, expected_ids in truth["event_ids"].items():
        assert len(ids[event_type]) == len(set(ids[event_type])), f"duplicate rows in {event_type}"
        assert set(ids[event_type]) == set(expected_ids), f"lost or extra rows in {event_type}"
    await pipeline.assert_rollups_exact()
    dlq = await pipeline.read_topic(pipeline.settings.kafka.dlq_topic)
    # Malformed inputs are all dead-lettered; a replay after the kill may repeat some.
    sources = {(dict(r.headers)[HEADER_PREFIX + "partition"], dict(r.headers)[HEADER_PREFIX + "offset"]) for r in dlq}
    assert len(sources) == truth["malformed"]


async def test_an_integer_id_and_its_decimal_string_are_one_id(pipeline: Pipeline) -> None:
    """64-bit numeric ids as many servers log them: keyed by Singer's rule as their decimal
    string (one partition for 42 and "42"), stored as it, and deduplicated against it."""
    pin = {
        "pin_id": 4242,
        "board_id": 17,
        "user_id": 2**64 - 1,
        "title": "numeric",
        "category": "travel",
        "created_at": 1_700_000_000_000,
    }
    events = [
        {
            "event_id": 9_000_000_000_000_000_001,
            "event_type": "pin",
            "ts": 1_700_000_000_000,
            "user_id": 2**64 - 1,
            "ip": "81.2.69.160",
            "pin_id": 4242,
            "pin": pin,
        },
        {
            "event_id": 9_000_000_000_000_000_002,
            "event_type": "repin",
            "ts": 1_700_000_001_000,
            "user_id": 77,
            "ip": "81.2.69.160",
            "pin_id": "4242",
            "board_id": 18,
        },
        # The same repin resent by a server that logs ids as strings: a duplicate.
        {
            "event_id": "9000000000000000002",
            "event_type": "repin",
            "ts": 1_700_000_001_000,
            "user_id": "77",
            "ip": "81.2.69.160",
            "pin_id": 4242,
            "board_id": "18",
        },
    ]
    lines = [orjson.dumps(e) for e in events]
    keys = [line_key(line) for line in lines]
    assert keys == [b"4242"] * 3
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.produce(list(zip(keys, lines, strict=True)))
    await pipeline.wait_for_rows({"pin": 1, "repin": 1, "comment": 0, "like": 0, "login": 0})
    await asyncio.sleep(2)  # a duplicate would have landed by now

    produced = await pipeline.read_topic(pipeline.settings.kafka.events_topic)
    assert len({r.partition for r in produced}) == 1
    assert await pipeline.sql("SELECT pin_id, user_id, board_id, category FROM pins") == [
        ("4242", "18446744073709551615", "17", "travel")
    ]
    assert await pipeline.sql("SELECT event_id, pin_id, user_id, board_id, category FROM repins") == [
        ("9000000000000000002", "4242", "77", "18", "travel")
    ]
    assert worker.metrics()["pinapp_duplicates_dropped_total"] == 1


async def test_ids_differing_in_case_are_different_ids_and_a_trailing_space_is_refused(pipeline: Pipeline) -> None:
    """Ids compare as bytes in dedup, so in every key column too: two pins and two likes whose ids
    differ only in case are four rows, not two (a case-insensitive key would drop one silently, and
    let one pin overwrite the other). PAD SPACE collations ignore trailing spaces, so an id ending
    in one is refused at validation, with its reason."""

    def pin_event(event_id: str, pin_id: str, title: str) -> dict[str, object]:
        pin = {"pin_id": pin_id, "board_id": "b", "user_id": "u", "title": title, "category": "Food",
               "created_at": 1_700_000_000_000}  # fmt: skip
        return {"event_id": event_id, "event_type": "pin", "ts": 1_700_000_000_000, "user_id": "u",
                "ip": "81.2.69.160", "pin_id": pin_id, "pin": pin}  # fmt: skip

    def like(event_id: str, pin_id: str) -> dict[str, object]:
        return {"event_id": event_id, "event_type": "like", "ts": 1_700_000_001_000, "user_id": "u",
                "ip": "81.2.69.160", "pin_id": pin_id}  # fmt: skip

    events = [
        pin_event("aZ3k", "pQ", "upper"),
        pin_event("Az3K", "Pq", "lower"),
        like("l-x", "pQ"),
        like("L-X", "pQ"),
        like("e1 ", "pQ"),  # refused: "e1 " and "e1" are one key under PAD SPACE
    ]
    lines = [orjson.dumps(e) for e in events]
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.produce(list(zip([line_key(line) for line in lines], lines, strict=True)))
    await pipeline.wait_for_rows({"pin": 2, "like": 2})
    await asyncio.sleep(2)
    assert sorted(await pipeline.sql("SELECT pin_id, title FROM pins")) == [("Pq", "lower"), ("pQ", "upper")]
    assert sorted(r[0] for r in await pipeline.sql("SELECT event_id FROM likes")) == ["L-X", "l-x"]
    dlq = await pipeline.read_topic(pipeline.settings.kafka.dlq_topic)
    assert len(dlq) == 1 and b'"e1 "' in dlq[0].value
    reason = dict(dlq[0].headers)[HEADER_PREFIX + "reason"].decode()
    assert "space" in reason, reason
