"""Live config and templates on real components: a real broker, the real WeChat sandbox, a real
worker process (orders, decide, deliver) and the real `apply` / `pull` commands.

- a mapping whose keyword type does not fit WeChat's template is refused by apply (key and
  line) and never reaches the topic;
- a transactional cap changed mid-run applies to events decided after it (the outcomes say
  which version decided them);
- a mini program added mid-run gets its first message sent without a restart;
- a template deleted at the sandbox mid-run disables its kind (metric for the alert) at the
  next scheduled pull, its events end as template_unfit, and WeChat refuses no send.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.test_full_stack import wait_outcome
from tests.pipeline.harness import Deployment
from wxsub.config_cli import apply_merchants, live_records, pull_templates
from wxsub.errors import ConfigError
from wxsub.schemas.codec import encode
from wxsub.schemas.records import SubscriptionEvent
from wxsub.settings import load_settings
from wxsub.streams.topics import ensure_topics
from wxsub_sandbox.server import run_sandbox

pytestmark = pytest.mark.kafka

APP_A, APP_B = "wx00live00000000aa", "wx00live00000000bb"
ORDER_A, LOGI_A, ORDER_B = "TPL_LIVE_ORDER_A", "TPL_LIVE_LOGI_A", "TPL_LIVE_ORDER_B"
USER = "oLiveUser0000000000000000001"
ORDER_CONTENT = "订单号:{{character_string1.DATA}}\n订单状态:{{phrase2.DATA}}"
LOGI_CONTENT = "运单号:{{character_string1.DATA}}\n物流状态:{{phrase2.DATA}}"


def _app(appid: str, templates: list[tuple[str, str]]) -> dict[str, object]:
    return {
        "appid": appid, "secret": f"secret-{appid}", "pages": ["pages/order/detail"],
        "templates": [{"id": t, "title": "通知", "content": c} for t, c in templates],
        "users": [{"openid": USER}],
    }  # fmt: skip


WORLD = {"apps": [_app(APP_A, [(ORDER_A, ORDER_CONTENT), (LOGI_A, LOGI_CONTENT)]),
                  _app(APP_B, [(ORDER_B, ORDER_CONTENT)])]}  # fmt: skip


def _kinds(appid: str, order_tpl: str, logistics_tpl: str | None, phrase: str = "") -> str:
    keywords = f'\nkeywords = {{ character_string1 = "character_string", phrase2 = "{phrase}" }}'
    out = f"""
[apps.{appid}.kinds.order_status]
template_id = "{order_tpl}"{keywords if phrase else ""}
notify_on = ["paid", "shipped"]
data = {{ character_string1 = "{{order_id}}", phrase2 = "{{status_text}}" }}
"""
    if logistics_tpl:
        out += f"""
[apps.{appid}.kinds.logistics]
template_id = "{logistics_tpl}"
notify_on = ["delivered"]
data = {{ character_string1 = "{{order_id}}", phrase2 = "{{status_text}}" }}
"""
    return out


def merchants(cap: int, with_b: bool = False, phrase: str = "") -> str:
    text = f"""
[apps.{APP_A}]
collapse_window_s = 0
[apps.{APP_A}.caps]
transactional = {{ max = {cap}, window_s = 86400 }}
{_kinds(APP_A, ORDER_A, LOGI_A, phrase)}"""
    if with_b:
        text += f"\n[apps.{APP_B}]\ncollapse_window_s = 0\n{_kinds(APP_B, ORDER_B, None)}"
    return text


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def order(appid: str, n: int, order_id: str, status: str = "paid") -> tuple[str, str, bytes]:
    doc = {"type": "order_status", "v": 1, "event_id": f"live-{n}", "occurred_at": _now(),
           "appid": appid, "openid": USER, "order_id": order_id, "status": status,
           "amount": 2590}  # fmt: skip
    return "order-status", f"{appid}:{order_id}", orjson.dumps(doc)


def delivered(n: int, order_id: str) -> tuple[str, str, bytes]:
    doc = {"type": "logistics", "v": 1, "event_id": f"live-{n}", "occurred_at": _now(),
           "appid": APP_A, "order_id": order_id, "state": "delivered",
           "waybill": "SF1", "carrier": "SF"}  # fmt: skip
    return "logistics", f"{APP_A}:{order_id}", orjson.dumps(doc)


def accepts(appid: str, template: str, n: int) -> list[tuple[str, str, bytes]]:
    """What the gateway would produce for ``n`` popup accepts."""
    now = dt.datetime.now(dt.UTC)
    out = []
    for i in range(n):
        ev = SubscriptionEvent(f"sub-{appid}-{template}-{i}", now, appid, USER, "popup", template,
                               int(now.timestamp()), "accept", popup_scene=0)  # fmt: skip
        out.append(("subscriptions", ev.key, encode(ev)))
    return out


async def metric(dep: Deployment, line: str, timeout: float = 60) -> bool:
    """Wait until the worker's /metrics has ``line`` (or the timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while loop.time() < deadline:
            try:
                text = (await http.get(f"http://127.0.0.1:{dep.web_ports[0]}/metrics")).text
            except httpx.HTTPError:
                text = ""
            if line in text.splitlines():
                return True
            await asyncio.sleep(0.5)
    return False


