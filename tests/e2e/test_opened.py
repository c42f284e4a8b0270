"""Open attribution on real components: the session's Kafka broker, the WeChat sandbox, the
gateway and a worker running every stage up to stats.

Four accepted credits, three paid orders sent: each page the sandbox received carries
``wxref=<ref of its notification id>``. The shop then publishes ``opened`` for two sends, the
first one again (duplicate), one with a ref nobody was sent and one broken event (DLQ); then an
open of the fourth order's message before that order is even published (the ref is
deterministic), and the fourth order. The open of the unsent ref waits its grace
(``worker.open_grace_ms``, 30 s here) and ends ``unknown_ref``; the early open waits for its
send and ends ``opened``; both waits are in the stats store's changelog, written and then
tombstoned. The user rejects the template after the sends. The outcomes topic, the stats topic
and the worker's /metrics must say exactly that: granted 4, sent 4, opened 3, rejects after
send 1, one duplicate, one unknown ref (ended by the grace), one dead letter.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_full_stack import (
    APP,
    MERCHANTS,
    TPL,
    USER,
    WORLD,
    gateway,
    order_event,
    settings_toml,
    wait_outcome,
)
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.polling import until
from tests.pipeline.harness import Deployment, free_port
from wxsub.agents.rules.attribution import REF_PARAM, ref_of
from wxsub.agents.rules.stats import RowKey, add_rows, decode_record
from wxsub.schemas.internal import notification_id
from wxsub.schemas.records import user_key
from wxsub.settings import load_settings
from wxsub.streams.topics import changelog_name, ensure_topics
from wxsub_sandbox.push import EventPusher
from wxsub_sandbox.server import run_sandbox

pytestmark = pytest.mark.kafka

UNKNOWN_REF = "AAAAAAAAAAAA"


def opened_event(n: int, ref: str) -> tuple[str, str, bytes]:
    doc = {
        "type": "opened", "v": 1, "event_id": f"open-{n}", "occurred_at": _now(),
        "appid": APP, "openid": USER, "ref": ref, "scene": 1014,
    }  # fmt: skip
    return "opened", user_key(APP, USER), orjson.dumps(doc)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def ref_in(page: str | None) -> str:
    assert page is not None
    return parse_qs(urlsplit(page).query)[REF_PARAM][0]


async def stats_rows(dep: Deployment) -> dict[str, dict[str, int]]:
    """template -> counters summed over days and partitions (latest record per topic key)."""
    latest: dict[tuple[RowKey, int], dict[str, int]] = {}
    for raw in await dep.read("stats"):
        if raw is None:
            continue
        rec = decode_record(raw)
        latest[(rec.key, rec.partition)] = rec.counters
    out: dict[str, list[dict[str, int]]] = {}
    for (key, _), counters in latest.items():
        if key.appid == APP:
            out.setdefault(key.template, []).append(counters)
    return {t: add_rows(rows) for t, rows in out.items()}


async def metric_values(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_opens_are_joined_counted_and_accounted(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with run_sandbox(WORLD) as sb:
        cfg = tmp_path / "wxsub.toml"
        cfg.write_text(settings_toml(sb.base_url, free_port()))
        dep = Deployment(
            kafka_bootstrap, tmp_path, MERCHANTS,
            stages="orders,products,decide,deliver,stats",
            extra_env={"WXSUB_CONFIG": str(cfg), "WXSUB_WORKER_OPEN_GRACE_MS": "30000"},
        )  # fmt: skip
        settings = load_settings(cfg, env=dep.env(0))
        await ensure_topics(dep.kafka, f"app{dep.uid}")
        pusher = EventPusher.from_settings(settings, f"http://127.0.0.1:{settings.gateway.port}")
        pusher.attach(sb.world)
        async with gateway(settings), httpx.AsyncClient(base_url=sb.base_url) as admin:
            dep.start(0)
            try:
                await _scenario(dep, admin, sb)
            except AssertionError:
                print(dep.logs())
                raise
            finally:
                dep.stop_all()
                await pusher.close()


async def _scenario(dep: Deployment, admin: httpx.AsyncClient, sb: Any) -> None:
    for _ in range(4):  # a second apart: WeChat's push ids hold CreateTime in seconds
        r = await admin.post(
            "/admin/accept", json={"appid": APP, "openid": USER, "template_id": TPL}
        )
        assert r.status_code == 200, r.text
        await asyncio.sleep(1.1)
    granted = await wait_outcome(
        dep, lambda o: o.kind == "subscription" and o.reason == "applied", 90, at_least=4
    )
    assert len(granted) == 4, "the accepts never reached the worker through the gateway"

    await dep.publish([order_event(n, f"O{n}", "paid") for n in (1, 2, 3)])
    sent = await wait_outcome(dep, lambda o: o.reason == "sent", 60, at_least=3)
    assert len(sent) == 3
    by_event = {o.event_id: o for o in sent}

    # every page carries its notification's ref
    calls = sb.recorder.calls(endpoint="send", errcode=0)
    assert len(calls) == 3
    refs = {ref_of(o.notification_id) for o in sent}
    assert {ref_in(c.page) for c in calls} == refs
    for c in calls:
        assert c.page is not None and re.fullmatch(
            r"pages/order/detail\?id=O[123]&wxref=[A-Za-z0-9_-]{12}", c.page
        )
    ref1 = ref_of(by_event["e2e-1"].notification_id)
    ref2 = ref_of(by_event["e2e-2"].notification_id)
    ref4 = ref_of(notification_id(APP, USER, TPL, "e2e-4"))  # the send of an order to come

    await dep.publish(
        [
            opened_event(1, ref1),
            opened_event(2, ref2),
            opened_event(3, ref1),  # the same message opened again
            opened_event(4, UNKNOWN_REF),  # nobody was sent this one
            ("opened", user_key(APP, USER), b'{"type": "opened", "v": 1}'),  # broken
            opened_event(5, ref4),  # before its order exists: waits for the send
        ]
    )
    await dep.publish([order_event(4, "O4", "paid")])
    opens = await wait_outcome(dep, lambda o: o.kind == "opened", 90, at_least=5)
    assert sorted((o.event_id, o.reason, o.template_id) for o in opens) == [
        ("open-1", "opened", TPL),
        ("open-2", "opened", TPL),
        ("open-3", "duplicate", TPL),
        ("open-4", "unknown_ref", "-"),
        ("open-5", "opened", TPL),
    ]
    (sent4,) = [o for o in await dep.outcomes() if o.reason == "sent" and o.event_id == "e2e-4"]
    assert ref_of(sent4.notification_id) == ref4
    # both waited in the stats store (o|user|ref) and were tombstoned when they ended
    changelog = changelog_name(dep.kafka, f"app{dep.uid}", "stats", "stats")
    held: dict[bytes, list[bool]] = {}
    for r in await read_all(dep.bootstrap, changelog):
        if r.key.startswith(b"o|"):
            held.setdefault(r.key, []).append(r.value is not None)
    user = user_key(APP, USER)
    assert held == {
        f"o|{user}|{UNKNOWN_REF}".encode(): [True, False],
        f"o|{user}|{ref4}".encode(): [True, False],
    }
    dead = [orjson.loads(v) for v in await dep.read("dlq")]
    assert dead == [{"type": "opened", "v": 1}]

    # the user switches the template off after the sends: a reject after send
    r = await admin.post("/admin/reject", json={"appid": APP, "openid": USER, "template_id": TPL})
    assert r.status_code == 200, r.text

    async def rows_done() -> dict[str, dict[str, int]] | None:
        rows = await stats_rows(dep)
        return rows if rows.get(TPL, {}).get("feedback") else None

    rows = await until(rows_done)
    assert rows, f"no reject after send in the stats: {await stats_rows(dep)}"
    mine = rows[TPL]
    assert (mine["granted"], mine["sent"], mine["opened"]) == (4, 4, 3)
    assert (mine["rejects"], mine["feedback"], mine["open:duplicate"]) == (1, 1, 1)
    assert rows["-"]["open:unknown_ref"] == 1

    def funnel(step: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        labels = {"appid": APP, "template": TPL, "kind": "order_status", "step": step}
        return "wxsub_funnel_total", tuple(sorted(labels.items()))

    def opens_metric(result: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return "wxsub_opens_total", (("appid", APP), ("result", result))

    port = dep.web_ports[0]
    grace = "wxsub_expired_total", (("reason", "open_grace"), ("store", "stats"))
    wanted = {
        funnel("granted"): 4.0, funnel("sent"): 4.0, funnel("opened"): 3.0,
        funnel("rejected_after_send"): 1.0, opens_metric("opened"): 3.0,
        opens_metric("duplicate"): 1.0, opens_metric("unknown_ref"): 1.0, grace: 1.0,
    }  # fmt: skip

    async def metrics_done() -> dict[Any, float] | None:
        values = await metric_values(port)
        got = {k: values.get(k) for k in wanted}
        return got if got == wanted else None

    got = await until(metrics_done, 30)
    assert got == wanted, {k: (await metric_values(port)).get(k) for k in wanted}
    values = await metric_values(port)
    assert not [k for k in values if any(name == "openid" for name, _ in k[1])]
