"""The commit rule: never past an offset no stream acknowledged, head or not, whatever the
committed offset; and the hole guard's clock."""

from __future__ import annotations

from pinapp.topology.faust_ext.guards import HoleWatch, next_commit


def test_the_run_that_starts_at_the_base_is_committed() -> None:
    assert next_commit([10, 11, 12], 10) == (13, 3)
    assert next_commit([10, 11, 12, 14, 15], 10) == (13, 3)  # stops at the first hole
    assert next_commit([], 10) == (None, 0)


def test_a_one_offset_hole_at_the_head_is_not_committed_past() -> None:
    # faust's own check (min - committed > 1) commits 13 here, past offset 10.
    assert next_commit([11, 12], 10) == (None, 0)
    assert next_commit([12, 13, 14], 10) == (None, 0)


def test_a_partition_committed_at_zero_or_never_starts_at_its_log_start() -> None:
    # faust records a commit at 0 as None and then makes no head check at all.
    assert next_commit([0, 1, 2], 0) == (3, 3)
    assert next_commit([1, 2], 0) == (None, 0)  # offset 0 never acknowledged
    assert next_commit([7, 8], 5) == (None, 0)  # log start 5 (retention): 5 and 6 missing
    assert next_commit([5, 6], 5) == (7, 2)


def test_an_unknown_base_commits_nothing() -> None:
    assert next_commit([0, 1, 2], None) == (None, 0)


def test_offsets_acked_again_below_the_base_are_consumed_without_moving() -> None:
    assert next_commit([7, 8, 10, 11], 10) == (12, 4)
    assert next_commit([7, 8, 11], 10) == (None, 2)


def test_duplicate_acks_do_not_break_the_run() -> None:
    assert next_commit([10, 10, 11, 12, 12], 10) == (13, 5)


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
