"""pinapp over the test stack's SASL_SSL listener (SCRAM-SHA-512, the stack's own CA) and
MariaDB over TLS as a user that may only connect with it (REQUIRE SSL).

Every process is pointed at the secured listener and the TLS-only user, so a client that
ignored the security settings could not connect at all: Singer ships a file (SCRAM too, on the
confluent-kafka wheel's librdkafka), a worker writes rows, the
archiver writes objects and ``pinapp audit`` reconciles, all over TLS with SCRAM. Then what
an operator meets: a wrong password leaves nothing shipped, written or committed, and once
corrected the same data flows through in full; a wrong CA, a plaintext client and a wrong
password each fail with an error that says so.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from asyncmy.errors import Error as MySQLError

from config import Settings
from pinapp.adapters.db import create_pool
from pinapp.adapters.kafka import ensure_topics
from pinapp.errors import DatabaseError
from pinapp.tools.harness import Pipeline, traffic
from pinapp.tools.stack.tls import stack_ca_file
from tests.integration.test_web_auth import BEARER, EXPOSED


def secured_env(settings: Settings, **changes: str) -> dict[str, str]:
    """The variables that point a pinapp process at the SASL_SSL listener, and only there, and
    at the database over TLS (VERIFY_IDENTITY) as the user who may only connect so."""
    stack = settings.stack
    assert stack.kafka_sasl_ssl_port is not None, "the test profile's stack has a SASL_SSL listener"
    env = {
        "PINAPP_KAFKA__BOOTSTRAP": f"127.0.0.1:{stack.kafka_sasl_ssl_port}",
        "PINAPP_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "PINAPP_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "PINAPP_KAFKA__SASL_USERNAME": stack.kafka_scram_user,
        "PINAPP_KAFKA__SASL_PASSWORD": stack.kafka_scram_password.get_secret_value(),
        "PINAPP_KAFKA__SSL_CA_FILE": str(stack_ca_file(settings)),
        "PINAPP_DB__TLS": "VERIFY_IDENTITY",
        "PINAPP_DB__SSL_CA_FILE": str(stack_ca_file(settings)),
        "PINAPP_DB__USER": stack.mariadb_tls_user,
        "PINAPP_DB__QUERY_USER": "",  # people's queries too as the REQUIRE SSL user, over the same TLS
    }
    return {**env, **{f"PINAPP_KAFKA__{k.upper()}": v for k, v in changes.items()}}


@pytest.fixture
async def secured(test_stack: Settings, tmp_path: Path) -> AsyncIterator[Pipeline]:
    pipeline = Pipeline(tmp_path, extra_env=secured_env(test_stack))
    yield pipeline
    pipeline.stop_all()
    await pipeline.drop()


def _write_log(pipeline: Pipeline, count: int) -> dict[str, int]:
    """``count`` generated events in the deployment's log file; the unique valid ones per type."""
    truth = pipeline.tmp / "truth.json"
    done = pipeline.cli(*pipeline.generate_args(count, seed=11), "--truth", str(truth))
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(truth.read_text())["valid_unique"])


async def _rows(pipeline: Pipeline) -> dict[str, int]:
    """Rows per table; none when the worker never got as far as creating them."""
    try:
        return {t: len(ids) for t, ids in (await pipeline.ids_by_type()).items() if ids}
    except (DatabaseError, MySQLError):  # no database or tables yet
        return {}


