"""deploy/grafana/pinapp.json: a dashboard Grafana can import, whose every query names metrics
pinapp exports (there is no official offline JSON Schema for dashboards: the structure Grafana
relies on is checked here)."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import generate_latest

from pinapp.telemetry import metrics
from tests.paths import REPO

BOARD = REPO / "deploy" / "grafana" / "pinapp.json"
PROMETHEUS_OWN = {"ALERTS"}  # series Prometheus itself keeps


def _exported() -> set[str]:
    """Every series name pinapp's processes export (labelled families once they have a child;
    Singer's, from its collector)."""
    metrics.SINK_FAILING.labels(sink="singlestore")
    names = set(re.findall(r"^# TYPE (\w+) (\w+)", generate_latest().decode(), re.M))
    names |= {(family.name, family.type) for family in metrics.SingerCollector(list).describe()}
    out: set[str] = set()
    for name, kind in names:
        out.add(name)
        if kind == "counter":
            out |= {f"{name}_total", f"{name}_created"}
        if kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return out


def _board() -> dict[str, Any]:
    return json.loads(BOARD.read_text())


def test_the_board_has_the_structure_grafana_imports() -> None:
    board = _board()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    [datasource] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}, panel["title"]
        assert panel["datasource"]["uid"] == "${" + datasource["name"] + "}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_query_names_only_metrics_pinapp_exports() -> None:
    exported = _exported()
    for panel in _board()["panels"]:
        for target in panel.get("targets", []):
            named = set(re.findall(r"\bpinapp_\w+", target["expr"]))
            others = set(re.findall(r"\b([A-Z]{2,}\w*)\{", target["expr"]))
            assert named or others, (panel["title"], target["expr"])
            assert named <= exported, (panel["title"], named - exported)
            assert others <= PROMETHEUS_OWN, (panel["title"], others)


def test_the_board_shows_what_an_operator_of_the_pipeline_looks_for() -> None:
    queries = " ".join(t["expr"] for p in _board()["panels"] for t in p.get("targets", []))
    for wanted in (
        "pinapp_consumer_lag",  # lag per partition
        "pinapp_events_in_total",  # events/s in
        "pinapp_rows_written_total",  # ... and written
        "pinapp_sink_last_success_timestamp_seconds",  # freshness
        "pinapp_dead_lettered_total",  # dead letters by reason
        "pinapp_sink_failing",  # sink state
        "pinapp_archive_cuts_total",  # the archiver's cuts
        "pinapp_singer_bytes_behind",  # Singer's bytes behind
        "pinapp_alerts_firing",  # the alerts firing
    ):
        assert wanted in queries, wanted
