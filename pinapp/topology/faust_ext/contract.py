"""The contract of pinapp's consumer mixins: what each needs from faust's consumer and the others.

:class:`ConsumerContract` is the base the mixins (handoff, guards, partitions) are checked
against, and mypy checks it against faust's consumer wherever :class:`~.app.PinConsumer` mixes
them in: a faust upgrade that changes one of these names or types fails ``make lint``.
At run time the mixins derive from ``object`` (:data:`MixinBase`), so nothing here shadows faust.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, MutableMapping, MutableSet, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from faust.types import TP, AppT, Message, TransportT
from faust.types.transports import ConsumerCallback, TPorTopicSet
from intervaltree import IntervalTree
from mode.services import WaitArgT, WaitResults
from mode.types import DiagT
from mode.utils.logging import CompositeLogger
from mode.utils.times import Seconds

__all__ = ["ConsumerContract", "MixinBase"]


class ConsumerContract(Protocol):
    """faust's aiokafka consumer as the mixins use it, then what the mixins give each other."""

    # -- faust's Consumer (faust/transport/consumer.py) and mode's Service ----------------------
    app: AppT
    transport: TransportT
    log: CompositeLogger
    diag: DiagT
    callback: ConsumerCallback
    commit_interval: float
    consumer_stopped_errors: ClassVar[tuple[type[BaseException], ...]]
    suspend_flow: asyncio.Event
    _thread: Any  # the aiokafka driver's AIOKafkaConsumerThread (faust declares it twice, differently)
    _acked: MutableMapping[TP, list[int]]
    _acked_index: MutableMapping[TP, set[int]]
    _gap: MutableMapping[TP, IntervalTree]
    _read_offset: MutableMapping[TP, int | None]
    _committed_offset: MutableMapping[TP, int | None]
    _unacked_messages: MutableSet[Message]
    _waiting_for_ack: asyncio.Future | None
    _commit_every: int | None
    _n_acked: int

    @property
    def should_stop(self) -> bool: ...
    def assignment(self) -> set[TP]: ...
    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]: ...
    def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]: ...
    async def commit(self, topics: TPorTopicSet | None = None, start_new_transaction: bool = True) -> bool: ...
    async def sleep(self, n: Seconds) -> None: ...
    async def wait_first(self, *coros: WaitArgT, timeout: Seconds | None = None) -> WaitResults: ...  # noqa: ASYNC109 - mode's
    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None: ...

    # -- the mixins' to each other ---------------------------------------------------------------
    _first_delivered: dict[TP, int]  # handoff: first offset handed over since the last seek of all
    _log_start: dict[TP, int]  # guards: the commit base of a partition never committed

    async def refetch(self, tp: TP, offset: int) -> None: ...  # handoff
    async def learn_log_starts(self, tps: Sequence[TP]) -> None: ...  # guards
    async def _refetch_skipped(self, tp: TP, first: int, offset: int) -> bool: ...  # guards
    async def _in_consumer_thread_seek(self, tp: TP, offset: int) -> None: ...  # partitions


if TYPE_CHECKING:
    MixinBase = ConsumerContract
else:
    MixinBase = object
