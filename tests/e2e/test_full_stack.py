"""The whole chain on real components: a user accepts in the WeChat sandbox -> push to the
gateway -> subscriptions topic -> credits in a real worker -> an order event is sent to the
sandbox exactly once; without a new accept the next one is suppressed (no_credit); a send whose
response is lost is in_doubt and the sandbox's sent receipt reconciles it. Under steady traffic
(with the shop's ``opened`` events for the sent pages and a reject after a send) every panel of
both dashboards, the SRE one and the merchants' funnel, must return data."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.pipeline.harness import Deployment, free_port
from wxsub.agents.rules.attribution import REF_PARAM
from wxsub.gateway.app import create_gateway_app
from wxsub.gateway.producer import SubscriptionProducer
from wxsub.schemas.internal import Outcome
from wxsub.settings import Settings, load_settings
from wxsub.streams.outbox import partition_for
from wxsub.streams.topics import ensure_topics
from wxsub_dev.promcheck import (
    GATEWAY_JOB,
    MERCHANT_DASHBOARD_FILE,
    WORKER_JOB,
    dashboard_queries,
    panels_without_data,
    run_prometheus,
)
from wxsub_sandbox.push import EventPusher
from wxsub_sandbox.server import run_sandbox

pytestmark = pytest.mark.kafka

APP = "wx00e2e000000000aa"
TPL = "TPL_ORDER_STATUS_E2E"
USER = "oE2Euser00000000000000000001"
CONTENT = "订单号:{{character_string1.DATA}}\n订单状态:{{phrase2.DATA}}"

WORLD = {
    "apps": [
        {
            "appid": APP,
            "secret": "sandbox-secret-e2e",
            "pages": ["pages/order/detail"],
            "templates": [{"id": TPL, "title": "订单状态提醒", "content": CONTENT, "type": 2}],
            "users": [{"openid": USER}],
        }
    ]
}

TOML_CONTENT = orjson.dumps(CONTENT).decode()  # a JSON string is a valid TOML basic string
MERCHANTS = f"""
[apps.{APP}]
timezone = "Asia/Shanghai"
collapse_window_s = 0
[apps.{APP}.kinds.order_status]
template_id = "{TPL}"
content = {TOML_CONTENT}
page = "pages/order/detail?id={{order_id}}"
notify_on = ["paid", "shipped"]
[apps.{APP}.kinds.order_status.data]
character_string1 = "{{order_id}}"
phrase2 = "{{status_text}}"
"""


def settings_toml(api_base: str, gateway_port: int, app: str = APP, label: str = "e2e") -> str:
    """The worker's and gateway's settings for one sandbox app (secret and push token named
    after ``label``; the sandbox world and the pusher use the same)."""
    return f"""
