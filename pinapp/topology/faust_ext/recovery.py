"""Table recovery that seeks the stream partitions before any of their records are handed over.

Design notes: docs/architecture.md, "pinapp/topology/faust_ext/recovery.py".
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
