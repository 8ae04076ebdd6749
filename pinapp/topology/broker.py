"""How the faust apps reach the broker: their ``broker_credentials`` from the kafka settings.

The one faust-specific piece of the connection settings; everything else about them (the
aiokafka and librdkafka options, the TLS context) is :mod:`pinapp.adapters.kafka`'s, which
Singer and the tools use without loading faust.
"""

from __future__ import annotations

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from config import KafkaSettings
from pinapp.adapters.kafka import ssl_context

__all__ = ["faust_credentials"]


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
