"""The two pages in a real headless browser (Debian's chromium driven by Playwright) against a
running worker on the real stack: repins appear on the globe, the dashboard's charts fill and
move, nothing is fetched from outside the worker, and the console stays clean.

Screenshots go to ``test-output/browser/`` (the README's pictures come from there).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest
from playwright.async_api import Browser, Page, async_playwright

from config import Settings
from pinapp.domain.experiments import load_experiments
from pinapp.domain.geo import GeoLocator
from pinapp.errors import PinappError
from pinapp.tools.generator import GeneratedRecord, GeneratorConfig, TrafficGenerator, Trend, sample_ip_pool
from pinapp.tools.harness import REPO, Pipeline, WorkerProcess, start, traffic
from pinapp.tools.stack.packages import ensure_debian_package

SHOTS = REPO / "test-output" / "browser"
#: The demo's experiments; the served traffic has the demo's allocation bug in checkout_flow.
DEMO_EXPERIMENTS = REPO / "config" / "experiments.toml"
# Chromium as the machine's browser tests run it: no background traffic to Google's hosts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    try:
        chromium = ensure_debian_package("chromium", ["chromium"])
    except PinappError as exc:
        pytest.fail(f"the browser tests need Debian's chromium: {exc}", pytrace=False)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="module")
async def served(
    test_stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Pipeline, WorkerProcess]]:
    pipeline = Pipeline(
        tmp_path_factory.mktemp("browser"), extra_env={"PINAPP_EXPERIMENTS__DEFINITIONS_FILE": str(DEMO_EXPERIMENTS)}
    )
    try:
        yield pipeline, await _serving(pipeline, seed=81, count=3000, trending=True)
    finally:
        pipeline.stop_all()
        await pipeline.drop()


def _trending_traffic(seed: int, count: int) -> tuple[list[GeneratedRecord], dict[str, list[str]]]:
    """``count`` events over the last 40 minutes, one pin taking off 36 minutes in: a baseline
    for the trend queries, and a trend in their last 5 minutes."""
    span_ms = 40 * 60_000
    config = GeneratorConfig(
        seed=seed,
        duplicate_ratio=0.03,
        malformed_ratio=0.01,
        start_ms=int(time.time() * 1000) - span_ms,
        step_ms=span_ms / count,
        trend=Trend(after_s=36 * 60, share=0.3),
        experiments=load_experiments(DEMO_EXPERIMENTS),
        leaks={"checkout_flow": 0.2},
    )
    gen = TrafficGenerator(config, GeoLocator())
    return [next(gen) for _ in range(count)], gen.truth.event_ids


async def _serving(pipeline: Pipeline, *, seed: int, count: int, trending: bool = False) -> WorkerProcess:
    """A started worker whose tables hold ``count`` generated events (over the last 40 minutes,
    with a trend, if ``trending``; else all of them now)."""
    worker = pipeline.worker(0)
    await start(worker)
    if trending:
        records, expected = _trending_traffic(seed, count)
    else:
        records, _, expected = traffic(pipeline, seed=seed, count=count)
    await pipeline.produce(records)
    await pipeline.wait_for_rows({t: len(ids) for t, ids in expected.items()})
    return worker


class PageWatch:
    """Console errors, uncaught exceptions and every host a page talks to."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.hosts.add(urlparse(r.url).hostname or r.url))


@contextlib.asynccontextmanager
async def _page(browser: Browser, worker: WorkerProcess, path: str) -> AsyncIterator[tuple[Page, PageWatch]]:
    page = await browser.new_page(viewport={"width": 1400, "height": 860})
    watch = PageWatch(page)
    try:
        await page.goto(f"http://127.0.0.1:{worker.web_port}{path}")
        yield page, watch
    finally:
        await page.close()
    assert watch.errors == [], watch.errors
    assert watch.hosts == {"127.0.0.1"}, f"the page reached outside the worker: {watch.hosts}"


async def _until(page: Page, js: str, what: str, timeout_s: float = 60) -> Any:
    handle = await page.wait_for_function(js, timeout=timeout_s * 1000)
    assert handle is not None, what
    return await handle.json_value()


