"""``PinApp``: the faust App pinapp runs, built from pinapp's settings alone.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/app.py".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, AppT, TransportT

from pinapp.topology.faust_ext import failover
from pinapp.topology.faust_ext.guards import CommitGuards
from pinapp.topology.faust_ext.handoff import HandoffConsumer
from pinapp.topology.faust_ext.partitions import PartitionControl
from pinapp.topology.faust_ext.recovery import SeekFirstTableManager

__all__ = ["PinApp", "PinConsumer", "pin_consumer"]


class PinConsumer(HandoffConsumer, CommitGuards, PartitionControl, aiokafka_driver.Consumer):
    """faust's aiokafka consumer with pinapp's fetch loop, commit rule and partition control."""

    #: Wall-clock time of this worker's last successful offset commit (``/health``).
    last_commit_at: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_handoff()
        self._init_guards()

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        committed = await super()._commit(offsets)
        if committed:
            self.last_commit_at = time.time()
        return bool(committed)

    def group_coordinator_known(self) -> bool | None:
        """Whether aiokafka knows the consumer group's coordinator now (``None``: no consumer yet).

        aiokafka forgets it on any failed request to it and looks it up again at once: unknown
        for more than a moment means no broker answers (:func:`pinapp.topology.broker.watch_brokers`).
        """
        consumer = getattr(self._thread, "_consumer", None)
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is None:
            return None
        return getattr(coordinator, "coordinator_id", None) is not None

    def committed_offsets(self) -> dict[TP, int | None]:
        """The next offset this worker committed, per partition (``None``: nothing, or 0)."""
        return dict(self._committed_offset)


class _Transport(aiokafka_driver.Transport):
    Consumer = PinConsumer


class PinApp(faust.App):
    """``faust.App`` with :class:`PinConsumer` for ``kafka://`` brokers and seek-first recovery.

    ``commit_guards=False`` turns the two commit guards off (the race reproduction only).
    """

    def __init__(self, *args: Any, commit_guards: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("TableManager", SeekFirstTableManager)
        failover.install()  # a hung broker is passed over, not waited on (docs/reliability.md)
        super().__init__(*args, env={}, **kwargs)
        self.commit_guards = commit_guards
        self.before_wait_empty: list[Callable[[], Awaitable[None]]] = []

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        for hook in self.before_wait_empty:
            await hook()
        await super()._consumer_wait_empty(consumer, logger)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


def pin_consumer(app: AppT) -> PinConsumer:
    """``app``'s consumer, typed as pinapp's: every pinapp app is a :class:`PinApp`, whose consumer this is."""
    return cast(PinConsumer, app.consumer)
