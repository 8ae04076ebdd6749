"""Table recovery that seeks the stream partitions before any of their records are handed over.

The cause of the stuck-commit hole (faust-streaming #596; 0.15.3's ``faust/tables/recovery.py``).
In an app with tables, every branch of ``Recovery._restart_recovery`` turns flow on ("Resuming
flow...") and only then runs ``on_recovery_completed``, which

1. resumes the stream partitions (``consumer.resume_partitions``),
2. awaits ``consumer.perform_seek()`` to the committed offsets,
3. calls ``app.flow_control.resume()``, which clears every stream and channel queue.

Flow is on during step 2, so the fetch loop goes on handing over the batch it had fetched
(``getmany`` stops only when flow stops or the generation changes). A record handed over
after the seek's reset of the read offset moves it past the records the seek fetches again,
and those are dropped as already read; records still queued at step 3 are dropped from
their queues and never acked. Either way the acked offsets have a hole: faust's commit
sticks at a large one and commits straight past a one-offset one. (``archive_app``, without
tables, resumes through ``_resume_streams``, which seeks first.)

The fix, here: stop flow before step 1. Then the batch in hand is abandoned (``getmany``
breaks on flow off; a blocked hand-off is abandoned on ``suspend_flow``), the seek resets
the read offsets with nothing delivering, step 3 clears queues that nothing can refill
before it, and faust's own ``consumer.resume_flow()`` right after it turns flow back on. The
fetch loop's seek epochs (:mod:`pinapp.topology.faust_ext.handoff`) drop, besides, any record of a
batch fetched before a seek, whoever seeks.

``on_recovery_completed`` is extended, not copied; its source is fingerprinted
(:mod:`pinapp.topology.faust_ext.fingerprints`), since the fix depends on its order.
"""

from __future__ import annotations

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery

__all__ = ["SeekFirstRecovery", "SeekFirstTableManager"]


class SeekFirstRecovery(Recovery):
    """faust's ``Recovery``, with flow stopped while stream partitions are sought."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        # faust resumes flow itself at the end, after the seek and the queue clearing.
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)


class SeekFirstTableManager(TableManager):
    """faust's ``TableManager`` whose recovery is :class:`SeekFirstRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
