"""The compliance guards, oracle-checked on real components: a generated log through real worker
processes on the session broker, sends to the WeChat sandbox, the shop's opens, the stats rows.

The run (each step waits for a quiescent point, as config phases do; ``tests/pipeline/oracle.py``
and ``sendtime.py`` predict every step):

1. a worker deciding (orders, products, decide, stats) starts, no deliver worker: every intent
   waits on the intents topic, a backlog;
2. phase 0 (state events); then ``wxsub pauses set`` pauses the main app's ``logistics`` and
   phase 1 is published once the worker shows the pause: its logistics candidates end as
   ``paused`` at decide, no credit spent, nothing sent; restocks are stock-limited;
3. the pause is lifted and config version 2 applied: the log's (a cap raised), plus quiet hours
   for the main app from now to ~45 s later and the promotions' ``stale_after_s`` cut
   (``sendtime.stale_split``) so that one promotion turns stale while deferred. Then the deliver
   worker starts (the backlog crosses the quiet-hours start) and phase 2 is published (its
   logistics go out again). Service kinds go at once; promotions are deferred to the end of the
   window and released (sent, or stale), or stale at once;
4. the shop publishes ``opened`` for some sent pages (refs from the pages the sandbox got),
   opens them again, and opens an unknown ref and another user's ref.

Compared: intents and rule outcomes (with config versions), the deliver outcomes per notification,
the sandbox's calls (one per predicted send, same body and ref), the open outcomes, the stats rows
(every counter, per app and template, summed over days).
"""

from __future__ import annotations

import copy
import datetime as dt
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import orjson
import pytest

from tests.fixtures.polling import until as _until
from tests.pipeline.configs import APP_MAIN, TZ_NAME, to_toml
from tests.pipeline.delivery_harness import (
    kind_paused_everywhere,
    read_stats,
    sandbox_world,
    wechat_settings,
)
from tests.pipeline.eventlog import EventLog, Knobs, generate
from tests.pipeline.harness import Deployment, as_published, workers_at_version
from tests.pipeline.oracle import RULE_STAGES, Expected, at_version, expected, outcome_counter
from tests.pipeline.sendtime import (
    Delivered,
    Open,
    SendTimes,
    deliveries,
    judge_opens,
    quiet_window,
    stale_split,
    stats_rows,
)
from wxsub.agents.rules.attribution import REF_PARAM, with_ref
from wxsub.config_cli import apply_merchants
from wxsub.merchants import Merchants, parse_merchants
from wxsub.pauses_cli import write_pause
from wxsub.schemas.internal import Intent, Outcome, user_key
from wxsub.schemas.records import ProductStockChanged, Watch
from wxsub.settings import Settings, load_settings
from wxsub.streams.topics import ensure_topics
from wxsub_sandbox.server import run_sandbox

pytestmark = pytest.mark.kafka

PAUSED = (APP_MAIN, "logistics")
WHY = "operator: oracle run"
WINDOW_MS = 45_000  # the quiet window, from the config change that starts it
FIRST_MARGIN_MS = 10_000  # every first attempt is made this long before the window ends
RELEASE_BY_MS = 60_000  # every deferred send is released within this after the window ends
UNKNOWN_REF = "AAAAAAAAAAAA"


def _log(seed: int) -> tuple[EventLog, Merchants, Expected]:
    """The log, config version 1, and the oracle of phases 0 and 1 (phase 1 paused)."""
    now = int(time.time() * 1000)
    knobs = Knobs(now_ms=now, seed=seed, users=24, orders=36, skus=8, stores=2, later_orders=10,
                  bad_inputs=10, collapse_window_s=6, orphan_after_s=6)  # fmt: skip
    log = generate(knobs)
    v1 = at_version(parse_merchants(tomllib.loads(log.merchants_toml)), 1)
    early = [e for e in log.entries if e.phase < 2]
    return log, v1, expected(early, v1, now, card_stage=False, pauses={1: {PAUSED: WHY}})


