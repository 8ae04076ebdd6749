"""The web bound beyond loopback: every route asks for the token, faust's own included;
/health and /metrics stay open; per-key reads forwarded between workers carry the
credentials; the token shows nowhere; a worker without a token refuses to start so bound."""

from __future__ import annotations

import base64
import json
import os
import random
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from config import Settings
from pinapp.tools.harness import REPO, Pipeline, WorkerProcess, start, traffic, wait_for
from pinapp.tools.stack.tls import ensure_certificate, stack_ca_file

TOKEN = "t0ken-" + "x" * 26
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"analyst:{TOKEN}".encode()).decode()}
#: bound on every interface (tests still talk to it over loopback only), behind a TLS proxy
EXPOSED = {
    "PINAPP_WORKER__WEB_HOST": "0.0.0.0",
    "PINAPP_WORKER__WEB_TOKEN": TOKEN,
    "PINAPP_WORKER__WEB_BEHIND_TLS_PROXY": "true",
}


@pytest.fixture(scope="module")
async def exposed(
    test_stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Pipeline, list[WorkerProcess], list[dict[str, Any]]]]:
    pipeline = Pipeline(tmp_path_factory.mktemp("web-auth"), extra_env=EXPOSED)
    try:
        records, _, expected = traffic(pipeline, seed=73, count=2000)
        workers = [pipeline.worker(0), pipeline.worker(1)]
        await start(*workers)
        topic = pipeline.settings.kafka.events_topic
        await wait_for(
            lambda: all(any(p.startswith(f"{topic}:") for p in w.health()[1]["partitions"]) for w in workers),
            "both workers to own partitions",
        )
        await pipeline.produce(records)
        await pipeline.wait_for_rows({t: len(ids) for t, ids in expected.items()})
        pins = [json.loads(r.value) for r in records if r.kind == "valid" and r.event_type == "pin"]
        yield pipeline, workers, pins
    finally:
        pipeline.stop_all()
        await pipeline.drop()


PATHS = ["/tables", "/dedup", "/", "/globe", "/api/query/top-countries?minutes=60&limit=3", "/router/"]


@pytest.mark.parametrize("path", PATHS)
async def test_every_route_asks_for_the_token(
    exposed: tuple[Pipeline, list[WorkerProcess], list[dict[str, Any]]], path: str
) -> None:
    worker = exposed[1][0]
    status, headers, body = worker.fetch(path)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), (path, status)
    assert worker.fetch(path, {"Authorization": "Bearer wrong"})[0] == 401
    for credentials in (BEARER, BASIC):
        status, _, body = worker.fetch(path, credentials)
        assert status == 200, (path, status, body[:200])
        assert TOKEN.encode() not in body


async def test_health_and_metrics_stay_open(
    exposed: tuple[Pipeline, list[WorkerProcess], list[dict[str, Any]]],
) -> None:
    worker = exposed[1][0]
    assert worker.fetch("/health")[0] == 200 and worker.fetch("/metrics")[0] == 200


async def test_per_key_reads_forwarded_to_the_owner_carry_the_credentials(
    exposed: tuple[Pipeline, list[WorkerProcess], list[dict[str, Any]]],
) -> None:
    _, workers, pins = exposed
    served_by = set()
    for event in random.Random(5).sample(pins, 20):
        status, doc = workers[0].get(f"/pins/{quote(str(event['pin_id']))}", BEARER)
        assert status == 200, doc
        served_by.add(doc["served_by"].rstrip("/"))
    assert len(served_by) == 2, "some reads were answered by the other worker, through the forward"
    for worker in workers:
        assert TOKEN not in worker.log_tail(2000)


def test_a_worker_bound_beyond_loopback_without_a_token_refuses_to_start(test_stack: Settings) -> None:
    env = {**os.environ, "PINAPP_PROFILE": "test", "PINAPP_WORKER__WEB_HOST": "0.0.0.0"}
    env.pop("PINAPP_WORKER__WEB_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-c", "from pinapp.cli import main; main()", "--profile", "test", "worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "worker.web_token" in done.stderr and "Traceback" not in done.stderr, done.stderr


async def test_the_web_serves_tls_with_its_certificate(test_stack: Settings, tmp_path: Path) -> None:
    tls = ensure_certificate(test_stack, "web")
    pipeline = Pipeline(
        tmp_path,
        extra_env={
            "PINAPP_WORKER__WEB_HOST": "0.0.0.0",
            "PINAPP_WORKER__WEB_TOKEN": TOKEN,
            "PINAPP_WORKER__WEB_TLS_CERT_FILE": str(tls / "web.pem"),
            "PINAPP_WORKER__WEB_TLS_KEY_FILE": str(tls / "web.key"),
        },
    )
    try:
        await pipeline.produce([])
        worker = pipeline.worker(0)
        await start(worker)
        context = ssl.create_default_context(cafile=str(stack_ca_file(test_stack)))
        request = urllib.request.Request(f"https://127.0.0.1:{worker.web_port}/tables", headers=BEARER)
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:  # the token is still asked for over TLS
            urllib.request.urlopen(
                urllib.request.Request(f"https://127.0.0.1:{worker.web_port}/tables"),
                context=context,
                timeout=10,
            )
        assert refused.value.code == 401
        refused.value.close()  # its TLS socket: left open, it would warn when collected, in a later test
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP is not served
            urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/tables", timeout=10)
    finally:
        pipeline.stop_all()
        await pipeline.drop()
