"""Support traces through delivery, on real components: the broker, the WeChat sandbox, the
gateway (the sandbox pushes accepts and receipts to it, as WeChat does) and a real worker
process running the orders, decide and deliver stages with its support server on.

One user's orders end in every ledger state: sent (with the msgid the sandbox returned), in
doubt (the sandbox took the send and dropped its answer), failed (a permanent refusal, 43101,
injected in the sandbox); another user's send is refused with 40003. Their traces, asked
through the support API and through ``wxsub trace --json``, show exactly what the sandbox
recorded: msgids and errcodes per notification. Then the dropped send's receipt arrives and the
trace shows it reconciled, with the msgid the sandbox had given it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.test_full_stack import gateway, settings_toml, wait_outcome
from tests.fixtures.kafka_helpers import wait_for_topic
from tests.pipeline.harness import ROOT, Deployment, free_port
from wxsub.schemas.internal import Outcome
from wxsub.settings import load_settings
from wxsub.streams.topics import ensure_topics
from wxsub.support.trace import fetch_trace, format_trace
from wxsub_sandbox import FaultSpec
from wxsub_sandbox.push import EventPusher
from wxsub_sandbox.server import run_sandbox

pytestmark = pytest.mark.kafka

APP = "wx00trace0000000dd"
TPL = "TPL_ORDER_STATUS_TRACE"
USER = "oTraceUser000000000000000001"
USER_B = "oTraceUser000000000000000002"
CONTENT = "订单号:{{character_string1.DATA}}\n订单状态:{{phrase2.DATA}}"
PAGE = "pages/order/detail"

WORLD = {
    "apps": [
        {
            "appid": APP,
            "secret": "sandbox-secret-trace",
            "pages": [PAGE],
            "templates": [{"id": TPL, "title": "订单状态提醒", "content": CONTENT, "type": 2}],
            "users": [{"openid": USER}, {"openid": USER_B}],
        }
    ]
}

MERCHANTS = f"""
[apps.{APP}]
timezone = "Asia/Shanghai"
collapse_window_s = 0
[apps.{APP}.kinds.order_status]
template_id = "{TPL}"
content = {orjson.dumps(CONTENT).decode()}
page = "{PAGE}?id={{order_id}}"
notify_on = ["paid", "shipped"]
[apps.{APP}.kinds.order_status.data]
character_string1 = "{{order_id}}"
phrase2 = "{{status_text}}"
"""


@dataclass
class Gate:
    """The sandbox's push hook with a hold: while ``hold_receipts``, sent receipts are lost
    (WeChat's push did not come yet); ``world.sent`` brings one back later."""

    pusher: EventPusher
    hold_receipts: bool = False

    async def __call__(self, event: dict[str, Any]) -> None:
        if self.hold_receipts and event["event"] == "subscribe_msg_sent_event":
            return
        await self.pusher(event)


def order_event(order_id: str, openid: str) -> tuple[str, str, bytes]:
    doc = {
        "type": "order_status", "v": 1, "event_id": f"trace-{order_id}",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "appid": APP, "openid": openid, "order_id": order_id, "status": "paid", "amount": 990,
    }  # fmt: skip
    return "order-status", f"{APP}:{order_id}", orjson.dumps(doc)


def by_order(trace: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The intents of a user's trace by order id: their ledger state as the trace shows it."""
    out = {}
    for d in trace["decisions"]:
        if d["kind"] == "order_status" and d["reason"] == "intent":
            assert d["notification_id"], d
            out[d["subject"]] = d["delivery"]
    return out


def cli_trace(url: str, openid: str) -> dict[str, Any]:
    """``wxsub trace --json`` as a support engineer runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "wxsub", "trace", "--json", "--url", url, APP, openid],
        cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    doc: dict[str, Any] = orjson.loads(proc.stdout)
    return doc


async def _outcome(dep: Deployment, order_id: str, reason: str, timeout: float = 30) -> Outcome:
    found = await wait_outcome(
        dep, lambda o: o.event_id == f"trace-{order_id}" and o.reason == reason, timeout
    )
    assert found, f"{order_id}: no {reason} outcome; the worker said:\n{dep.logs()}"
    return found[0]


async def test_trace_shows_sent_failed_in_doubt_and_reconciled_as_the_sandbox_recorded(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with run_sandbox(WORLD) as sb:
        cfg = tmp_path / "wxsub.toml"
        cfg.write_text(settings_toml(sb.base_url, free_port(), APP, "trace"))
        support = f"http://127.0.0.1:{free_port()}"
        dep = Deployment(
            kafka_bootstrap, tmp_path, MERCHANTS, stages="orders,decide,deliver",
            extra_env={"WXSUB_CONFIG": str(cfg), "WXSUB_SUPPORT_ENABLED": "true",
                       "WXSUB_SUPPORT_PORT": support.rsplit(":", 1)[1],
                       "WXSUB_DELIVERY_TIMER_INTERVAL_S": "0.2"},
        )  # fmt: skip
        settings = load_settings(cfg, env=dep.env(0))
        await ensure_topics(dep.kafka, f"app{dep.uid}")
        for logical in ("subscriptions", "order-status"):  # the gateway's and our producer's
            await wait_for_topic(kafka_bootstrap, dep.kafka.topic(logical), dep.partitions)
        pusher = EventPusher.from_settings(settings, f"http://127.0.0.1:{settings.gateway.port}")
        gate = Gate(pusher)
        sb.world.on_event.append(gate)
        try:
            async with gateway(settings):
                dep.start(0)
                try:
                    await _scenario(dep, sb, gate, support)
                finally:
                    dep.stop_all()
        finally:
            sb.world.on_event.remove(gate)
            await sb.world.drain_events()
            await pusher.close()


async def _scenario(dep: Deployment, sb: Any, gate: Gate, support: str) -> None:
    world = sb.world
    # the users accept in the sandbox: three credits for USER, one for USER_B (gateway -> worker);
    # a second apart: a popup event's id is its user, template and second (WeChat's dedupe)
    now = time.time() - 10
    for i, openid in enumerate((USER, USER, USER, USER_B)):
        world.accept(APP, openid, [TPL], now=now + i)
    applied = await wait_outcome(
        dep, lambda o: o.kind == "subscription" and o.reason == "applied", 60, at_least=4
    )
    assert len(applied) == 4, f"accepts did not reach the worker:\n{dep.logs()}"

    # one order at a time, so that each injected fault meets the send it is meant for
    await dep.publish([order_event("S1", USER)])
    await _outcome(dep, "S1", "sent")
    gate.hold_receipts = True  # the dropped send's receipt comes later
    sb.faults.set(FaultSpec.from_json({"next": [{"action": "drop"}]}))
    await dep.publish([order_event("D1", USER)])
    await _outcome(dep, "D1", "in_doubt")
    gate.hold_receipts = False
    sb.faults.set(FaultSpec.from_json({"next": [{"errcode": 43101}]}))
    await dep.publish([order_event("F1", USER)])
    await _outcome(dep, "F1", "failed")
    sb.faults.set(FaultSpec.from_json({"next": [{"errcode": 40003}]}))
    await dep.publish([order_event("F2", USER_B)])
    await _outcome(dep, "F2", "failed")

    # what the sandbox recorded, per order: one send call each, in the order they were made
    # (an injected refusal is answered before the body is read: its call has no page)
    sends = sb.recorder.calls(endpoint="send")
    assert len(sends) == 4, sends
    calls = dict(zip(["S1", "D1", "F1", "F2"], sends, strict=True))
    pages = [calls[o].page for o in ("S1", "D1")]
    assert [p.split("&wxref=")[0] for p in pages] == [f"{PAGE}?id=S1", f"{PAGE}?id=D1"]
    assert all("&wxref=" in p for p in pages)  # the open-attribution ref (docs/policies.md)
    assert (calls["S1"].errcode, calls["S1"].processed) == (0, True)
    assert calls["S1"].msgid
    assert calls["D1"].dropped and calls["D1"].processed and calls["D1"].msgid
    assert (calls["F1"].errcode, calls["F1"].processed) == (43101, False)
    assert (calls["F2"].errcode, calls["F2"].processed) == (40003, False)

    # the traces: through the API (the support server of the worker)
    trace = await asyncio.to_thread(fetch_trace, support, APP, USER)
    assert trace["unavailable"] == {}
    got = by_order(trace)
    assert set(got) == {"S1", "D1", "F1"}
    assert (got["S1"]["state"], got["S1"]["msgid"]) == ("sent", str(calls["S1"].msgid))
    assert (got["S1"]["attempts"], got["S1"]["reconciled"]) == (1, False)
    assert (got["D1"]["state"], got["D1"]["msgid"], got["D1"]["reconciled"]) == (
        "in_doubt", "", False,
    )  # fmt: skip
    assert (got["F1"]["state"], got["F1"]["errcode"]) == ("failed", 43101)
    # delivery's correction of the refused send (43101: no credit left at WeChat) is kept too
    corrections = [d for d in trace["decisions"] if d["reason"] == "correction"]
    assert [c["notification_id"] for c in corrections] == [
        next(d["notification_id"] for d in trace["decisions"] if d["subject"] == "F1")
    ]
    assert "in_doubt after 1 attempt(s)" in format_trace(trace)

    # the dropped send's receipt arrives (WeChat's push): the trace shows it reconciled
    world.sent(APP, USER, TPL, calls["D1"].msgid, now=calls["D1"].time)
    await _outcome(dep, "D1", "reconciled_sent")

    # ... asked with `wxsub trace --json`, as support would
    trace = await asyncio.to_thread(cli_trace, support, USER)
    got = by_order(trace)
    assert (got["D1"]["state"], got["D1"]["msgid"], got["D1"]["reconciled"]) == (
        "sent", str(calls["D1"].msgid), True,
    )  # fmt: skip
    assert (got["S1"]["state"], got["S1"]["msgid"]) == ("sent", str(calls["S1"].msgid))
    assert (got["F1"]["state"], got["F1"]["errcode"]) == ("failed", 43101)
    assert "(reconciled from the receipt)" in format_trace(trace)
    trace_b = await asyncio.to_thread(cli_trace, support, USER_B)
    got_b = by_order(trace_b)
    assert (got_b["F2"]["state"], got_b["F2"]["errcode"], got_b["F2"]["msgid"]) == (
        "failed", 40003, "",
    )  # fmt: skip
    # every send the sandbox took is in a trace with its msgid, and no other msgid is
    shown = {d["msgid"] for d in [*got.values(), *got_b.values()] if d["msgid"]}
    assert shown == {str(c.msgid) for c in calls.values() if c.processed}
