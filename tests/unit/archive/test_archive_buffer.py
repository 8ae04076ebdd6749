"""Cut decisions of one partition's buffer: thresholds, age, and forced (adopted) cuts."""

from __future__ import annotations

from pinapp.archive.buffer import Cut, CutLimits, ForcedCut, PartitionBuffer
from pinapp.archive.records import ArchivedRecord, decode, encode
from pinapp.domain.dead_letters import REPLAY_HEADER, is_replay

LIMITS = CutLimits(max_events=5, max_bytes=10_000, max_age_s=60.0)


def _rec(offset: int, size: int = 10) -> ArchivedRecord:
    return ArchivedRecord("events", 0, offset, 1_709_251_200_000 + offset, b"k", b"x" * size)


class _Delivery:
    def __init__(self, log: list[int] | None = None, offset: int = -1) -> None:
        self.log, self.offset = log, offset

    def ack(self) -> None:
        if self.log is not None:
            self.log.append(self.offset)


def _feed(buffer: PartitionBuffer, offsets: range) -> list[tuple[int, int]]:
    cuts: list[Cut] = []
    for o in offsets:
        cuts.extend(buffer.add(_rec(o), _Delivery()))
    return [(c.first, c.last) for c in cuts]


def test_count_and_byte_thresholds_close_cuts() -> None:
    assert _feed(PartitionBuffer("events", 0, "jsonl.gz", LIMITS), range(12)) == [(0, 4), (5, 9)]
    by_bytes = PartitionBuffer("events", 0, "jsonl.gz", CutLimits(1000, 25, 60.0))
    assert _feed(by_bytes, range(6)) == [(0, 2), (3, 5)]  # 11 bytes per record


def test_age_closes_a_cut_only_once_old_enough() -> None:
    now = [100.0]
    buffer = PartitionBuffer("events", 0, "jsonl.gz", LIMITS, clock=lambda: now[0])
    _feed(buffer, range(3))
    assert buffer.due() is None
    now[0] += 61
    cut = buffer.due()
    assert cut is not None and (cut.first, cut.last) == (0, 2)
    assert buffer.due() is None and len(buffer) == 0


def test_deliveries_travel_with_their_records() -> None:
    acked: list[int] = []
    buffer = PartitionBuffer("events", 0, "jsonl.gz", LIMITS)
    cuts = []
    for o in range(5):
        cuts.extend(buffer.add(_rec(o), _Delivery(acked, o)))
    for delivery in cuts[0].deliveries:
        delivery.ack()
    assert acked == [0, 1, 2, 3, 4]


def test_a_refused_cut_is_cut_again_where_the_other_writers_intent_says() -> None:
    buffer = PartitionBuffer("events", 0, "jsonl.gz", LIMITS)
    (refused,) = [c for o in range(5) for c in buffer.add(_rec(o), _Delivery(offset=o))]  # 0..4
    for o in (5, 6):  # buffered behind it
        assert buffer.add(_rec(o), _Delivery(offset=o)) == []
    # Another writer's intent at 0 names 0..2: that cut is complete now, then 3..6 is a run again.
    again = buffer.yield_to(refused, ForcedCut(0, 2, "parquet"))
    assert [(c.first, c.last, c.fmt) for c in again] == [(0, 2, "parquet")]
    assert [r.offset for r in buffer.records] == [3, 4, 5, 6]
    assert [d.offset for d in buffer.deliveries] == [3, 4, 5, 6]  # type: ignore[attr-defined]
    # Their cut ends past what is buffered: nothing is cut until its last offset comes.
    longer = PartitionBuffer("events", 0, "jsonl.gz", LIMITS)
    (refused,) = [c for o in range(5) for c in longer.add(_rec(o), _Delivery())]
    assert longer.yield_to(refused, ForcedCut(0, 8, "jsonl.gz")) == []
    assert longer.due() is None and longer.take_all() == []  # never cut short of the intent
    assert _feed(longer, range(5, 10)) == [(0, 8)]


def test_forced_cuts_win_over_thresholds_and_age() -> None:
    now = [0.0]
    buffer = PartitionBuffer.adopting("events", 0, "parquet", LIMITS, [(10, 21, "jsonl.gz"), (22, 23, "jsonl.gz")])
    buffer.clock = lambda: now[0]
    # From offset 8 (say the committed offset): 8-9 run up to the first intent, then exactly the intents.
    cuts: list[Cut] = []
    for o in range(8, 16):
        cuts.extend(buffer.add(_rec(o), _Delivery()))
    assert [(c.first, c.last, c.fmt) for c in cuts] == [(8, 9, "parquet")]
    now[0] += 1000
    assert buffer.due() is None, "a forced cut is never closed by age"
    assert buffer.take_all() == [], "nor cut short at shutdown"
    for o in range(16, 30):
        cuts.extend(buffer.add(_rec(o), _Delivery()))
    assert [(c.first, c.last, c.fmt) for c in cuts] == [
        (8, 9, "parquet"),
        (10, 21, "jsonl.gz"),
        (22, 23, "jsonl.gz"),
        (24, 28, "parquet"),
    ]


def test_a_forced_cut_whose_last_offset_is_missing_closes_at_the_next_record() -> None:
    buffer = PartitionBuffer.adopting("events", 0, "jsonl.gz", LIMITS, [(0, 3, "jsonl.gz")])
    cuts: list[Cut] = []
    for o in (0, 1, 2, 7):  # 3 was compacted away
        cuts.extend(buffer.add(_rec(o), _Delivery()))
    assert [(c.first, c.last) for c in cuts] == [(0, 2)]
    assert [r.offset for r in buffer.records] == [7]


def test_take_all_writes_the_run_before_a_partial_forced_cut_and_holds_the_rest() -> None:
    buffer = PartitionBuffer.adopting("events", 0, "jsonl.gz", CutLimits(100, 10_000, 60.0), [(3, 9, "jsonl.gz")])
    assert _feed(buffer, range(2)) == []
    assert [(c.first, c.last) for c in buffer.take_all()] == [(0, 1)]
    assert _feed(buffer, range(2, 6)) == [(2, 2)]  # 2 closes the run before the forced cut
    assert buffer.take_all() == [], "3..5 of the forced cut 3-9 are not cut short"
    assert [r.offset for r in buffer.records] == [3, 4, 5] and len(buffer.deliveries) == 3


def test_both_formats_round_trip_bytes_exactly_and_deterministically() -> None:
    records = [
        ArchivedRecord(
            "events-dlq",
            3,
            o,
            1_709_251_200_000 + o,
            None if o == 2 else b"k\xff",
            b"\x00\xfe not utf-8" if o % 2 else b'{"a": 1}',
            (("pinapp.dlq.reason", b"not_json"), ("raw", b"\xff")) if o % 3 else (),
        )
        for o in range(6)
    ]
    for fmt in ("jsonl.gz", "parquet"):
        body = encode(records, fmt)
        assert body == encode(records, fmt)
        assert list(decode(body, fmt)) == records


def test_replay_header_is_recognised_in_either_header_shape() -> None:
    assert is_replay([(REPLAY_HEADER, b"events:0:1")])
    assert is_replay({REPLAY_HEADER: b"x"})
    assert not is_replay([("other", b"")]) and not is_replay(None)
