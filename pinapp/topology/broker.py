"""How the faust apps reach the broker: their ``broker_credentials`` from the kafka settings,
and whether they reach it at all (``/health``'s ``brokers``).

The credentials are the one faust-specific piece of the connection settings; everything else
about them (the aiokafka and librdkafka options, the TLS context) is
:mod:`pinapp.adapters.kafka`'s, which Singer and the tools use without loading faust.
"""

from __future__ import annotations

import asyncio
import time

from faust.auth import SASLCredentials, SSLCredentials
from faust.types import AppT
from faust.types.auth import CredentialsT

from config import KafkaSettings
from pinapp.adapters.kafka import ssl_context
from pinapp.telemetry import health
from pinapp.topology.faust_ext import pin_consumer

__all__ = ["faust_credentials", "watch_brokers"]

#: how long the group's coordinator may stay unknown before ``/health`` says the brokers are lost
#: (a leader moving takes a second or two; a whole cluster gone, or this host cut off, stays)
BROKERS_GRACE_S = 5.0


async def watch_brokers(app: AppT, *, interval_s: float = 1.0, grace_s: float = BROKERS_GRACE_S) -> None:
    """Keep ``/health``'s ``brokers`` entry: failing while the consumer group's coordinator has
    been unknown for ``grace_s`` (no broker answers), so a broker outage is told from a
    database or S3 outage, which fail their own entries (and ``PinappSinkFailing{sink}``)."""
    brokers = health.sink("brokers")
    lost_since: float | None = None
    while not app.should_stop:
        await asyncio.sleep(interval_s)
        known = pin_consumer(app).group_coordinator_known()
        if known is None:  # not started yet, or stopping
            continue
        if known:
            lost_since = None
            brokers.succeeded()
            continue
        now = time.monotonic()
        lost_since = lost_since or now
        if now - lost_since >= grace_s:
            brokers.failed(
                f"no broker has answered for {now - lost_since:.0f} s: the consumer group's coordinator is "
                "unknown (check the brokers and this host's network; the worker log has the connection errors)"
            )


def faust_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """faust's ``broker_credentials`` for ``kafka`` (``None`` for PLAINTEXT)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(ssl_context(kafka))
    return SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        ssl_context=ssl_context(kafka),
        mechanism=kafka.sasl_mechanism,
    )
