"""JSON views of the topology's tables, answered for the whole cluster by any worker.

Design notes: docs/architecture.md, "pinapp/web/table_views.py".
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import aiohttp
from faust.types import CollectionT
from faust.web import Request, Response, View
from prometheus_client import REGISTRY
from yarl import URL

from pinapp.adapters import web_auth
from pinapp.domain.dedup import is_expired
from pinapp.domain.table_values import SeenEvent
from pinapp.errors import PinappError
from pinapp.topology.app import app, settings
from pinapp.topology.faust_ext import open_partition_dbs, raw_get
from pinapp.topology.topics import events_topic
from tables import pin_by_id, seen_event_ids

__all__ = ["DedupClusterView", "DedupLocalView", "DedupView", "PinView", "TableView", "TablesView"]

MAX_KEY_LEN: Final = 64  # the event schema's limit for ids
_FORWARD_TIMEOUT: Final = aiohttp.ClientTimeout(total=5)


class BadParameter(PinappError, ValueError):
    """A request parameter is missing or malformed (answered ``400``)."""


def _valid_id(value: str | None, name: str) -> str:
    if not value:
        raise BadParameter(f"{name} is required")
    if len(value) > MAX_KEY_LEN or not value.isprintable():
        raise BadParameter(f"{name} must be 1-{MAX_KEY_LEN} printable characters")
    return value


def _owners(table: CollectionT) -> dict[str, list[int]]:
    """Worker URL -> the table partitions it holds actively, from the last assignment."""
    topic = table.changelog_topic.get_topic_name()
    return {
        str(url): sorted(parts)
        for url, assignment in app.router.table_metadata(table.name).items()
        for name, parts in assignment.items()
        if name == topic and parts
    }


def _local_partitions(table: CollectionT) -> dict[str, list[int]]:
    topic = table.changelog_topic.get_topic_name()
    return {
        "active": sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic),
        "standby": sorted(tp.partition for tp in app.assignor.assigned_standbys() if tp.topic == topic),
    }


def _estimated_keys(table: CollectionT, partition: int) -> int | None:
    """RocksDB's estimate of a local partition's keys (exact counting is a full scan)."""
    db = open_partition_dbs(table).get(partition)
    if db is None:
        return None
    return int(db.property_int_value("rocksdb.estimate-num-keys") or 0)


def _describe(table: CollectionT) -> dict[str, Any]:
    return {
        "name": table.name,
        "help": table.help,
        "partitions": table.partitions or app.conf.topic_partitions,
        "changelog_topic": table.changelog_topic.get_topic_name(),
        "owners": _owners(table),
    }


async def _forward(view: View, request: Request, url: URL) -> Response:
    """The owning worker's answer to the same request; ``503`` if it does not answer."""
    target = request.url.with_scheme(url.scheme).with_host(url.host or "127.0.0.1").with_port(url.port)
    try:
        headers = web_auth.peer_headers(settings.worker, target)
        async with app.http_client.get(target, timeout=_FORWARD_TIMEOUT, headers=headers) as response:
            return view.text(await response.text(), content_type=response.content_type, status=response.status)
    except web_auth.InsecureForward as exc:
        return view.error(503, str(exc))
    except (TimeoutError, aiohttp.ClientError) as exc:
        return view.error(503, f"the worker owning this key ({url}) did not answer: {exc!r}; retry shortly")


def _owner_of(table: CollectionT, routing_key: bytes) -> URL | None:
    """The URL of the worker holding ``routing_key``'s partition of ``table``; None if unassigned."""
    try:
        return URL(str(app.assignor.key_store(table.changelog_topic.get_topic_name(), routing_key)))
    except KeyError:
        return None


def _is_self(url: URL) -> bool:
    me = URL(str(app.conf.canonical_url))
    return (url.host, url.port) == (me.host, me.port)


async def _routed(view: View, request: Request, table: CollectionT, routing_key: bytes) -> Response | None:
    """Forward to the owner of ``routing_key``, or ``None`` when this worker is the owner."""
    owner = _owner_of(table, routing_key)
    if owner is None:
        return view.error(503, "the cluster is rebalancing: no worker owns this key yet; retry shortly")
    if _is_self(owner):
        return None
    return await _forward(view, request, owner)


@app.page("/tables")
class TablesView(View):
    """Every table of the topology and where its partitions live."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.json(
            {
                "tables": [_describe(t) for t in sorted(app.tables.values(), key=lambda t: t.name)],
                "served_by": str(app.conf.canonical_url),
            }
        )


@app.page("/tables/{name}")
class TableView(View):
    """One table: its layout, plus this worker's partitions and their estimated sizes."""

    async def get(self, request: Request, name: str, **kwargs: Any) -> Response:
        table = app.tables.get(name)
        if table is None:
            return self.error(404, f"no table {name!r}; see /tables")
        local = _local_partitions(table)
        doc = _describe(table) | {
            "local": local,
            "local_keys_estimate": {str(p): _estimated_keys(table, p) for p in local["active"] + local["standby"]},
            "served_by": str(app.conf.canonical_url),
        }
        return self.json(doc)


