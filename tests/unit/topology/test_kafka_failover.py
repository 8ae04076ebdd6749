"""Which broker the failover client asks first (pure logic; the client itself is tested
against the real broker in tests/integration/test_kafka_failover.py)."""

from __future__ import annotations

from pinapp.topology.faust_ext.failover import SUSPECT_S, order_nodes


def test_nodes_suspected_lately_are_asked_last_the_longest_suspected_first() -> None:
    now = 1_000.0
    suspect = {2: now - 1, 3: now - 5}
    for _ in range(20):
        ordered = order_nodes([1, 2, 3, 4], suspect, now)
        assert set(ordered[:2]) == {1, 4}
        assert ordered[2:] == [3, 2]


def test_a_suspicion_expires() -> None:
    now = 1_000.0
    ordered = {tuple(order_nodes([1, 2], {2: now - SUSPECT_S}, now)) for _ in range(200)}
    assert ordered == {(1, 2), (2, 1)}, "an expired suspicion leaves the choice random"


def test_every_node_suspected_still_leaves_them_all_to_ask() -> None:
    assert order_nodes(["bootstrap", 1], {1: 5.0, "bootstrap": 6.0}, 10.0) == [1, "bootstrap"]
    assert order_nodes([], {}, 0.0) == []