[wechat]
api_base = "{api_base}"
[wechat.apps.{app}]
secret = "sandbox-secret-{label}"
[gateway]
port = {gateway_port}
[gateway.apps.{app}]
token = "push-token-{label}"
"""


def order_event(n: int, order: str, status: str) -> tuple[str, str, bytes]:
    doc = {
        "type": "order_status", "v": 1, "event_id": f"e2e-{n}", "occurred_at": _now_rfc3339(),
        "appid": APP, "openid": USER, "order_id": order, "status": status, "amount": 2590,
    }  # fmt: skip
    return "order-status", f"{APP}:{order}", orjson.dumps(doc)


def _opens(sb: Any, n: int) -> list[tuple[str, str, bytes]]:
    """``opened`` events for the last sends the sandbox took (refs from their pages), and an
    unknown ref every third round."""
    refs = [
        parse_qs(urlsplit(c.page).query).get(REF_PARAM, ["AAAAAAAAAAAA"])[0]
        for c in sb.recorder.calls(endpoint="send", errcode=0)[-2:]
        if c.page
    ]
    if n % 3 == 0:
        refs.append("AAAAAAAAAAAA")
    out = []
    for i, ref in enumerate(refs):
        doc = {
            "type": "opened", "v": 1, "event_id": f"open-{n}-{i}", "occurred_at": _now_rfc3339(),
            "appid": APP, "openid": USER, "ref": ref, "scene": 1014,
        }  # fmt: skip
        out.append(("opened", f"{APP}:{USER}", orjson.dumps(doc)))
    return out


def _now_rfc3339() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@contextlib.asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[str]:
    producer = SubscriptionProducer.from_settings(settings)
    await producer.start()
    runner = web.AppRunner(create_gateway_app(settings, producer, CollectorRegistry()))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", settings.gateway.port).start()
        yield f"http://127.0.0.1:{settings.gateway.port}"
    finally:
        await runner.cleanup()
        await producer.stop()


async def wait_outcome(
    dep: Deployment, pred: Any, timeout: float = 60, at_least: int = 1
) -> list[Outcome]:
    """The outcomes matching ``pred`` once there are ``at_least`` of them (or at the timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = [o for o in await dep.outcomes() if pred(o)]
        if len(found) >= at_least or loop.time() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_accept_send_credit_and_receipt(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The scenario, with a real Prometheus scraping the real worker and gateway from the start;
    after it, under steady traffic, every dashboard panel query must return data."""
    async with run_sandbox(WORLD) as sb:
        cfg = tmp_path / "wxsub.toml"
        cfg.write_text(settings_toml(sb.base_url, free_port()))
        dep = Deployment(
            kafka_bootstrap, tmp_path, MERCHANTS, stages="orders,products,decide,deliver,stats",
            extra_env={"WXSUB_CONFIG": str(cfg)},
        )  # fmt: skip
        settings = load_settings(cfg, env=dep.env(0))
        await ensure_topics(dep.kafka, f"app{dep.uid}")
        pusher = EventPusher.from_settings(settings, f"http://127.0.0.1:{settings.gateway.port}")
        pusher.attach(sb.world)
        targets = {
            WORKER_JOB: [f"127.0.0.1:{dep.web_ports[0]}"],
            GATEWAY_JOB: [f"127.0.0.1:{settings.gateway.port}"],
        }
        async with (
            gateway(settings),
            httpx.AsyncClient(base_url=sb.base_url) as admin,
            run_prometheus(targets) as prom,
        ):
            dep.start(0)
            try:
                await prom.wait_targets_up(timeout=60)
                await _scenario(dep, admin)
                traffic = asyncio.create_task(_steady_traffic(dep, admin, sb))
                try:
                    empty = await panels_without_data(prom, timeout=60)
                    merchant = dashboard_queries(MERCHANT_DASHBOARD_FILE)
                    empty += await panels_without_data(prom, merchant, timeout=60)
                finally:
                    traffic.cancel()
                assert not empty, "panels without data:\n" + "\n".join(
                    f"{q.panel}: {q.expr} ({why})" for q, why in empty
                )
            except AssertionError:
                print(dep.logs())
                raise
            finally:
                dep.stop_all()
                await pusher.close()
        sends = sb.recorder.calls(endpoint="send")
        assert [(c.openid, c.template_id, c.errcode) for c in sends[:2]] == [(USER, TPL, 0)] * 2


async def _scenario(dep: Deployment, admin: httpx.AsyncClient) -> None:
    r = await admin.post("/admin/accept", json={"appid": APP, "openid": USER, "template_id": TPL})
    assert r.status_code == 200, r.text
    applied = await wait_outcome(dep, _accept_applied)
    assert applied, "the accept never reached the worker through the gateway"

    await dep.publish([order_event(1, "A1", "paid")])
    sent = await wait_outcome(dep, lambda o: o.event_id == "e2e-1" and o.reason == "sent")
    assert sent, "the paid order was not sent"

    await dep.publish([order_event(2, "A1", "shipped")])
    none_left = await wait_outcome(dep, lambda o: o.event_id == "e2e-2")
    assert [o.reason for o in none_left] == ["no_credit"]

    # a send whose response is lost: in_doubt, then the sandbox's receipt settles it
    r = await admin.post("/admin/accept", json={"appid": APP, "openid": USER, "template_id": TPL})
    assert r.status_code == 200
    # the second accept's own outcome (the first accept's matches the same predicate; the sent
    # receipt of e2e-1 is a subscription event too, applied with the detail "sent")
    applied = await wait_outcome(dep, _accept_applied, 30, at_least=2)
    assert len(applied) >= 2, "the second accept never reached the worker"
    r = await admin.post(
        "/admin/faults", json={"endpoints": ["send"], "next": [{"action": "drop"}]}
    )
    assert r.status_code == 200, r.text
    await dep.publish([order_event(3, "B7", "paid")])
    doubt = await wait_outcome(dep, lambda o: o.event_id == "e2e-3" and o.reason == "in_doubt")
    assert doubt, "a dropped response must leave the send in doubt; e2e-3 ended: " + repr(
        [o for o in await dep.outcomes() if o.event_id == "e2e-3"]
    )
    settled = await wait_outcome(
        dep, lambda o: o.event_id == "e2e-3" and o.reason == "reconciled_sent", 60
    )
    assert settled, "the sent receipt did not reconcile the in-doubt send"


def _accept_applied(o: Outcome) -> bool:
    """The decide stage's outcome of a popup accept (not of a sent receipt, also ``applied``)."""
    return o.kind == "subscription" and o.reason == "applied" and o.detail == "popup accept"


async def _steady_traffic(dep: Deployment, admin: httpx.AsyncClient, sb: Any) -> None:
    """Accepts, paid orders (sent), shipped ones (no credit left) and a bad event, every 0.5 s,
    so every rate, ratio and quantile on the dashboard has something to show; the shop reports
    opens of the sent pages (one unknown ref now and then), and the user once rejects the
    template after a send (one reject: far below the feedback pause's threshold)."""
    n = 100
    while True:
        n += 1
        if n == 104:
            await admin.post(
                "/admin/reject", json={"appid": APP, "openid": USER, "template_id": TPL}
            )
        await dep.publish(_opens(sb, n))
        await admin.post("/admin/accept", json={"appid": APP, "openid": USER, "template_id": TPL})
        events = [order_event(n, f"T{n}", "paid"), order_event(10_000 + n, f"T{n}", "shipped")]
        if n % 4 == 0:
            events.append(("order-status", f"{APP}:bad", b"{not json"))
        if n % 5 == 0:  # WeChat refuses one send now and then: failed, credit restored
            await admin.post(
                "/admin/faults", json={"endpoints": ["send"], "next": [{"errcode": 45168}]}
            )
        await dep.publish(events)
        if n % 3 == 0:  # a publisher whose partitioner is not murmur2: moved, then processed
            wrong = [order_event(30_000 + n, f"M{n}", "shipped")]
            await dep.publish(wrong, lambda key, parts: (partition_for(key, parts) + 1) % parts)
        await asyncio.sleep(0.5)