@app.page("/pins/{pin_id}")
class PinView(View):
    """A pin from the pin cache: ``200`` with the pin, ``404`` when the cache has none."""

    async def get(self, request: Request, pin_id: str, **kwargs: Any) -> Response:
        try:
            _valid_id(pin_id, "pin_id")
        except BadParameter as exc:
            return self.error(400, str(exc))
        forwarded = await _routed(self, request, pin_by_id, pin_id.encode())
        if forwarded is not None:
            return forwarded
        pin = pin_by_id.get(pin_id.encode())
        if pin is None:
            return self.error(404, f"pin {pin_id!r} is not in the pin cache")
        return self.json({"pin": pin.asdict(), "served_by": str(app.conf.canonical_url)})


def _dedup_local() -> dict[str, Any]:
    local = _local_partitions(seen_event_ids)
    return {
        "url": str(app.conf.canonical_url),
        "active": {str(p): _estimated_keys(seen_event_ids, p) for p in local["active"]},
        "standby": local["standby"],
        "duplicates_dropped": REGISTRY.get_sample_value("pinapp_duplicates_dropped_total") or 0.0,
    }


# Registered before /dedup/{event_id}, which would otherwise take "local" for an event id.
@app.page("/dedup/local")
class DedupLocalView(View):
    """This worker's share of the dedup state (``/dedup`` gathers it from every worker)."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.json(_dedup_local())


@app.page("/dedup/{event_id}")
class DedupView(View):
    """Whether an event was accepted, and when and where first.

    ``key`` is the event's Kafka key (its pin_id, else its user_id): dedup state lives in
    the partition of the event's record, which the event_id alone does not tell.
    """

    async def get(self, request: Request, event_id: str, **kwargs: Any) -> Response:
        try:
            _valid_id(event_id, "event_id")
            key = _valid_id(request.query.get("key"), "key (the event's pin_id, else its user_id)")
        except BadParameter as exc:
            return self.error(400, str(exc))
        forwarded = await _routed(self, request, seen_event_ids, key.encode())
        if forwarded is not None:
            return forwarded
        # The changelog's partition of the key is the source partition (faust co-partitions them).
        changelog = seen_event_ids.changelog_topic.get_topic_name()
        partition = app.producer.key_partition(changelog, key.encode()).partition
        raw = raw_get(seen_event_ids, partition, event_id.encode())
        if raw is None:
            return self.error(404, f"event {event_id!r} is not in the dedup state of partition {partition}")
        try:
            seen = SeenEvent.from_bytes(raw)
        except ValueError as exc:
            return self.error(404, f"event {event_id!r} has an unreadable dedup entry ({exc}); it counts as unseen")
        horizon_ms = int(settings.pipeline.dedup_horizon_s * 1000)
        return self.json(
            {
                "event_id": event_id,
                "first_accepted_at_ms": seen.seen_at_ms,
                "source": {"topic": events_topic.get_topic_name(), "partition": seen.partition, "offset": seen.offset},
                "expired": is_expired(seen, int(time.time() * 1000), horizon_ms),
                "served_by": str(app.conf.canonical_url),
            }
        )


@app.page("/dedup")
class DedupClusterView(View):
    """Dedup state of the whole cluster: entries per partition and duplicates dropped."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        urls = sorted(set(_owners(seen_event_ids)) | {str(app.conf.canonical_url)})
        results = await asyncio.gather(*(self._one(URL(u)) for u in urls))
        answered = [doc for doc in results if isinstance(doc, dict)]
        unreachable = [{"url": u, "error": doc} for u, doc in zip(urls, results, strict=True) if isinstance(doc, str)]
        partitions = {
            p: {"entries_estimate": n, "owner": doc["url"]} for doc in answered for p, n in doc["active"].items()
        }
        return self.json(
            {
                "horizon_s": settings.pipeline.dedup_horizon_s,
                "partitions": dict(sorted(partitions.items(), key=lambda kv: int(kv[0]))),
                "entries_estimate": sum(v["entries_estimate"] or 0 for v in partitions.values()),
                "duplicates_dropped_since_start": sum(doc["duplicates_dropped"] for doc in answered),
                "workers": answered,
                "unreachable": unreachable,
            },
            status=200 if not unreachable else 503,
        )

    async def _one(self, url: URL) -> dict[str, Any] | str:
        if _is_self(url):
            return _dedup_local()
        target = url / "dedup" / "local"
        try:
            headers = web_auth.peer_headers(settings.worker, target)
            async with app.http_client.get(target, timeout=_FORWARD_TIMEOUT, headers=headers) as response:
                response.raise_for_status()
                doc: dict[str, Any] = await response.json()
                return doc
        except web_auth.InsecureForward as exc:
            return str(exc)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            return repr(exc)
