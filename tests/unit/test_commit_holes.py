"""The commit guard's rules: a hole of unacknowledged offsets holds the commit, and one that
nothing in flight explains is fetched again once it has lasted."""

from __future__ import annotations

from pinapp.transport import HoleWatch, unacked_hole


def test_no_hole_when_the_acked_run_starts_at_the_committed_offset() -> None:
    assert unacked_hole([10, 11, 12], 10, has_gap=False) is None
    assert unacked_hole([], 10, has_gap=False) is None
    assert unacked_hole([3, 4], None, has_gap=False) is None  # nothing committed yet: faust decides


def test_one_missing_offset_is_a_hole_too() -> None:
    # faust's own check (min - committed > 1) would commit past offset 10 here.
    assert unacked_hole([11, 12], 10, has_gap=False) == 11
    assert unacked_hole([14, 12, 13], 10, has_gap=False) == 12


def test_faust_gap_bookkeeping_decides_for_compacted_topics() -> None:
    assert unacked_hole([14, 15], 10, has_gap=True) is None


def test_a_hole_is_overdue_once_it_lasted_with_nothing_in_flight() -> None:
    now = [100.0]
    watch = HoleWatch(clock=lambda: now[0])
    assert not watch.overdue("tp", 10, in_flight=False, after_s=5)  # first seen
    now[0] = 104.0
    assert not watch.overdue("tp", 10, in_flight=False, after_s=5)
    now[0] = 105.5
    assert watch.overdue("tp", 10, in_flight=False, after_s=5)  # reported ...
    assert not watch.overdue("tp", 10, in_flight=False, after_s=5)  # ... once; the clock restarts


def test_an_in_flight_message_or_a_moving_commit_resets_the_clock() -> None:
    now = [0.0]
    watch = HoleWatch(clock=lambda: now[0])
    watch.overdue("tp", 10, in_flight=False, after_s=5)
    now[0] = 6.0
    assert not watch.overdue("tp", 10, in_flight=True, after_s=5)  # being processed
    assert not watch.overdue("tp", 10, in_flight=False, after_s=5)
    now[0] = 12.0
    assert not watch.overdue("tp", 20, in_flight=False, after_s=5)  # the commit moved: a new hole
    now[0] = 17.5
    assert watch.overdue("tp", 20, in_flight=False, after_s=5)