async def test_singer_worker_archiver_and_audit_over_sasl_ssl(secured: Pipeline) -> None:
    await secured.produce([])  # the topics, made by the secured admin client
    await secured.create_bucket()
    expected = _write_log(secured, 3_000)
    singer, worker, archiver = secured.singer(), secured.worker(**EXPOSED), secured.archiver()
    for process in (singer, worker, archiver):
        process.start()
    for process in (singer, worker, archiver):
        await process.wait_ready()
    await secured.wait_for_rows(expected)
    audit = secured.audit(secured.tmp / "truth.json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert await secured.archive_keys(secured.settings.kafka.events_topic)
    # The worker's web, bound beyond loopback, answers only with the token.
    assert worker.fetch("/api/query/top-countries?minutes=60&limit=3")[0] == 401
    status, _, body = worker.fetch("/api/query/top-countries?minutes=60&limit=3", BEARER)
    assert status == 200, body[:200]


async def test_a_wrong_password_ships_writes_and_commits_nothing_until_corrected(secured: Pipeline) -> None:
    await secured.create_bucket()
    earlier, _, earlier_rows = traffic(secured, seed=61, count=300)  # already in Kafka: not to be taken either
    await secured.produce(earlier)
    expected = _write_log(secured, 2_000)
    wrong = secured_env(secured.settings, sasl_password="not-the-password")
    singer, worker = secured.singer(**wrong), secured.worker(**wrong)
    archiver = secured.archiver(**wrong)
    for process in (singer, worker, archiver):
        process.start()
    await asyncio.sleep(20)
    assert len(await secured.read_topic(secured.settings.kafka.events_topic)) == len(earlier), "nothing shipped"
    watermark = secured.tmp / "singer" / "app.watermark.json"
    assert not watermark.exists() or all(m["offset"] == 0 for m in json.loads(watermark.read_text())["files"].values())
    assert "Authentication failed" in singer.log_tail(400), singer.log_tail(40)
    assert not await _rows(secured), "no rows"
    committed, _ = await secured.group_position(secured.settings.kafka.events_topic, secured.settings.worker.app_id)
    assert not any(committed.values()), committed
    assert not await secured.archive_keys(secured.settings.kafka.events_topic), "no objects"
    for process in (singer, worker, archiver):
        process.kill()

    singer, worker = secured.singer(1), secured.worker(1)  # corrected: the same data in full
    archiver = secured.archiver(1)
    for process in (singer, worker, archiver):
        process.start()
    await worker.wait_ready()
    await secured.wait_for_rows({t: n + len(earlier_rows.get(t, ())) for t, n in expected.items()})
    await secured.wait_archived(secured.settings.kafka.events_topic)  # every offset, the earlier ones too


async def test_singer_logs_in_with_scram_sha_512_on_a_librdkafka_kafka_4_accepts(secured: Pipeline) -> None:
    """librdkafka before 2.6.1 repeats its nonce in SCRAM's final message, which Kafka 4 refuses
    (librdkafka#4895): singer runs on the confluent-kafka wheel's librdkafka, and ships over SCRAM."""
    await secured.produce([])
    expected = _write_log(secured, 300)
    singer = secured.singer()
    assert singer.env["PINAPP_KAFKA__SASL_MECHANISM"] == "SCRAM-SHA-512"
    singer.start()
    await singer.wait_ready()
    version = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", singer.log_tail(400))
    assert version and tuple(map(int, version.groups())) >= (2, 6, 1), singer.log_tail(40)
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        if len(await secured.read_topic(secured.settings.kafka.events_topic)) >= sum(expected.values()):
            break
        await asyncio.sleep(1)
    assert len(await secured.read_topic(secured.settings.kafka.events_topic)) >= sum(expected.values())
    assert "librdkafka#4895" not in singer.log_tail(400)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("wrong_ca", "CERTIFICATE_VERIFY_FAILED"),
        ("plaintext", "closed"),
        ("wrong_password", "Authentication failed"),
    ],
)
async def test_a_misconfigured_client_fails_with_an_error_that_says_why(
    test_stack: Settings, tmp_path: Path, change: str, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = secured_env(test_stack)
    if change == "wrong_ca":
        env["PINAPP_KAFKA__SSL_CA_FILE"] = "/etc/ssl/certs/ca-certificates.crt"  # real CAs, not the stack's
    elif change == "plaintext":
        env = {"PINAPP_KAFKA__BOOTSTRAP": env["PINAPP_KAFKA__BOOTSTRAP"]}
    else:
        env["PINAPP_KAFKA__SASL_PASSWORD"] = "not-the-password"
    settings = Pipeline(tmp_path, extra_env=env).settings
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap from"):
        await asyncio.wait_for(ensure_topics(settings.kafka, [f"secured-{change}"]), 60)
    assert says in caplog.text, caplog.text  # aiokafka logs why at ERROR


@pytest.mark.parametrize(
    ("tls", "ca", "says"),
    [
        ("DISABLED", None, "Access denied"),  # the REQUIRE SSL user without TLS
        ("VERIFY_CA", "/etc/ssl/certs/ca-certificates.crt", "CERTIFICATE_VERIFY_FAILED"),  # not the stack's CA
    ],
)
async def test_a_database_client_without_the_right_tls_is_refused_and_says_why(
    test_stack: Settings, tmp_path: Path, tls: str, ca: str | None, says: str
) -> None:
    env = {**secured_env(test_stack), "PINAPP_DB__TLS": tls}
    if ca is None:
        env.pop("PINAPP_DB__SSL_CA_FILE")
    else:
        env["PINAPP_DB__SSL_CA_FILE"] = ca
    pipeline = Pipeline(tmp_path, extra_env=env)
    with pytest.raises(DatabaseError, match=says):
        await create_pool(pipeline.settings.db, with_database=False, size=1)
    # The CLI says the same in one line, not a traceback.
    result = pipeline.cli("query", "--sql", "SELECT 1")
    assert result.returncode != 0 and says in result.stderr and "Traceback" not in result.stderr, result.stderr
