"""Every metric the rules and the dashboard use exists in the code, with the labels they match on;
every alert has a runbook in docs/operations.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.observability.catalog import (
    DASHBOARD_FILE,
    MERCHANT_DASHBOARD_FILE,
    OPERATIONS_FILE,
    PROMETHEUS_DIR,
    RULES_FILE,
    alert_rules,
    driven_registries,
    exposed_metrics,
    github_anchors,
    load_yaml,
    metric_names,
    selector_labels,
)
from wxsub_dev.promcheck import DASHBOARD_FILES, GATEWAY_JOB, WORKER_JOB, dashboard_queries


def _exposed() -> dict[str, set[str]]:
    return exposed_metrics(*driven_registries())


def _dashboard_text(path: Path = DASHBOARD_FILE) -> str:
    return "\n".join(q.expr for q in dashboard_queries(path))


def test_driver_touches_every_metric() -> None:
    worker, gateway = driven_registries()
    for registry in (worker, gateway):
        empty = [f.name for f in registry.collect() if not f.samples]
        assert empty == []


def test_rules_use_only_existing_metrics_and_labels() -> None:
    exposed = _exposed()
    text = "\n".join(rule["expr"] for rule in alert_rules())
    assert metric_names(text) - exposed.keys() == set()
    assert [(m, lbl) for m, lbl in selector_labels(text) if lbl not in exposed[m]] == []


def test_dashboard_uses_only_existing_metrics_and_labels() -> None:
    exposed = _exposed()
    text = _dashboard_text()
    used = metric_names(text)
    assert used - exposed.keys() == set()
    assert [(m, lbl) for m, lbl in selector_labels(text) if lbl not in exposed[m]] == []
    # the panels the SREs asked for, by the metric each must show
    for required in (
        "wxsub_events_in_total",
        "wxsub_dlq_total",
        "wxsub_suppressed_total",
        "wxsub_intents_total",
        "wxsub_sends_total",
        "wxsub_end_to_end_seconds_bucket",
        "wxsub_wechat_call_seconds_bucket",
        "wxsub_credits_total",
        "wxsub_in_doubt_total",
        "wxsub_deferred_backlog",
        "wxsub_consumer_lag",
        "wxsub_token_refreshes_total",
        "wxsub_gateway_requests_total",
        "wxsub_gateway_rejected_total",
    ):
        assert required in used, required


def test_the_dashboards_cover_every_metric_family() -> None:
    worker, gateway = driven_registries()
    used = metric_names("\n".join(_dashboard_text(p) for p in DASHBOARD_FILES))
    families = {f.name for r in (worker, gateway) for f in r.collect()}
    shown = {f for f in families if any(u.startswith(f) for u in used)}
    assert families - shown == set()


def test_merchant_dashboard_shows_the_funnel_without_personal_data() -> None:
    exposed = _exposed()
    text = _dashboard_text(MERCHANT_DASHBOARD_FILE)
    used = metric_names(text)
    assert used == {"wxsub_funnel_total", "wxsub_funnel_suppressed_total", "wxsub_opens_total"}
    assert [(m, lbl) for m, lbl in selector_labels(text) if lbl not in exposed[m]] == []
    for step in ("granted", "sent", "opened", "rejected_after_send"):
        assert f'step="{step}"' in text, step
    assert "topk(5, sum by (reason)" in text
    for name in used:  # labels are config values only: never a user
        assert not {"openid", "user", "touser", "ref"} & exposed[name], name
    # every panel filters on the appid variable
    assert all('appid=~".*"' in q.expr for q in dashboard_queries(MERCHANT_DASHBOARD_FILE))


@pytest.mark.parametrize(
    ("path", "uid", "variables"),
    [
        (DASHBOARD_FILE, "wxsub-overview", ["datasource"]),
        (MERCHANT_DASHBOARD_FILE, "wxsub-merchant", ["datasource", "appid"]),
    ],
)
def test_dashboard_shape(path: Path, uid: str, variables: list[str]) -> None:
    dashboard = json.loads(path.read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == uid
    assert [v["name"] for v in dashboard["templating"]["list"]] == variables
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    # no two panels overlap on the grid
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        mine = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & mine, panel["title"]
        assert g["x"] + g["w"] <= 24
        cells |= mine


def test_every_alert_has_severity_summary_and_its_runbook_entry() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) >= 10
    anchors = github_anchors(OPERATIONS_FILE.read_text())
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/operations.md has no '### {name}' entry"


def test_scrape_config_jobs_match_promcheck() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert [j["job_name"] for j in config["scrape_configs"]] == [WORKER_JOB, GATEWAY_JOB]
    assert [PROMETHEUS_DIR / f for f in config["rule_files"]] == [RULES_FILE]
    for job in config["scrape_configs"]:
        for sd in job["file_sd_configs"]:
            files = [f for pattern in sd["files"] for f in PROMETHEUS_DIR.glob(pattern)]
            assert files, sd
            for path in files:
                groups = json.loads(path.read_text())
                assert all(g["targets"] for g in groups), path