def _restocks_limited(log: EventLog, exp: Expected) -> int:
    """How many restocks of the main app told fewer watchers (candidates) than watch the SKU;
    none told more than its new stock (``restock_factor`` 1)."""
    told: Counter[str] = Counter(e for i in exp.intents.values() if i.kind == "restock"
                                 for e in i.event_ids)  # fmt: skip
    told.update(o.event_id for o in exp.all_outcomes if o.kind == "restock" and o.stage == "decide")
    watchers = Counter(r.target.id for e in log.phase(0) if isinstance(r := e.record, Watch)
                       and r.kind == "restock" and r.appid == APP_MAIN)  # fmt: skip
    limited = 0
    for e in log.phase(1):
        r = e.record
        if isinstance(r, ProductStockChanged) and r.appid == APP_MAIN and r.new_stock > 0:
            assert told[r.event_id] <= r.new_stock, (r, told[r.event_id])
            limited += told[r.event_id] < watchers[r.sku_id]
    return limited


def _users(log: EventLog) -> list[Intent]:
    """A stand-in intent per (app, user) of the log: who the sandbox must know."""
    users: set[tuple[str, str]] = set()
    for e in log.entries:
        openid = getattr(e.record, "openid", None)
        if e.record is not None and isinstance(openid, str):
            users.add((e.record.appid, openid))
    return [Intent("", a, u, "", "", (), 0, 0, 0, {}) for a, u in sorted(users)]


async def test_guards_pipeline_matches_oracle(kafka_bootstrap: str, tmp_path: Path) -> None:
    log, v1, early = _log(seed=5)
    assert early.reasons()["paused"] > 0  # the pause means something
    assert _restocks_limited(log, early) > 0  # and so do the stock limits
    async with run_sandbox(sandbox_world(v1, _users(log))) as sb:
        cfg = tmp_path / "wxsub.toml"
        cfg.write_text(wechat_settings(sb.base_url, sorted(v1.apps)), encoding="utf-8")
        dep = Deployment(kafka_bootstrap, tmp_path, log.merchants_toml,
                         stages="orders,products,decide,stats",
                         extra_env={"WXSUB_CONFIG": str(cfg)})  # fmt: skip
        settings = load_settings(cfg, env=dep.env(0))
        try:
            await _paused_phase(dep, settings, log, early)
            v2, v2_toml, exp, delivered, times = _quiet_config(log, v1, early)
            await _deliver(dep, settings, log, v2_toml, exp, delivered)
            opens, judged = await _open(dep, sb, delivered)
            rows = stats_rows([*exp.all_outcomes, *delivered.outcomes], judged, v2)
            got_rows = await _until_rows(dep, rows)
            outcomes, intents = await dep.outcomes(), await dep.intents()
            dlq = len(await dep.read("dlq"))
        except AssertionError:
            print(dep.logs())
            raise
        finally:
            dep.stop_all()
        calls = sb.recorder.calls(endpoint="send")
    _compare_decided(intents, outcomes, dlq, exp)
    by_stage = _by_stage(outcomes)
    got_deliver = Counter((o.notification_id, o.reason) for o in by_stage["deliver"])
    assert got_deliver == delivered.keys(), _timing(by_stage["deliver"], delivered, times)
    want_calls = Counter(_body(i.appid, with_ref(i.body, n)) for n, i in delivered.sent.items())
    got_calls = Counter(_body(c.appid or "", {"touser": c.openid, "template_id": c.template_id,
                                              "page": c.page, "data": c.data})
                        for c in calls if c.errcode == 0)  # fmt: skip
    assert [c for c in calls if c.errcode != 0] == []
    assert got_calls == want_calls
    assert Counter((o.event_id, o.reason, o.template_id) for o in by_stage["stats"]) == Counter(
        (o.event_id, o.reason, o.template_id) for o in judged
    )
    assert len(opens) == len(judged)
    assert got_rows == rows
    # every rule is exercised, as predicted
    paths = delivered.path_counts()
    for path in [("sent",), ("stale",), ("quiet_hours_deferred", "sent"),
                 ("quiet_hours_deferred", "stale")]:  # fmt: skip
        assert paths[path] > 0, (path, paths)
    assert {o.reason for o in judged} == {"opened", "duplicate", "unknown_ref"}
    assert not [i for i in delivered.sent.values() if (i.appid, i.kind) == PAUSED
                and i.config_version == 1]  # fmt: skip
    assert [i for i in delivered.sent.values() if (i.appid, i.kind) == PAUSED]


