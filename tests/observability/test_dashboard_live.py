"""A real Prometheus scrapes a worker and a gateway metrics endpoint every second; every dashboard
panel query and every alert rule is evaluated by it.

The targets are small aiohttp apps serving a WorkerMetrics / GatewayMetrics registry that is
driven (every metric, every scrape) just before each exposition, so rates and quantiles have
data. To check a real worker and gateway instead, pass their host:port to ``run_prometheus``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from tests.observability.catalog import (
    OPERATIONS_FILE,
    alert_rules,
    drive_gateway,
    drive_worker,
    github_anchors,
)
from wxsub.gateway.metrics import GatewayMetrics
from wxsub.streams.metrics import WorkerMetrics
from wxsub_dev.promcheck import (
    GATEWAY_JOB,
    MERCHANT_DASHBOARD_FILE,
    WORKER_JOB,
    Prometheus,
    dashboard_queries,
    panels_without_data,
    run_prometheus,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _serve(registry: CollectorRegistry, drive: Callable[[], None]) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        drive()
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def _address(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"{host}:{port}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prom() -> AsyncIterator[Prometheus]:
    worker_reg, gateway_reg = CollectorRegistry(), CollectorRegistry()
    worker, gateway = WorkerMetrics(worker_reg), GatewayMetrics(gateway_reg)
    runners = [
        await _serve(worker_reg, lambda: drive_worker(worker)),
        await _serve(gateway_reg, lambda: drive_gateway(gateway)),
    ]
    try:
        targets = {WORKER_JOB: [_address(runners[0])], GATEWAY_JOB: [_address(runners[1])]}
        async with run_prometheus(targets) as prometheus:
            await prometheus.wait_targets_up()
            yield prometheus
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_every_panel_query_returns_a_number(prom: Prometheus) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 30
    assert await panels_without_data(prom, queries) == []


async def test_every_merchant_panel_query_returns_a_number(prom: Prometheus) -> None:
    queries = dashboard_queries(MERCHANT_DASHBOARD_FILE)
    assert len(queries) >= 12
    assert await panels_without_data(prom, queries) == []


async def test_every_rule_loads_and_evaluates(prom: Prometheus) -> None:
    rules = await prom.wait_rules_evaluated()
    expected = [r["alert"] for r in alert_rules()]
    assert sorted(r["name"] for r in rules) == sorted(expected)
    anchors = github_anchors(OPERATIONS_FILE.read_text())
    for rule in rules:
        assert (rule["type"], rule["health"], rule.get("lastError", "")) == (
            "alerting",
            "ok",
            "",
        ), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["name"]
        assert rule["annotations"]["summary"], rule["name"]
        page, anchor = rule["annotations"]["runbook_url"].split("#")
        assert (page, anchor in anchors) == ("docs/operations.md", True), rule["name"]


async def test_alerts_fire_from_scraped_metrics(prom: Prometheus) -> None:
    # the driven metrics hold an appid paused on 45009 and sends in doubt: both alerts fire
    rows = await prom.wait_for('ALERTS{alertstate="firing", alertname="WxsubQuotaExhausted"}')
    assert [r["metric"]["appid"] for r in rows] == ["wxA"]
    await prom.wait_for('ALERTS{alertstate="firing", alertname="WxsubSendsInDoubt"}')
    alerts = await prom.alerts()
    summaries = {a["annotations"]["summary"] for a in alerts if a["state"] == "firing"}
    assert "WeChat daily send quota reached (45009) for appid wxA" in summaries
    # events flow, token refreshes succeed, targets are up: those alerts are (soon) not active.
    # (WxsubNoEvents may be pending for a moment: the first evaluation sees one sample only.)
    await prom.wait_for(
        'absent(ALERTS{alertname=~"WxsubNoEvents|WxsubTokenRefreshFailing|WxsubTargetDown"})'
    )


async def test_targets_use_the_deploy_job_names(prom: Prometheus) -> None:
    targets = await prom.targets()
    assert sorted(t["labels"]["job"] for t in targets) == [GATEWAY_JOB, WORKER_JOB]
    rows = await prom.query('up{job=~"wxsub-worker|wxsub-gateway"} == 1')
    assert len(rows) == 2