async def test_templates_and_merchants_change_without_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with run_sandbox(WORLD) as sb, httpx.AsyncClient(base_url=sb.base_url) as admin:
        cfg = tmp_path / "wxsub.toml"
        creds = "".join(f'[wechat.apps.{a}]\nsecret = "secret-{a}"\n' for a in (APP_A, APP_B))
        cfg.write_text(f'[wechat]\napi_base = "{sb.base_url}"\n{creds}')
        dep = Deployment(
            kafka_bootstrap, tmp_path, "", stages="orders,decide,deliver", partitions=2,
            extra_env={"WXSUB_CONFIG": str(cfg), "WXSUB_WORKER_TEMPLATES_PULL_INTERVAL_S": "2"},
        )  # fmt: skip
        settings = load_settings(cfg, env=dep.env(0))
        await ensure_topics(dep.kafka, f"app{dep.uid}")
        for appid, tpl in ((APP_A, ORDER_A), (APP_A, LOGI_A), (APP_B, ORDER_B)):
            r = await admin.post("/admin/accept", json={"appid": appid, "openid": USER,
                                 "template_id": tpl, "count": 5})  # fmt: skip
            assert r.status_code == 200, r.text
        await pull_templates(settings)

        # a wrong keyword type never reaches the topic
        bad = tmp_path / "bad.toml"
        bad.write_text(merchants(cap=1, phrase="thing"))
        with pytest.raises(ConfigError) as info:
            await apply_merchants(settings, bad)
        assert info.value.key == f"apps.{APP_A}.kinds.order_status"
        assert "phrase2 is a phrase" in str(info.value) and "bad.toml:" in str(info.value)
        assert await live_records(settings) == {}

        v1 = tmp_path / "v1.toml"
        v1.write_text(merchants(cap=1))
        assert await apply_merchants(settings, v1) == 1
        dep.start(0)
        try:
            await dep.publish(accepts(APP_A, ORDER_A, 5) + accepts(APP_A, LOGI_A, 5))
            applied = await wait_outcome(dep, lambda o: o.reason == "applied", at_least=10)
            assert len(applied) == 10, "the accepts were not applied"
            await dep.publish([order(APP_A, 1, "A1"), order(APP_A, 2, "A2")])
            sent = await wait_outcome(dep, lambda o: o.event_id == "live-1" and o.reason == "sent")
            capped = await wait_outcome(dep, lambda o: o.event_id == "live-2")
            assert sent and [(o.reason, o.config_version) for o in capped] == [("capped", 1)]

            # the cap raised, and app B added: both live without a restart
            v2 = tmp_path / "v2.toml"
            v2.write_text(merchants(cap=5, with_b=True))
            assert await apply_merchants(settings, v2) == 2
            assert await metric(dep, "wxsub_config_version 2.0")
            await dep.publish(accepts(APP_B, ORDER_B, 1))
            applied = await wait_outcome(dep, lambda o: o.reason == "applied", at_least=11)
            assert len(applied) == 11, "app B's accept was not applied"
            await dep.publish([order(APP_A, 3, "A3"), order(APP_B, 4, "B1")])
            for eid in ("live-3", "live-4"):
                done = await wait_outcome(
                    dep, lambda o, e=eid: o.event_id == e and o.reason == "sent"
                )
                assert done, f"{eid} not sent under version 2"
            b_sends = sb.recorder.calls(endpoint="send", appid=APP_B)
            assert [(c.template_id, c.errcode) for c in b_sends] == [(ORDER_B, 0)]

            # the logistics template deleted at WeChat: the next pull disables the kind
            r = await admin.delete("/admin/templates", params={"appid": APP_A, "id": LOGI_A})
            assert r.status_code == 200, r.text
            line = f'wxsub_kind_disabled{{appid="{APP_A}",kind="logistics"}} 1.0'
            assert await metric(dep, line), "the deleted template did not disable logistics"
            await dep.publish([delivered(5, "A1"), order(APP_A, 6, "A6")])
            unfit = await wait_outcome(dep, lambda o: o.event_id == "live-5")
            assert [(o.reason, o.config_version) for o in unfit] == [("template_unfit", 2)]
            assert await wait_outcome(dep, lambda o: o.event_id == "live-6" and o.reason == "sent")
            assert await metric(
                dep, f'wxsub_kind_disabled{{appid="{APP_A}",kind="order_status"}} 0.0'
            )
        except AssertionError:
            print(dep.logs())
            raise
        finally:
            dep.stop_all()
        refused = [c for c in sb.recorder.calls(endpoint="send") if c.errcode != 0]
        assert refused == [], "WeChat refused a send"
