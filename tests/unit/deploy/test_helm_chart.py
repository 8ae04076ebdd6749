"""deploy/helm/pinapp renders with ``helm template`` for several value sets, and every object it
makes is valid against the Kubernetes schemas (``kubernetes-validate``, offline).

helm is built from the Go module proxy by ``make helm`` (``make test`` does it first); without it
these tests fail and say how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config import load_settings
from tests.paths import REPO

CHART = REPO / "deploy" / "helm" / "pinapp"
KUBERNETES = ("1.25", "1.30", "1.37")  # the oldest the chart allows (Chart.yaml), a middle one, the newest
REQUIRED = {
    "kafka.bootstrap": "kafka-0.kafka:9092",
    "db.host": "singlestore",
    "s3.bucket": "pinapp-archive",
    "secrets.values.web-token": "a-long-random-token",
}
VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "tls-and-own-secret": {
        "worker.webTlsSecret": "pinapp-web-tls",
        "kafka.caSecret": "kafka-ca",
        "secrets.create": "false",
        "secrets.name": "pinapp-from-vault",
        "worker.replicas": "5",
    },
    "lean": {
        "alerter.enabled": "false",
        "singer.enabled": "false",
        "worker.staticMembership": "false",
        "kafka.securityProtocol": "SSL",
        "worker.storage.storageClassName": "fast-ssd",
    },
}


def _helm() -> str:
    found = (
        os.environ.get("PINAPP_HELM")
        or shutil.which("helm", path=str(REPO / ".stack" / "tools"))
        or shutil.which("helm")
    )
    if not found:
        pytest.fail("helm is missing: run `make helm` (it builds helm v4.3.2 from the Go module proxy)", pytrace=False)
    return found


def _render(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    sets = [arg for key, value in {**REQUIRED, **values}.items() for arg in ("--set", f"{key}={value}")]
    return subprocess.run([_helm(), "template", "demo", str(CHART), *sets], capture_output=True, text=True, check=False)


def _objects(values: dict[str, str]) -> list[dict[str, Any]]:
    done = _render(values)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_is_valid_kubernetes(name: str) -> None:
    objects = _objects(VALUE_SETS[name])
    assert objects
    for version in KUBERNETES:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{obj['kind']} {obj['metadata']['name']} on {version}: {exc.message}") from None


def _kind(objects: list[dict[str, Any]], kind: str, component: str = "") -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(component)]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_workers_are_a_stateful_set_with_a_volume_each_static_ids_standbys_and_a_health_probe() -> None:
    objects = _objects({})
    [workers] = _kind(objects, "StatefulSet", "-worker")
    spec = workers["spec"]
    assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    [container] = spec["template"]["spec"]["containers"]
    env = _env(container)
    assert env["PINAPP_WORKER__GROUP_INSTANCE_ID"] == "$(POD_NAME)"  # the pod name: a static member id
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["PINAPP_WORKER__TABLE_STANDBY_REPLICAS"] == "1"
    assert env["PINAPP_KAFKA__SASL_PASSWORD"]["secretKeyRef"]["key"] == "kafka-sasl-password"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {env["PINAPP_WORKER__DATA_DIR"]}
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "6066"
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert {p["metadata"]["name"] for p in _kind(objects, "PodDisruptionBudget")} == {
        "demo-pinapp-worker",
        "demo-pinapp-archiver",
    }


def test_singer_runs_on_every_node_over_the_hosts_log_folder_and_the_alerter_reads_every_worker() -> None:
    objects = _objects({"worker.replicas": "2"})
    [singer] = _kind(objects, "DaemonSet", "-singer")
    volumes = {v["name"]: v for v in singer["spec"]["template"]["spec"]["volumes"]}
    assert volumes["logs"]["hostPath"]["path"] == "/var/log/app"
    assert volumes["watermarks"]["hostPath"]["type"] == "DirectoryOrCreate"
    [alerter] = _kind(objects, "Deployment", "-alerter")
    env = _env(alerter["spec"]["template"]["spec"]["containers"][0])
    assert env["PINAPP_ALERTS__WORKER_URLS"] == (
        '["http://demo-pinapp-worker-0.demo-pinapp-worker:6066","http://demo-pinapp-worker-1.demo-pinapp-worker:6066"]'
    )
    [archivers] = _kind(objects, "Deployment", "-archiver")
    assert archivers["spec"]["replicas"] == 2


def test_the_secret_is_the_chart_s_or_the_operator_s() -> None:
    assert _kind(_objects({}), "Secret")
    objects = _objects(VALUE_SETS["tls-and-own-secret"])
    assert not _kind(objects, "Secret")
    [workers] = _kind(objects, "StatefulSet", "-worker")
    env = _env(workers["spec"]["template"]["spec"]["containers"][0])
    assert env["PINAPP_DB__PASSWORD"]["secretKeyRef"]["name"] == "pinapp-from-vault"
    assert env["PINAPP_WORKER__WEB_TLS_CERT_FILE"] == "/etc/pinapp/web-tls/tls.crt"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_required_value_names_itself(missing: str) -> None:
    sets = [a for k, v in REQUIRED.items() if k != missing for a in ("--set", f"{k}={v}")]
    done = subprocess.run([_helm(), "template", "demo", str(CHART), *sets], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and f"{missing} is required" in done.stderr, done.stderr


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_each_process_s_environment_is_settings_pinapp_accepts(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every PINAPP_* variable the chart sets is a real setting, with a value its rules accept (a
    secret stands in as a placeholder, the pod name as a pod's, a file mounted from a Secret as a
    file here)."""
    for obj in _objects(VALUE_SETS[name]):
        if obj["kind"] not in {"StatefulSet", "Deployment", "DaemonSet"}:
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            env = {
                e["name"]: e.get("value", "placeholder") for e in container["env"] if e["name"].startswith("PINAPP_")
            }
            env = {k: v.replace("$(POD_NAME)", "demo-pinapp-worker-0") for k, v in env.items()}
            for key, value in env.items():
                if value.startswith("/etc/pinapp/"):  # a Secret's file in the pod
                    (mounted := tmp_path / value.removeprefix("/etc/pinapp/")).parent.mkdir(parents=True, exist_ok=True)
                    mounted.write_text("mounted from a Secret")
                    env[key] = str(mounted)
            with monkeypatch.context() as patched:
                for key in [k for k in os.environ if k.startswith("PINAPP_")]:
                    patched.delenv(key)
                for key, value in env.items():
                    patched.setenv(key, value)
                settings = load_settings(env["PINAPP_PROFILE"])
            assert settings.kafka.bootstrap == REQUIRED["kafka.bootstrap"], container["name"]
            if container["name"] == "singer":
                assert [s.name for s in settings.singer.streams] == ["app"]
            if container["name"] == "alerter":
                assert settings.alerts.worker_urls[0].endswith("demo-pinapp-worker-0.demo-pinapp-worker:6066")
