"""The pictures: the engagement dashboard at ``/`` and the live globe of repins at ``/globe``.

Design notes: docs/architecture.md, "pinapp/web/pages.py".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Final

import orjson
from aiohttp import web
from faust.web import Request, Response, View
from mode import Service

from pinapp.adapters.db import create_pool
from pinapp.adapters.queries import (
    EXPERIMENT_ENGAGEMENT_SQL,
    NAMED_QUERIES,
    NEW_USERS_SQL,
    experiment_params,
    freshness,
    query_params,
    run_query,
    srm_verdict,
)
from pinapp.domain.experiments import load_experiments
from pinapp.errors import ConfigError, DatabaseError
from pinapp.telemetry import metrics
from pinapp.topology.app import app, settings
from pinapp.web.live_feed import LiveFeed

__all__ = ["PAGES", "Page", "frontend_dir"]

#: Files the pages load from the npm packages, by the name they are served under.
VENDOR_FILES: Final = {
    "d3-array.min.js": "d3-array/dist/d3-array.min.js",
    "d3-geo.min.js": "d3-geo/dist/d3-geo.min.js",
    "topojson-client.min.js": "topojson-client/dist/topojson-client.min.js",
    "countries-110m.json": "world-atlas/countries-110m.json",
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
}
_CONTENT_TYPES: Final = {
    ".js": "text/javascript",
    ".json": "application/json",
    ".css": "text/css",
    ".html": "text/html",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
MAX_MINUTES: Final = 7 * 24 * 60
MAX_LIMIT: Final = 5 * (MAX_MINUTES + 2)  # events-per-minute: a row per type and minute of the window
KEEPALIVE_S: Final = 15.0


@dataclass(frozen=True)
class Page:
    """A page: ``frontend/src/<name>.html`` (its header controls and ``<main>``) in ``layout.html``."""

    path: str
    name: str  # its .html and .js in frontend/src
    title: str
    nav: str  # its link's text
    vendor: tuple[str, ...] = ()  # VENDOR_FILES its script needs
    status: str = "loading…"


PAGES: Final = (
    Page("/", "dashboard", "engagement", "Dashboard", ("chart.umd.min.js",)),
    Page(
        "/globe",
        "globe",
        "live repins",
        "Live globe",
        ("d3-array.min.js", "d3-geo.min.js", "topojson-client.min.js"),
        "connecting…",
    ),
    Page("/experiments", "experiments", "experiments", "Experiments", ("chart.umd.min.js",)),
)
_MORE_LINKS: Final = (("/tables", "Tables"), ("/health", "Health"), ("/metrics", "Metrics"))


def _page_response(view: View, page: Page) -> Response:
    src = frontend_dir() / "src"
    try:
        layout = Template((src / "layout.html").read_text())
        fragment = (src / f"{page.name}.html").read_text()
    except FileNotFoundError as exc:
        return view.error(503, f"{exc.filename} is missing: the pages are in frontend/src")
    controls, main, rest = fragment.partition("<main")
    links = [(p.path, p.nav) for p in PAGES] + list(_MORE_LINKS)
    here = ' class="here"'
    nav = "".join(f'<a href="{href}"{here if href == page.path else ""}>{text}</a>' for href, text in links)
    html = layout.substitute(
        title=page.title,
        nav=nav,
        controls=controls.strip(),
        status=page.status,
        main=(main + rest).strip(),
        vendor="\n  ".join(f'<script src="/vendor/{name}"></script>' for name in page.vendor),
        name=page.name,
    )
    response = view.bytes(html.encode(), content_type="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response


def frontend_dir() -> Path:
    """``worker.frontend_dir``, else the ``frontend/`` folder next to the package."""
    return settings.worker.frontend_dir or Path(__file__).resolve().parents[2] / "frontend"


def _file_response(view: View, path: Path) -> Response:
    if not path.is_file():
        return view.error(503, f"{path} is missing: run `make setup` (it runs `npm ci` in frontend/)")
    content_type = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    response = view.bytes(path.read_bytes(), content_type=content_type)
    response.headers["Cache-Control"] = "no-cache"
    return response


def _page_view(page: Page) -> type[View]:
    class PageView(View):
        async def get(self, request: Request, **kwargs: Any) -> Response:
            return _page_response(self, page)

    PageView.__name__ = f"{page.name.title()}Page"
    PageView.__doc__ = f"The {page.title} page."
    return PageView


for _page in PAGES:
    app.page(_page.path)(_page_view(_page))


@app.page("/static/{name}")
class StaticFile(View):
    """The pages' own scripts and styles (``frontend/src``); nothing outside it."""

    async def get(self, request: Request, name: str, **kwargs: Any) -> Response:
        src = frontend_dir() / "src"
        path = (src / name).resolve()
        if path.parent != src.resolve() or path.suffix not in _CONTENT_TYPES or not path.is_file():
            return self.error(404, f"no static file {name!r}")
        return _file_response(self, path)


@app.page("/vendor/{name}")
class VendorFile(View):
    """A file of an npm package the pages use (see :data:`VENDOR_FILES`)."""

    async def get(self, request: Request, name: str, **kwargs: Any) -> Response:
        relative = VENDOR_FILES.get(name)
        if relative is None:
            return self.error(404, f"no vendor file {name!r}; one of: {', '.join(VENDOR_FILES)}")
        return _file_response(self, frontend_dir() / "node_modules" / relative)


# -- dashboard data --------------------------------------------------------------------


class _QueryPool(Service):
    """A small read pool for the dashboard, opened on first use, closed with the worker."""

    pool: Any = None

    async def on_stop(self) -> None:
        if self.pool is not None:
            self.pool.close()
            await self.pool.wait_closed()


