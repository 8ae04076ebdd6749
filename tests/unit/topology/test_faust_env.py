"""pinapp's settings are the only source of the worker's faust configuration: faust's own
environment variables (read by ``faust.App`` and, at import, by ``faust.types._env``) change
nothing, and ``worker.data_dir`` is created with its parents or fails in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

# Each would, read by faust, point the worker elsewhere (checked: BROKER_URL, WEB_PORT and
# APP_DATADIR each did before PinApp built its settings with env={}).
FAUST_ENV = {
    "BROKER_URL": "kafka://192.0.2.1:9",
    "WEB_PORT": "1234",
    "WEB_HOST": "elsewhere.invalid",
    "WEB_BIND": "0.0.0.0",
    "APP_DATADIR": "/tmp/not-pinapps",
    "APP_STORE": "memory://",
    "TOPIC_PARTITIONS": "9",
    "TABLE_STANDBY_REPLICAS": "5",
    "BROKER_SESSION_TIMEOUT": "99",
    "APP_ENV_PREFIX": "XPRE_",
    "XPRE_WEB_PORT": "4321",
    "FAUST_DATADIR": "/tmp/faust-datadir",
    "FAUST_WEB_PORT": "2345",
    "F_WEB_PORT": "3456",
    "FAUST_DEBUG": "1",
    "FAUST_WORKDIR": "/tmp",
}

PROBE = """
import json
from pinapp.topology.app import app, archive_app
print(json.dumps({name: {"broker": [str(u) for u in a.conf.broker], "web_port": a.conf.web_port,
                         "web_host": a.conf.web_host, "web_bind": a.conf.web_bind,
                         "datadir": str(a.conf.datadir), "store": str(a.conf.store),
                         "partitions": a.conf.topic_partitions, "standbys": a.conf.table_standby_replicas,
                         "session_timeout": a.conf.broker_session_timeout}
                  for name, a in (("app", app), ("archive_app", archive_app))}))
"""


def _probe(env: dict[str, str]) -> dict[str, dict[str, object]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PINAPP_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**base, "PINAPP_PROFILE": "test", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_faust_environment_variables_do_not_override_pinapps_settings() -> None:
    assert _probe(FAUST_ENV) == _probe({})
    app = _probe(FAUST_ENV)["app"]
    assert app["broker"] == ["kafka://127.0.0.1:29092"]  # config/test.toml
    assert app["web_port"] == 26066
    assert app["datadir"].endswith(".stack/test/worker")
    assert app["store"] == "rocksdb:"
    assert app["partitions"] == 4 and app["standbys"] == 1


def test_pinapps_own_variables_still_apply() -> None:
    app = _probe({**FAUST_ENV, "PINAPP_WORKER__WEB_PORT": "27777", "PINAPP_KAFKA__BOOTSTRAP": "127.0.0.1:1"})["app"]
    assert app["web_port"] == 27777
    assert app["broker"] == ["kafka://127.0.0.1:1"]


def test_the_worker_command_drops_faust_import_time_variables_before_faust_reads_them() -> None:
    probe = """
import json, os, sys
from config import load_settings
from pinapp.topology import startup
from pathlib import Path
options = startup.faust_options(load_settings("test"), Path("/tmp/d"))
import faust.types._env as fenv
print(json.dumps({"options": options, "debug": fenv.DEBUG, "workdir": fenv.WORKDIR, "datadir": fenv.DATADIR,
                  "web_port": fenv.WEB_PORT, "left": sorted(n for n in os.environ if n.startswith(("FAUST_", "F_")))}))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**os.environ, **FAUST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["options"][:4] == ["--no-debug", "--datadir", "/tmp/d", "worker"]
    assert (doc["debug"], doc["workdir"], doc["web_port"], doc["left"]) == (False, None, 6066, [])
    assert doc["datadir"] == "{conf.name}-data"
    assert "ignoring FAUST_WORKDIR" in out.stderr


def test_a_data_dir_whose_parents_do_not_exist_is_created(tmp_path: Path) -> None:
    from pinapp.topology.startup import make_data_dir

    target = tmp_path / "x" / "y" / "worker"
    make_data_dir(target)
    assert target.is_dir()


def test_a_data_dir_that_cannot_be_made_fails_in_one_line_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**os.environ, "PINAPP_WORKER__DATA_DIR": str(blocker / "worker"), "PINAPP_WORKER__ALLOCATOR": "system"}
    out = subprocess.run(
        [sys.executable, "-c", "from pinapp.cli import main; main()", "--profile", "test", "worker"],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    lines = [line for line in (out.stderr + out.stdout).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "worker.data_dir=" in lines[0] and "PINAPP_WORKER__DATA_DIR" in lines[0]
    assert "Traceback" not in out.stderr
