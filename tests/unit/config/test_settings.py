"""Settings: profiles, environment overrides, clear errors, secrets kept secret."""

from __future__ import annotations

import pytest

from config import PROFILES, KafkaSettings, load_settings
from pinapp.errors import ConfigError


@pytest.fixture(autouse=True)
def _production_web_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a production deployment supplies for its web (bound beyond loopback there)."""
    monkeypatch.setenv("PINAPP_WORKER__WEB_TOKEN", "a-long-random-token")
    monkeypatch.setenv("PINAPP_WORKER__WEB_BEHIND_TLS_PROXY", "true")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile: str) -> None:
    settings = load_settings(profile)
    assert settings.profile == profile


def test_the_production_web_needs_a_token_and_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINAPP_WORKER__WEB_TOKEN")
    with pytest.raises(ConfigError, match=r"worker.web_host='0.0.0.0' is reachable .*PINAPP_WORKER__WEB_TOKEN"):
        load_settings("production")
    monkeypatch.setenv("PINAPP_WORKER__WEB_TOKEN", "t")
    monkeypatch.delenv("PINAPP_WORKER__WEB_BEHIND_TLS_PROXY")
    with pytest.raises(ConfigError, match=r"web_tls_cert_file.*web_behind_tls_proxy"):
        load_settings("production")
    assert not load_settings("local").worker.web_auth_required


def test_the_production_profile_refuses_fault_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINAPP_TESTING__POISON_USER_ID", "u1")
    monkeypatch.setenv("PINAPP_TESTING__COMMIT_GUARDS", "false")
    with pytest.raises(
        ConfigError, match=r"testing: .*never production: unset PINAPP_TESTING__POISON_USER_ID, PINAPP_TESTING__COMMIT_"
    ):
        load_settings("production")
    assert load_settings("test").testing.injected == ["poison_user_id", "commit_guards"]
    monkeypatch.delenv("PINAPP_TESTING__POISON_USER_ID")
    monkeypatch.delenv("PINAPP_TESTING__COMMIT_GUARDS")
    assert load_settings("production").testing.injected == []


def test_profiles_differ_where_they_should() -> None:
    local, test, prod = (load_settings(p) for p in PROFILES)
    assert local.kafka.bootstrap != test.kafka.bootstrap
    assert local.stack.data_dir != test.stack.data_dir
    assert prod.db.dialect == "singlestore" and local.db.dialect == "mysql"
    assert prod.s3.endpoint_url is None


def test_environment_overrides_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINAPP_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv("PINAPP_DB__DIALECT", "singlestore")
    settings = load_settings("local")
    assert settings.kafka.partitions == 12
    assert settings.db.dialect == "singlestore"


def test_a_bad_value_names_the_setting_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINAPP_DB__PORT", "not-a-port")
    with pytest.raises(ConfigError) as info:
        load_settings("local")
    message = str(info.value)
    assert "db.port" in message and "PINAPP_DB__PORT" in message and "config/local.toml" in message


def test_an_unknown_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PINAPP_PROFILE='staging'"):
        load_settings("staging")


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINAPP_DB__PASSWORD", "hunter2-secret")
    settings = load_settings("local")
    assert settings.db.password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings.model_dump())


def test_min_insync_replicas_defaults_below_the_replication_factor_and_never_above_it() -> None:
    assert KafkaSettings(replication_factor=3).insync_replicas == 2
    assert KafkaSettings(replication_factor=1).insync_replicas == 1
    with pytest.raises(ValueError, match=r"min_insync_replicas=3 is above kafka\.replication_factor=2"):
        KafkaSettings(replication_factor=2, min_insync_replicas=3)
