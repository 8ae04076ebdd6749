"""The kafka and db security settings as each kind of client's configuration, and that every client
pinapp makes is configured from them (no broker needed here)."""

from __future__ import annotations

import ast
import datetime
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from config import KafkaSettings, load_settings
from pinapp.adapters.kafka import client_options, librdkafka_options
from pinapp.errors import ConfigError
from pinapp.singer._rdkafka import Producer
from pinapp.topology.broker import faust_credentials
from tests.paths import REPO


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A self-signed CA certificate, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinapp test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _sasl_ssl(ca_file: Path, **changes: object) -> KafkaSettings:
    return KafkaSettings(
        bootstrap="127.0.0.1:29093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="pinapp",
        sasl_password="s3cret",
        ssl_ca_file=ca_file,
        **changes,
    )


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    kafka = KafkaSettings(bootstrap="127.0.0.1:1")
    assert client_options(kafka) == {"bootstrap_servers": "127.0.0.1:1", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(kafka) is None
    assert librdkafka_options(kafka) == {"bootstrap.servers": "127.0.0.1:1", "security.protocol": "plaintext"}


def test_sasl_ssl_reaches_every_kind_of_client(ca_file: Path) -> None:
    kafka = _sasl_ssl(ca_file)
    options = client_options(kafka)
    assert (
        options["security_protocol"],
        options["sasl_mechanism"],
        options["sasl_plain_username"],
        options["sasl_plain_password"],
    ) == ("SASL_SSL", "SCRAM-SHA-512", "pinapp", "s3cret")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "pinapp test CA"),),)]

    credentials = faust_credentials(kafka)
    assert (
        type(credentials).__name__,
        credentials.protocol.value,
        credentials.mechanism.value,
        credentials.username,
        credentials.password,
    ) == ("SASLCredentials", "SASL_SSL", "SCRAM-SHA-512", "pinapp", "s3cret")
    assert credentials.ssl_context.check_hostname

    rd = librdkafka_options(kafka)
    assert {
        k: rd[k]
        for k in (
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
            "ssl.ca.location",
            "ssl.endpoint.identification.algorithm",
        )
    } == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pinapp",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }
    # Debian's librdkafka, which singer's C loop is built on, takes all of them.
    Producer(rd, ("pin",)).close()


def test_hostname_checking_can_be_turned_off_and_plain_tls_has_no_sasl(ca_file: Path) -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_file=ca_file, ssl_check_hostname=False)
    options = client_options(kafka)
    assert "sasl_mechanism" not in options and not options["ssl_context"].check_hostname
    assert type(faust_credentials(kafka)).__name__ == "SSLCredentials"
    rd = librdkafka_options(kafka)
    assert rd["ssl.endpoint.identification.algorithm"] == "none" and "sasl.username" not in rd


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SECURITY_PROTOCOL": "SASL_SSL"}, ["kafka.sasl_username", "kafka.sasl_password"]),
        ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u"}, ["kafka.sasl_password"]),
        ({"SSL_CA_FILE": "/no/such/ca.pem"}, ["kafka.ssl_ca_file"]),
        ({"SSL_CERT_FILE": "/etc/hostname"}, ["kafka.ssl_key_file"]),
    ],
)
def test_bad_security_settings_fail_at_start_naming_the_setting(
    env: dict[str, str], names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"PINAPP_KAFKA__{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings("test")
    for name in names:
        assert f"  {name}:" in str(info.value) and f"PINAPP_{name.upper().replace('.', '__')}" in str(info.value)


def test_production_refuses_sasl_in_clear_text_unless_told_and_never_prints_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PINAPP_WORKER__WEB_TOKEN", "t")
    monkeypatch.setenv("PINAPP_WORKER__WEB_BEHIND_TLS_PROXY", "true")
    kafka = {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": "hunter2"}
    with pytest.raises(ConfigError) as info:
        load_settings("production", kafka=kafka)
    assert "SASL_PLAINTEXT" in str(info.value) and "allow_sasl_plaintext" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert load_settings("production", kafka={**kafka, "allow_sasl_plaintext": True}).kafka.allow_sasl_plaintext
    with pytest.raises(ConfigError) as info:
        load_settings("test", kafka={"sasl_password": 12345})  # a bad secret is named, never shown
    assert "12345" not in str(info.value)


def test_every_kafka_client_pinapp_makes_takes_the_security_settings() -> None:
    """aiokafka clients are built with **client_options(...); librdkafka's bootstrap comes only from
    librdkafka_options; the faust apps get faust_credentials. A client made otherwise would
    ignore TLS and SASL."""
    clients = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}
    offenders, seen = [], 0
    for folder in ("pinapp", "agents", "tables", "config"):
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in clients:
                    seen += 1
                    spread = [k.value for k in node.keywords if k.arg is None]
                    if not any(
                        isinstance(v, ast.Call) and getattr(v.func, "id", "") == "client_options" for v in spread
                    ):
                        offenders.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
            if '"bootstrap.servers"' in path.read_text() and path.name != "kafka.py":
                offenders.append(f"{os.path.relpath(path, REPO)}: bootstrap.servers")
    assert not offenders, offenders
    assert seen >= 6, seen  # ensure_topics, make_producer, partitions_of, read_topic, the live feed, verify
    assert (
        "broker_credentials=faust_credentials(settings.kafka)" in (REPO / "pinapp" / "topology" / "app.py").read_text()
    )


@pytest.mark.parametrize(
    ("mode", "verify", "hostname"),
    [
        ("REQUIRED", ssl.CERT_NONE, False),
        ("VERIFY_CA", ssl.CERT_REQUIRED, False),
        ("VERIFY_IDENTITY", ssl.CERT_REQUIRED, True),
    ],
)
def test_db_tls_modes_are_the_mysql_clients(mode: str, verify: ssl.VerifyMode, hostname: bool, ca_file: Path) -> None:
    from config import DatabaseSettings
    from pinapp.adapters.db import ssl_context

    assert ssl_context(DatabaseSettings()) is None  # DISABLED
    context = ssl_context(DatabaseSettings(tls=mode, ssl_ca_file=ca_file))
    assert context is not None and (context.verify_mode, context.check_hostname) == (verify, hostname)


def test_every_database_connection_is_made_by_create_pool() -> None:
    """pinapp.adapters.db.create_pool applies db.tls; a connection made elsewhere would not."""
    made_elsewhere = [
        str(p.relative_to(REPO))
        for folder in ("pinapp", "agents", "tables")
        for p in (REPO / folder).rglob("*.py")
        if p.name != "db.py" and any(call in p.read_text() for call in ("asyncmy.connect(", "asyncmy.create_pool("))
    ]
    assert not made_elsewhere
    assert "ssl=ssl_context(db)" in (REPO / "pinapp" / "adapters" / "db.py").read_text()
