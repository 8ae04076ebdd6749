"""pinapp's changelog-backed tables. Names are stable: the changelog topic is named
``<app id>-<table name>-changelog``, so renaming a table loses its state."""

from tables.dedup import seen_event_ids
from tables.pins import pin_by_id

__all__ = ["pin_by_id", "seen_event_ids"]