def _repins_of(pin_id: str, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` repins of ``pin_id``, from client IPs all over the world (so some face the viewer)."""
    ips = sample_ip_pool(GeoLocator(), random.Random(3), count)
    now_ms = int(time.time() * 1000)
    return [
        (
            pin_id.encode(),
            orjson.dumps(
                {
                    "event_id": f"hot-{pin_id}-{n}",
                    "event_type": "repin",
                    "ts": now_ms,
                    "user_id": f"u{n}",
                    "ip": ip,
                    "pin_id": pin_id,
                    "board_id": "b-hot",
                }
            ),
        )
        for n, ip in enumerate(ips)
    ]


async def test_the_globe_shows_repins_as_they_happen(browser: Browser, served: tuple[Pipeline, WorkerProcess]) -> None:
    pipeline, worker = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with _page(browser, worker, "/globe") as (page, _):
        await page.wait_for_function("document.getElementById('status').textContent === 'live'", timeout=30_000)
        await _until(page, "window.pinappGlobe.land !== null", "the map geometry loaded")
        assert await page.evaluate("window.pinappGlobe.received") == 0

        more, _, _ = traffic(pipeline, seed=82, count=6000)
        producing = asyncio.create_task(pipeline.produce(more, rate=600))
        try:
            await _until(page, "window.pinappGlobe.drawn >= 20", "circles drawn on the visible side")
            await _until(page, "Number(document.getElementById('rate').textContent) > 0", "a repin rate")
            await _until(page, "document.querySelectorAll('#top-countries li').length >= 3", "top countries")
            await _until(page, "document.querySelectorAll('#top-categories li').length >= 3", "top categories")
            before = await page.evaluate("window.pinappGlobe.received")
            await asyncio.sleep(2)
            assert await page.evaluate("window.pinappGlobe.received") > before, "the counter moves while repins flow"
        finally:
            await producing
        # Repins of a pin trending past the alert threshold are drawn gold.
        hot = await _until(page, "window.pinappGlobe.trending.size > 0 && [...window.pinappGlobe.trending]", "trends")
        await pipeline.produce(_repins_of(hot[0], 60))
        await _until(page, "window.pinappGlobe.hotDrawn >= 1", "a trending pin's repin drawn gold")
        assert hot[0] in (await page.text_content("#trending") or "")
        await page.screenshot(path=str(SHOTS / "globe.png"))
        freshness = await page.text_content("#freshness")
        assert freshness and freshness.endswith(" s"), freshness


async def test_the_dashboard_charts_engagement_and_follows_new_events(
    browser: Browser, served: tuple[Pipeline, WorkerProcess]
) -> None:
    pipeline, worker = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with _page(browser, worker, "/") as (page, _):
        await _until(page, "window.pinappDashboard.refreshes >= 1", "the first refresh")
        assert await page.evaluate("window.pinappDashboard.errors") == 0
        # The pin panels show sealed (complete) minutes: they fill once the stream is past them.
        await _until(page, "document.querySelectorAll('#most-repinned tbody tr').length === 10", "the top pins", 120)
        categories = await page.evaluate("window.pinappDashboard.rows['top-categories'].length")
        assert categories == 10

        def total_js() -> str:
            return "window.pinappDashboard.rows['events-per-minute'].reduce((n, r) => n + r[2], 0)"

        before = await page.evaluate(total_js())
        more, _, expected = traffic(pipeline, seed=83, count=2000)
        await pipeline.produce(more)
        added = sum(len(ids) for ids in expected.values())
        await _until(page, f"{total_js()} >= {before + added}", "the new events in the per-minute chart", 60)
        labels = await page.evaluate("Chart.getChart('per-minute').data.labels.length")
        assert labels >= 1
        await page.select_option("#window", "15")
        await _until(page, "window.pinappDashboard.refreshes >= 3", "a refresh for the new window")
        # Trending now: the pin that took off in the last minutes is lit.
        assert await page.locator("#trending-pins tbody tr").count() >= 1
        assert await page.locator("#trending-pins tbody tr.hot").count() >= 1, "a pin past the alert score is lit"
        assert await page.locator("#trending-categories tbody tr").count() >= 1
        await page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)


async def test_the_experiments_page_shows_allocation_engagement_and_the_srm_verdict(
    browser: Browser, served: tuple[Pipeline, WorkerProcess]
) -> None:
    _, worker = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with _page(browser, worker, "/experiments") as (page, _):
        await _until(page, "window.pinappExperiments.refreshes >= 1", "the first refresh")
        assert await page.evaluate("window.pinappExperiments.errors") == 0
        assert await page.locator("section.experiment").count() == 2
        assert "sample ratio mismatch" in (await page.text_content("#exp-checkout_flow .verdict.mismatch") or "")
        assert "allocation as intended" in (await page.text_content("#exp-search_ranking_v2 .verdict.ok") or "")
        assert await page.locator("#exp-checkout_flow .engagement tbody tr").count() >= 4
        assert (
            await page.evaluate(
                "Chart.getChart(document.querySelector('#exp-checkout_flow canvas')).data.labels.length"
            )
            >= 2
        )
        await page.screenshot(path=str(SHOTS / "experiments.png"), full_page=True)


async def test_only_the_pages_files_are_served(served: tuple[Pipeline, WorkerProcess]) -> None:
    _, worker = served
    status, doc = worker.get("/vendor/not-a-package.js")
    assert status == 404 and "d3-geo.min.js" in doc["error"]  # the message lists what there is
    status, doc = worker.get("/static/..%2F..%2Fpyproject.toml")
    assert status == 404, doc
    status, _ = worker.get("/vendor/countries-110m.json")
    assert status == 200


async def test_a_logged_in_browser_uses_the_dashboard_and_globe_of_a_worker_that_asks_for_the_token(
    browser: Browser, test_stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Bound beyond loopback, the worker asks for its token; a browser given it (HTTP basic, any
    user) gets the dashboard's queries and the globe's live stream as before; without it, 401."""
    from tests.integration.test_web_auth import EXPOSED, TOKEN

    pipeline = Pipeline(tmp_path_factory.mktemp("browser-auth"), extra_env=EXPOSED)
    try:
        worker = await _serving(pipeline, seed=84, count=1500)
        assert worker.fetch("/")[0] == 401  # (a headless browser without credentials stops at the challenge)

        context = await browser.new_context(
            http_credentials={"username": "analyst", "password": TOKEN}, viewport={"width": 1400, "height": 860}
        )
        try:
            page = await context.new_page()
            watch = PageWatch(page)
            await page.goto(f"http://127.0.0.1:{worker.web_port}/")
            await _until(page, "window.pinappDashboard.refreshes >= 1", "the first refresh")
            assert await page.evaluate("window.pinappDashboard.errors") == 0
            await _until(page, "document.querySelectorAll('#most-repinned tbody tr').length >= 1", "top pins", 150)
            await page.goto(f"http://127.0.0.1:{worker.web_port}/globe")
            await page.wait_for_function("document.getElementById('status').textContent === 'live'", timeout=30_000)
            more, _, _ = traffic(pipeline, seed=85, count=3000)
            await pipeline.produce(more, rate=600)
            await _until(page, "window.pinappGlobe.received >= 20", "repins through the authenticated stream")
            assert watch.errors == [], watch.errors
        finally:
            await context.close()
    finally:
        pipeline.stop_all()
        await pipeline.drop()