async def _paused_phase(
    dep: Deployment, settings: Settings, log: EventLog, early: Expected
) -> None:
    """Phases 0 and 1 decided, the pause in force for phase 1; nothing delivered yet."""
    await ensure_topics(dep.kafka, f"app{dep.uid}")
    assert await _apply(dep, settings, log.merchants_toml, 1)
    dep.start(0)
    await dep.publish(as_published(log.phase(0)))
    got = await dep.wait_for("outcomes", log.phase0_outcomes, timeout=120)
    assert got >= log.phase0_outcomes, f"phase 0 not applied ({got})"
    await write_pause(settings, *PAUSED, True, WHY)
    assert await kind_paused_everywhere(dep, *PAUSED, paused=True), "the pause is not in force"
    await dep.publish(as_published(log.phase(1)))
    await _wait_decided(dep, early, "phase 1")


def _quiet_config(
    log: EventLog, v1: Merchants, early: Expected
) -> tuple[Merchants, str, Expected, Delivered, SendTimes]:
    """Version 2 of the config as of now: the log's (a cap raised), plus the main app's quiet
    hours from now for WINDOW_MS and the promotions' ``stale_after_s`` cut so that one of them
    turns stale while deferred; the oracle of the whole log under it, and of the deliveries."""
    start = int(time.time() * 1000)
    end = -(-(start + WINDOW_MS) // 1000) * 1000
    times = SendTimes(start, end - FIRST_MARGIN_MS, end + RELEASE_BY_MS)
    promos = [i.occurred_at for i in early.intents.values()
              if (i.appid, i.kind) == (APP_MAIN, "promotion")]  # fmt: skip
    doc: dict[str, Any] = copy.deepcopy(log.changed_doc)
    main = doc["apps"][APP_MAIN]
    main["quiet_hours"] = quiet_window(start, end, ZoneInfo(TZ_NAME))
    main["kinds"]["promotion"]["stale_after_s"] = stale_split(promos, times, end)
    v2 = at_version(parse_merchants(doc), 2)
    exp = expected(log.entries, v1, log.knobs.now_ms, changes={2: v2}, card_stage=False,
                   pauses={1: {PAUSED: WHY}, 2: {}})  # fmt: skip
    backlog = [i for n, i in exp.intents.items() if n in early.intents]
    later = [i for n, i in exp.intents.items() if n not in early.intents]
    return v2, to_toml(doc), exp, deliveries(backlog, v2, times, later), times


async def _deliver(
    dep: Deployment,
    settings: Settings,
    log: EventLog,
    v2_toml: str,
    exp: Expected,
    delivered: Delivered,
) -> None:
    """The pause lifted and version 2 live (the quiet window has begun), the deliver worker
    starts on the backlog, phase 2 is published; back once every predicted outcome is in."""
    await write_pause(settings, *PAUSED, False, "lifted")
    assert await _apply(dep, settings, v2_toml, 2)
    assert await kind_paused_everywhere(dep, *PAUSED, paused=False), "the pause is not lifted"
    assert await workers_at_version(dep, 2), "version 2 not live"
    dep.stages = "deliver"
    dep.start(1)
    await dep.publish(as_published(log.phase(2)))
    await _wait_decided(dep, exp, "phase 2", extra=len(delivered.outcomes))


async def _open(dep: Deployment, sb: Any, delivered: Delivered) -> tuple[list[Open], list[Outcome]]:
    """Opens for some of the sandbox's sends once the stats stage counted every send (a send and
    its user's opens meet on one partition, but on two topics): first opens, duplicates, an
    unknown ref, another user's ref."""
    want_sent = len(delivered.sent)

    async def sent_counted() -> bool:
        return sum(r.get("sent", 0) for r in (await read_stats(dep)).values()) >= want_sent

    assert await _until(sent_counted), "the stats stage did not count every send"
    calls = sorted((c for c in sb.recorder.calls(endpoint="send") if c.errcode == 0),
                   key=lambda c: (c.appid, c.openid, c.page))  # fmt: skip
    refs = [(c.appid, c.openid, parse_qs(urlsplit(c.page).query)[REF_PARAM][0]) for c in calls]
    picked = refs[:: max(1, len(refs) // 8)][:8]
    other = next(r for r in refs if r[1] != picked[0][1])
    events = [*picked, picked[0], picked[1], (picked[2][0], picked[2][1], UNKNOWN_REF),
              (other[0], other[1], picked[0][2])]  # fmt: skip
    opens = [Open(f"open-{n}", appid, openid, ref) for n, (appid, openid, ref) in enumerate(events)]
    before = len(await dep.read("outcomes"))
    await dep.publish([("opened", user_key(o.appid, o.openid), _opened_doc(o)) for o in opens])
    got = await dep.wait_for("outcomes", before + len(opens), timeout=90)
    assert got >= before + len(opens), "the opens were not all judged"
    return opens, judge_opens(delivered.sent, opens)


def _opened_doc(o: Open) -> bytes:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    doc = {"type": "opened", "v": 1, "event_id": o.event_id, "occurred_at": now,
           "appid": o.appid, "openid": o.openid, "ref": o.ref, "scene": 1014}  # fmt: skip
    return orjson.dumps(doc)


async def _until_rows(dep: Deployment, rows: dict[tuple[str, str], dict[str, int]]) -> Any:
    """The stats rows once they equal ``rows`` (or at the timeout, as they are)."""
    want = {k: v for k, v in rows.items() if v}
    got: dict[tuple[str, str], dict[str, int]] = {}

    async def done() -> bool:
        nonlocal got
        got = await read_stats(dep)
        return got == want

    await _until(done)
    return got


async def _apply(dep: Deployment, settings: Settings, toml: str, version: int) -> bool:
    path = dep.workdir / f"merchants-v{version}.toml"
    path.write_text(toml, encoding="utf-8")
    return await apply_merchants(settings, path) == version


async def _wait_decided(dep: Deployment, exp: Expected, what: str, extra: int = 0) -> None:
    """Until the outcomes topic holds ``exp``'s outcomes (and ``extra`` more: deliver's), and
    the intents topic its intents."""
    want_o, want_i = sum(exp.outcomes.values()) + extra, len(exp.intents)
    got_o = await dep.wait_for("outcomes", want_o, timeout=180)
    got_i = await dep.wait_for("intents", want_i, timeout=180)
    assert got_o >= want_o and got_i >= want_i, (
        f"{what} not done: outcomes {got_o} of {want_o}, intents {got_i} of {want_i}"
    )


def _timing(outcomes: list[Outcome], delivered: Delivered, times: SendTimes) -> str:
    """When the deliver stage ended or deferred the backlog's sends, against the bounds the
    oracle assumed (a run too slow for them shows here, not as a wrong rule)."""
    firsts = [o.at for o in outcomes if o.config_version == 1  # the backlog
              and delivered.paths.get(o.notification_id, ("",))[0] == o.reason]  # fmt: skip
    last = max(firsts, default=0) - times.first_from
    return (f"deliver outcomes differ; first attempts until +{last} ms, assumed by "
            f"+{times.first_by - times.first_from} ms")  # fmt: skip


def _by_stage(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    out: dict[str, list[Outcome]] = {"deliver": [], "stats": []}
    for o in outcomes:
        out.setdefault(o.stage, []).append(o)
    return out


def _body(appid: str, body: dict[str, Any]) -> bytes:
    keep = {k: body.get(k) for k in ("touser", "template_id", "page", "data")}
    return orjson.dumps({"appid": appid, **keep}, option=orjson.OPT_SORT_KEYS)


def _compare_decided(intents: list[Any], outcomes: list[Outcome], dlq: int, exp: Expected) -> None:
    got = {i.notification_id: (i.body, i.event_ids, i.config_version) for i in intents}
    assert len(got) == len(intents), "an intent was produced twice"
    assert got == exp.bodies()
    rule = outcome_counter(o for o in outcomes if o.stage in RULE_STAGES)
    assert not (exp.outcomes - rule) and not (rule - exp.outcomes), (
        f"missing {list((exp.outcomes - rule).items())[:5]}, "
        f"extra {list((rule - exp.outcomes).items())[:5]}"
    )
    stages = {o.stage for o in outcomes}
    assert stages <= RULE_STAGES | {"deliver", "stats"}, stages
    assert dlq == exp.dlq