_lock = asyncio.Lock()
_query_pool: _QueryPool | None = None
_feed: LiveFeed | None = None


async def _read_pool() -> Any:
    global _query_pool  # noqa: PLW0603 - one pool per worker process, made on first use
    async with _lock:
        if _query_pool is None:
            service = _QueryPool(loop=app.loop, beacon=app.beacon)
            service.pool = await create_pool(settings.db, size=2, reader=True)  # DatabaseError if it cannot
            await app.add_runtime_dependency(service)
            _query_pool = service
    return _query_pool.pool


def _int_param(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if not 1 <= value <= high:
        raise ValueError(f"{name} must be between 1 and {high}, got {value}")
    return value


@app.page("/api/queries")
class QueriesView(View):
    """The named queries the dashboard (and ``pinapp query``) can run."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.json({"queries": [{"name": q.name, "description": q.description} for q in NAMED_QUERIES.values()]})


@app.page("/api/experiments")
class ExperimentsView(View):
    """Every experiment of ``experiments.definitions_file`` with its live allocation, sample-ratio
    verdict, engagement per group and users newly exposed per minute; ``503`` while SingleStore
    does not answer."""

    async def get(self, request: Request, **kwargs: Any) -> Response:
        cfg = settings.experiments
        try:
            defined = load_experiments(cfg.definitions_file) if cfg.definitions_file is not None else ()
        except ConfigError as exc:
            return self.error(503, str(exc))
        out = []
        try:
            pool = await _read_pool()
            for experiment in defined:
                params = experiment_params(experiment.name, experiment.start)
                dialect = settings.db.dialect
                verdict = await srm_verdict(pool, experiment, cfg, dialect=dialect)
                _, engagement = await run_query(pool, EXPERIMENT_ENGAGEMENT_SQL, params, dialect=dialect)
                _, timeline = await run_query(pool, NEW_USERS_SQL, params, dialect=dialect)
                out.append(
                    {
                        "name": experiment.name,
                        "start": experiment.start.isoformat().replace("+00:00", "Z"),
                        "shares": experiment.shares,
                        "users": verdict.users,
                        "expected": verdict.expected,
                        "p_value": verdict.p_value,
                        "mismatch": verdict.mismatch,
                        "verdict": verdict.reason,
                        "engagement": engagement,
                        "new_users_per_minute": timeline,
                    }
                )
        except DatabaseError as exc:
            return self.error(503, str(exc))
        body = {"experiments": out, "srm_p_value": cfg.srm_p_value}
        return self.bytes(orjson.dumps(body, default=str), content_type="application/json")


@app.page("/api/query/{name}")
class QueryView(View):
    """One named query's rows: ``400`` for bad parameters, ``404`` for an unknown name,
    ``503`` while SingleStore does not answer."""

    async def get(self, request: Request, name: str, **kwargs: Any) -> Response:
        query = NAMED_QUERIES.get(name)
        if query is None:
            return self.error(404, f"no query {name!r}; one of: {', '.join(NAMED_QUERIES)}")
        try:
            minutes = _int_param(request, "minutes", 60, MAX_MINUTES)
            limit = _int_param(request, "limit", 10, MAX_LIMIT)
        except ValueError as exc:
            return self.error(400, str(exc))
        started = time.perf_counter()
        try:
            pool = await _read_pool()
            columns, rows = await run_query(
                pool, query.sql, query_params(minutes, limit, settings.trends), dialect=settings.db.dialect
            )
            # the minutes that may still change, for the dashboard to draw as provisional
            edges = await freshness(pool, settings.kafka.events_topic, dialect=settings.db.dialect)
        except DatabaseError as exc:
            return self.error(503, str(exc))
        metrics.WEB_QUERY_SECONDS.labels(query=name).observe(time.perf_counter() - started)
        return self.bytes(
            orjson.dumps(
                {
                    "name": name,
                    "description": query.description,
                    "minutes": minutes,
                    "limit": limit,
                    "alert_score": settings.trends.alert_score,  # a trend query's score that is alerted on
                    "columns": columns,
                    "rows": rows,
                    **edges,
                },
                default=str,
            ),
            content_type="application/json",
        )


# -- the live globe --------------------------------------------------------------------


async def live_feed() -> LiveFeed:
    """This worker's feed of the cluster's repins, started on the first subscriber."""
    global _feed  # noqa: PLW0603 - one feed per worker process, started on first use
    async with _lock:
        if _feed is None:
            feed = LiveFeed(settings.kafka, settings.kafka.live_topic, loop=app.loop, beacon=app.beacon)
            await app.add_runtime_dependency(feed)
            _feed = feed
    return _feed


@app.page("/globe/stream")
class GlobeStream(View):
    """Server-Sent Events: ``ready`` once the feed reads the topic, then one ``data`` message
    per batch of points (a JSON list, see :class:`pinapp.domain.repin_points.RepinPoint`)."""

    async def get(self, request: Request, **kwargs: Any) -> web.StreamResponse:
        feed = await live_feed()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)  # type: ignore[arg-type]  # faust's Request wraps aiohttp's, which prepare takes
        with contextlib.suppress(ConnectionError):  # the browser went away
            async with feed.subscribe() as queue:
                while not feed.ready.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(feed.ready.wait(), KEEPALIVE_S)
                    await response.write(b": waiting for the live topic\n\n")
                await response.write(b"event: ready\ndata: {}\n\n")
                while True:
                    try:
                        points = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        await response.write(b": keepalive\n\n")
                        continue
                    burst = list(points)  # the lists are shared by every subscriber: copy, then extend
                    while not queue.empty():  # a burst goes out as one message
                        burst.extend(queue.get_nowait())
                    await response.write(b"data: " + orjson.dumps(burst) + b"\n\n")
        return response
