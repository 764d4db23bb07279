"""The Grafana dashboard (deploy/grafana/nudge.json): valid JSON Grafana can import, and every
metric it queries is one the engine or the scoring service really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine.runtime.metrics import EngineMetrics
from serving.metrics import ServiceMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "nudge.json"
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def exposed(engine_store) -> set[str]:
    """Every sample name the two apps expose (histograms' buckets, counters' _total)."""
    names = set()
    for text in (EngineMetrics(engine_store).render(), ServiceMetrics().render()):
        for family in text_string_to_metric_families(text.decode()):
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            names.update(f"{family.name}{suffix}" for suffix in SUFFIXES)
    return names


def test_every_queried_metric_exists(engine_store):
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 16 and len({p["id"] for p in dashboard["panels"]}) == len(
        dashboard["panels"]
    )
    queried = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"\bnudge_[a-z_]+", target["expr"])
    }
    missing = queried - exposed(engine_store)
    assert not missing, f"the dashboard queries metrics nobody exposes: {sorted(missing)}"
    # What the issue asks the dashboard to show.
    for wanted in ("nudge_engine_processing_lag_seconds", "nudge_engine_decisions_total",
                   "nudge_engine_suppressions_total", "nudge_engine_due_actions",
                   "nudge_engine_oldest_due_age_seconds", "nudge_engine_send_limit_per_minute",
                   "nudge_engine_loop_errors_total", "nudge_engine_timer_backlog",
                   "nudge_engine_scoring_request_duration_seconds_bucket",
                   "nudge_engine_scoring_circuit_state", "nudge_engine_lake_sync_lag_seconds",
                   "nudge_scoring_request_duration_seconds_bucket"):  # fmt: skip
        assert wanted in queried, wanted


def test_panels_do_not_overlap():
    dashboard = json.loads(DASHBOARD.read_text())
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
