"""The alerter on the real stack: a developing trend and a burst of bad input each reach a local
webhook receiver exactly once, the burst's alert is resolved once it stops, ordinary traffic
raises nothing, and a receiver that fails for a while still gets every message, in order.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from pinapp.alerting.loop import run_alerter
from pinapp.domain.experiments import load_experiments
from pinapp.domain.geo import GeoLocator
from pinapp.tools.generator import GeneratorConfig, TrafficGenerator
from pinapp.tools.harness import REPO, Pipeline, cli_entry, free_port
from tests.integration.test_trends import trend_events


class Receiver:
    """A webhook receiver that refuses its first ``failures`` requests with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.refused = 0
        self.received: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        if self.refused < self.failures:
            self.refused += 1
            return web.Response(status=503, text="down for a while")
        self.received.append(await request.json())
        return web.Response(text="ok")

    def messages(self) -> list[tuple[str, str]]:
        return [(doc["status"], doc["alert"]) for doc in self.received]


def _failed_tries() -> float:
    """Refused webhook tries so far (``pinapp_alert_notifications_total{outcome="failed"}``)."""
    labels = {"status": "firing", "outcome": "failed"}
    return REGISTRY.get_sample_value("pinapp_alert_notifications_total", labels) or 0.0


def _alerter(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``pinapp alerter`` as a child process, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-c", cli_entry(REPO), "--profile", "test", "alerter"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver(failures=3)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield hook, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


async def test_each_condition_alerts_once_and_resolves_once(pipeline: Pipeline, receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    worker_url = f"http://127.0.0.1:{worker.web_port}"
    alerts = pipeline.settings.alerts.model_copy(
        update={
            "webhook_url": url,
            "interval_s": 1.0,
            "worker_urls": [worker_url],
            "retry_max_s": 0.5,
            "dead_letter_rate_max": 20.0,
            "metrics_port": 0,
        }
    )
    settings = pipeline.settings.model_copy(update={"alerts": alerts})
    stop = asyncio.Event()
    alerter = asyncio.create_task(run_alerter(settings, stop))
    failed_before = _failed_tries()
    try:
        await asyncio.sleep(3)  # a few quiet rounds: ordinary (no) traffic raises nothing
        assert hook.messages() == [] and hook.refused == 0

        produced = time.monotonic()
        await pipeline.produce([*trend_events(int(time.time() * 1000)), *[(b"k", b"not json")] * 400])
        expected = {
            ("firing", "trend:pin:p-rising"),
            ("firing", "trend:category:gardening"),
            ("firing", "trend:country:GB"),
            ("firing", f"health:dead-letters:{worker_url}"),
            ("resolved", f"health:dead-letters:{worker_url}"),
        }
        deadline = produced + 90
        while not expected <= set(hook.messages()):
            assert time.monotonic() < deadline, f"alerts missing after 90 s: {expected - set(hook.messages())}"
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # more rounds: nothing is sent twice
    finally:
        stop.set()
        await asyncio.wait_for(alerter, 60)

    messages = hook.messages()
    assert Counter(messages) == Counter(expected), messages
    dead = f"health:dead-letters:{worker_url}"
    assert messages.index(("firing", dead)) < messages.index(("resolved", dead)), "resolved after its alert"
    assert hook.refused == 3, "the receiver refused the first tries"
    failed = _failed_tries() - failed_before
    assert failed >= 3, "each refused try is counted"
    trend = next(doc for doc in hook.received if doc["alert"] == "trend:pin:p-rising")
    assert trend["text"].startswith("[pinapp FIRING] trending pin p-rising: score")
    assert trend["severity"] == "warning" and trend["value"] >= settings.trends.alert_score


async def test_the_alerter_command_serves_its_metrics_and_stops_cleanly(pipeline: Pipeline) -> None:
    """``pinapp alerter``: a worker it cannot reach is itself an alert (logged: no webhook set),
    counted on its own /metrics; SIGTERM stops it with exit 0."""
    assert pipeline.cli("db", "migrate").returncode == 0
    port = free_port()
    env = {
        **pipeline.env,
        "PINAPP_ALERTS__INTERVAL_S": "0.5",
        "PINAPP_ALERTS__METRICS_PORT": str(port),
        "PINAPP_ALERTS__WORKER_URLS": '["http://127.0.0.1:1"]',
    }
    proc = _alerter(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    if 'pinapp_alerts_firing{rule="worker-down"} 1.0' in resp.read().decode():
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "no worker-down alert on the alerter's /metrics in 60 s"
            await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out = (await asyncio.to_thread(proc.communicate, None, 30))[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "alert firing: http://127.0.0.1:1: the worker's /metrics does not answer" in out


async def test_a_broken_allocation_raises_one_srm_alert_and_a_sound_one_none(
    pipeline: Pipeline, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    hook.failures = 0
    definitions = pipeline.tmp / "experiments.toml"
    definitions.write_text(
        "[[experiment]]\nname = 'search_ranking_v2'\nstart = 2026-01-01T00:00:00Z\n"
        "groups = { control = 50, treatment = 50 }\n\n"
        "[[experiment]]\nname = 'checkout_flow'\nstart = 2026-01-01T00:00:00Z\n"
        "groups = { control = 50, streamlined = 50 }\n"
    )
    experiments = load_experiments(definitions)
    config = GeneratorConfig(seed=31, users=3000, experiments=experiments, leaks={"checkout_flow": 0.15})
    gen = TrafficGenerator(config, GeoLocator())
    records = [next(gen) for _ in range(8000)]
    worker = pipeline.worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.produce(records)
    await pipeline.wait_for_rows({t: len(ids) for t, ids in gen.truth.event_ids.items()})

    settings = pipeline.settings.model_copy(
        update={
            "alerts": pipeline.settings.alerts.model_copy(
                update={"webhook_url": url, "interval_s": 1.0, "worker_urls": [], "metrics_port": 0}
            ),
            "experiments": pipeline.settings.experiments.model_copy(update={"definitions_file": definitions}),
        }
    )
    stop = asyncio.Event()
    alerter = asyncio.create_task(run_alerter(settings, stop))
    try:
        deadline = time.monotonic() + 60
        while ("firing", "srm:checkout_flow") not in hook.messages():
            assert time.monotonic() < deadline, f"no SRM alert in 60 s: {hook.messages()}"
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)
    finally:
        stop.set()
        await asyncio.wait_for(alerter, 60)
    srm = [m for m in hook.messages() if m[1].startswith("srm:")]
    assert srm == [("firing", "srm:checkout_flow")], "one alert, for the broken experiment only"
    doc = next(d for d in hook.received if d["alert"] == "srm:checkout_flow")
    assert doc["severity"] == "critical" and "sample ratio mismatch" in doc["text"] and doc["value"] < 0.001

    # `pinapp experiments` gives the same verdicts from the same table.
    pipeline.env["PINAPP_EXPERIMENTS__DEFINITIONS_FILE"] = str(definitions)
    listing = pipeline.cli("experiments")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    verdicts = {line.split()[0]: line.split()[-1] for line in listing.stdout.splitlines()[2:]}
    assert verdicts == {"search_ranking_v2": "ok", "checkout_flow": "MISMATCH"}, listing.stdout


class _Gone:
    """A webhook that answers its first request with 410 Gone, then takes everything."""

    def __init__(self) -> None:
        self.answered = 0
        self.received: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.answered += 1
        if self.answered == 1:
            return web.Response(status=410, text="this hook was removed")
        doc = await request.json()
        self.received.append((doc["status"], doc["alert"]))
        return web.Response(text="ok")


async def test_a_refused_alert_a_garbled_scrape_and_a_restart_leave_the_alerter_working(
    pipeline: Pipeline, tmp_path: Any
) -> None:
    """``pinapp alerter`` with a webhook that answers 410 once and a "worker" whose /metrics is
    not Prometheus text: the refused alert is dropped (counted), the next one is delivered, the
    garbled scrape is an alert, not a crash. Restarted with its state file after the worker's
    metrics came right, it resolves that alert once and repeats nothing still holding."""
    assert pipeline.cli("db", "migrate").returncode == 0
    hook, metrics_text = _Gone(), ["this is <html> not prometheus {"]

    async def garbled(request: web.Request) -> web.Response:
        return web.Response(text=metrics_text[0])

    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    app.router.add_get("/metrics", garbled)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    dead, odd = "http://127.0.0.1:1", f"http://127.0.0.1:{port}"
    env = {
        **pipeline.env,
        "PINAPP_ALERTS__INTERVAL_S": "0.5",
        "PINAPP_ALERTS__METRICS_PORT": "0",
        "PINAPP_ALERTS__RETRY_MAX_S": "0.5",
        "PINAPP_ALERTS__WEBHOOK_URL": f"{odd}/hook",
        "PINAPP_ALERTS__WORKER_URLS": f'["{dead}", "{odd}"]',
        "PINAPP_ALERTS__STATE_FILE": str(tmp_path / "alerter-state.json"),
    }

    async def run_until(done: Any) -> str:
        proc = _alerter(env)
        try:
            deadline = time.monotonic() + 60
            while not done():
                assert proc.poll() is None, proc.communicate()[0].decode()
                assert time.monotonic() < deadline, f"not done in 60 s: {hook.received}"
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # a repeated alert would come by now
            proc.send_signal(signal.SIGTERM)
            return (await asyncio.to_thread(proc.communicate, None, 30))[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    try:
        out = await run_until(lambda: len(hook.received) >= 1)
        # The round's two alerts, in order: the dead worker's (refused with 410), the odd one's.
        assert hook.answered == 2, "the 410 is not tried again"
        assert hook.received == [("firing", f"health:worker-down:{odd}")], "the next alert still arrives"
        assert "refused" in out and "410" in out
        assert "not Prometheus text" in out

        metrics_text[0] = ""  # the odd worker's metrics are fine now; the dead one is still dead
        hook.received.clear()
        await run_until(lambda: len(hook.received) >= 1)
        assert hook.received == [("resolved", f"health:worker-down:{odd}")], "resolved once, nothing repeated"
    finally:
        await runner.cleanup()
