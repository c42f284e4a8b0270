"""Expiry on a real broker, per store: entries past retention are deleted from the local store
and tombstoned in the changelog (and ``deliveries``), a restarted worker restores only live
entries, and what comes late for a forgotten entry ends with a reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.deliver.harness import FAST, harness, intent, make_runner, make_world
from tests.fixtures.kafka_helpers import read_all
from tests.lifecycle.harness import DAY, Clock, Lifecycle, at, lifecycle, metric
from wxsub.agents.base import StageEnv
from wxsub.agents.decide import DecideStage
from wxsub.agents.deliver import DeliverStage
from wxsub.agents.orders import OrdersStage
from wxsub.agents.products import ProductsStage
from wxsub.agents.rules.attribution import ref_of
from wxsub.agents.rules.history import decisions
from wxsub.agents.rules.watches import watch_key
from wxsub.agents.stats import StatsStage
from wxsub.merchants import Merchants, parse_merchants
from wxsub.schemas.internal import Candidate, Outcome, decode_internal, encode_internal
from wxsub.schemas.records import (
    LogisticsUpdated,
    MessageOpened,
    OrderStatusChanged,
    SubscriptionEvent,
    Target,
    Watch,
)
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.topics import changelog_name
from wxsub.wechat.client import WeChatClient

pytestmark = pytest.mark.kafka

APP = "wxLife"
HOUR = 3_600_000


async def _outcomes(lc: Lifecycle) -> list[Outcome]:
    recs = await read_all(lc.settings.kafka.bootstrap, lc.topic("outcomes"))
    return [decode_internal(Outcome, r.value) for r in recs]


async def test_orders_expire_tombstoned_restored_live_only_late_logistics_orphan(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    merchants = parse_merchants({"apps": {APP: {"orphan_after_s": 1}}})
    async with lifecycle(kafka_bootstrap, tmp_path, merchants) as lc:
        now = lc.clock()

        def order(oid: str, status: str, t: int) -> tuple[str, OrderStatusChanged]:
            return "order-status", OrderStatusChanged(f"e-{oid}", at(t), APP, "o1", oid, status, 1)

        await lc.publish([order("done", "completed", now - HOUR), order("open", "paid", now - HOUR),
                          order("fresh", "completed", now)])  # fmt: skip
        done, open_, fresh = (f"{APP}:{o}".encode() for o in ("done", "open", "fresh"))
        log = lc.changelog("orders", "orders")
        async with lc.running(OrdersStage(lc.env)):
            got = await lc.until(log, lambda latest: len(latest) == 3)
            assert set(got) == {done, open_, fresh}
            # 30 days (retention.order_s) after "done", 30 minutes short of it for "fresh";
            # "open" (paid) has retention.order_idle_s (180 days)
            lc.clock.offset = 30 * DAY - HOUR // 2
            got = await lc.until(log, lambda latest: latest.get(done, b"") is None)
            assert got[done] is None and got[open_] and got[fresh]
            labels = {"store": "orders", "reason": "order_final"}
            assert await metric(lc, "wxsub_expired_total", 1, **labels) == 1
            live = {"stage": "orders", "store": "orders"}
            assert await metric(lc, "wxsub_store_entries", 2, **live) == 2
        assert set(lc.local("state", "orders", "orders")) == {open_, fresh}
        # a worker with an empty state directory restores the live orders only
        lc.clock.offset = 0
        async with lc.running(OrdersStage(lc.env), state="state2"):
            late = LogisticsUpdated("late-1", at(lc.clock()), APP, "done", "SF1", "SF", "delivered")
            await lc.publish([("logistics", late)])
            for _ in range(100):
                orphans = [o for o in await _outcomes(lc) if o.event_id == "late-1"]
                if orphans:
                    break
                await asyncio.sleep(0.3)
        assert [(o.reason, o.detail) for o in orphans] == [("orphan", "no order done")]
        assert set(lc.local("state2", "orders", "orders")) == {open_, fresh}


async def test_users_pruned_and_deleted_when_empty_never_written_empty(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with lifecycle(kafka_bootstrap, tmp_path) as lc:
        now = lc.clock()

        def popup(openid: str, status: str) -> tuple[str, SubscriptionEvent]:
            ev = SubscriptionEvent(f"s-{openid}", at(now - HOUR), APP, openid, "popup", "TPL",
                                   (now - HOUR) // 1000, status)  # type: ignore[arg-type]  # fmt: skip
            return "subscriptions", ev

        await lc.publish([popup("rej", "reject"), popup("acc", "accept")])
        # a candidate for an unconfigured app: no_template; the user's only state is that
        # decision in its history (the support trace's answer), kept for the dedupe retention
        cand = Candidate("order_status", APP, "nobody", "c-1", now, now, "o9", {})
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        await producer.send_and_wait(lc.topic("candidates"), encode_internal(cand),
                                     key=f"{APP}:nobody".encode())  # fmt: skip
        await producer.stop()
        rej, acc = f"{APP}:rej".encode(), f"{APP}:acc".encode()
        nobody = f"{APP}:nobody".encode()
        log = lc.changelog("decide", "users")
        async with lc.running(DecideStage(lc.env)):
            got = await lc.until(log, lambda latest: len(latest) == 3)
            for _ in range(50):  # the candidate's outcome: it was processed
                if any(o.event_id == "c-1" for o in await _outcomes(lc)):
                    break
                await asyncio.sleep(0.2)
            assert set(got) == {rej, acc, nobody}
            assert b"events" in (got[acc] or b"")
            stored = orjson.loads(got[nobody] or b"{}")
            assert "credits" not in stored  # only the decision is kept
            assert [d.reason for d in decisions(stored["history"])] == ["no_template"]
            lc.clock.offset = 3 * DAY  # past the dedupe retention (2 days without a config)
            got = await lc.until(
                log, lambda latest: latest.get(rej, b"") is None and latest.get(nobody) is None
            )
            assert got[rej] is None and got[nobody] is None
            got = await lc.until(log, lambda latest: b"events" not in (latest[acc] or b""))
            assert got[acc] == b'{"credits":{"TPL":1}}'
            labels = {"store": "users", "reason": "user_empty"}
            assert await metric(lc, "wxsub_expired_total", 2, **labels) == 2
        assert set(lc.local("state", "decide", "users")) == {acc}
        async with lc.running(DecideStage(lc.env), state="state2"):
            pass
        assert lc.local("state2", "decide", "users") == {acc: b'{"credits":{"TPL":1}}'}


async def test_watches_expire_and_a_remembered_unwatch_beats_a_late_older_watch(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with lifecycle(kafka_bootstrap, tmp_path) as lc:
        now = lc.clock()

        def watch(eid: str, op: str, sku: str, t: int) -> tuple[str, Watch]:
            return "watches", Watch(eid, at(t), APP, "u1", op, Target("sku", sku), "price_drop")  # type: ignore[arg-type]

        await lc.publish([
            watch("w1", "watch", "sku1", now - HOUR),
            watch("u2", "unwatch", "sku2", now - HOUR),
            watch("w2-late", "watch", "sku2", now - 2 * HOUR),  # older than the unwatch
            watch("w3-old", "watch", "sku3", now - 8 * DAY),  # older than unwatch_s (7 days)
        ])  # fmt: skip
        w1 = watch_key(APP, "sku", "sku1", "u1", "price_drop").encode()
        marker = b"\x03unwatch|" + watch_key(APP, "sku", "sku2", "u1", "price_drop").encode()
        log = lc.changelog("products", "watches")
        async with lc.running(ProductsStage(lc.env)):
            got = await lc.until(log, lambda latest: {w1, marker} <= set(latest))
            assert set(got) == {w1, marker}
            for _ in range(50):
                reasons = {o.event_id: o.reason for o in await _outcomes(lc)}
                if len(reasons) == 4:
                    break
                await asyncio.sleep(0.2)
            assert reasons == {"w1": "applied", "u2": "applied", "w2-late": "regression",
                               "w3-old": "stale"}  # fmt: skip
            lc.clock.offset = 7 * DAY  # the unwatch is forgotten, the watch lives on
            got = await lc.until(log, lambda latest: latest[marker] is None)
            assert got[marker] is None and got[w1]
            lc.clock.offset = 90 * DAY  # the watch's time-to-live
            got = await lc.until(log, lambda latest: latest[w1] is None)
            assert got[w1] is None
            for reason in ("watch_ttl", "unwatch_memory"):
                labels = {"store": "watches", "reason": reason}
                assert await metric(lc, "wxsub_expired_total", 1, **labels) == 1
        assert lc.local("state", "products", "watches") == {}
        async with lc.running(ProductsStage(lc.env), state="state2"):
            pass
        assert lc.local("state2", "products", "watches") == {}


async def test_ledger_entries_expire_with_their_msgid_index_and_deliveries_tombstones(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    world = make_world(users=4, credits=2)
    openids = [f"oLoad{i:023d}" for i in range(4)]
    async with harness(kafka_bootstrap, world, sweep_interval_s=0.2) as h:
        clock, metrics = Clock(), WorkerMetrics()
        env = StageEnv(h.settings, Merchants({}), metrics, clock=clock)
        client = WeChatClient(h.settings.wechat)
        runner = make_runner(h.settings, DeliverStage(env, client, FAST), tmp_path / "a")
        task = asyncio.create_task(runner.run())
        kafka, app_id = h.settings.kafka, h.settings.worker.app_id
        log = changelog_name(kafka, app_id, "deliver", "ledger")

        async def latest(topic: str) -> dict[bytes, bytes | None]:
            return {r.key: r.value for r in await read_all(kafka.bootstrap, topic)}

        try:
            await h.produce(intent(world, o, 0) for o in openids)
            await h.wait_ledger(h.all_in("sent"))
            nids = {i.notification_id.encode() for i in h.intents}
            before = await latest(log)
            assert {b"n|" + n for n in nids} <= set(before)
            assert sum(1 for k in before if k.startswith(b"m|")) == 4  # msgid index
            clock.offset = 7 * DAY  # retention.delivery_s
            for _ in range(100):
                deliveries = await latest(h.topic("deliveries"))
                if all(deliveries.get(n, b"") is None for n in nids):
                    break
                await asyncio.sleep(0.3)
            assert all(deliveries[n] is None for n in nids)
            after = await latest(log)
            assert {k for k, v in after.items() if v is not None} == set()  # n|, m| tombstoned
        finally:
            await runner.stop()
            await asyncio.wait_for(task, 30)
            await client.aclose()
        expired = metrics.registry.get_sample_value(
            "wxsub_expired_total", {"store": "ledger", "reason": "delivery_final"}
        )
        assert expired == 4
        # a fresh worker restores an empty ledger
        stage2 = DeliverStage(StageEnv(h.settings, Merchants({}), WorkerMetrics()),
                              WeChatClient(h.settings.wechat), FAST)  # fmt: skip
        runner2 = make_runner(h.settings, stage2, tmp_path / "b")
        task2 = asyncio.create_task(runner2.run())
        try:
            async with asyncio.timeout(30):
                await runner2.ready.wait()
            stores = [u.stores["ledger"] for u in runner2._state.units.values()]
            assert stores and all(list(s.scan(b"\x01")) == [] for s in stores)
            assert all([k for k, _ in s.scan(b"n|")] == [] for s in stores)
        finally:
            await runner2.stop()
            await asyncio.wait_for(task2, 30)
            await stage2.client.aclose()


async def test_stats_day_rows_expire_in_store_and_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with lifecycle(kafka_bootstrap, tmp_path) as lc:
        now = lc.clock()
        sent = Outcome("e1", "order_status", "sent", "deliver", APP, "u1", "TPL", "n1", at=now)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        await producer.send_and_wait(lc.topic("outcomes"), encode_internal(sent),
                                     key=f"{APP}:u1".encode())  # fmt: skip
        await producer.stop()
        async with lc.running(StatsStage(lc.env, interval_s=0.2)):
            rows = await lc.until(lc.topic("stats"), lambda latest: len(latest) == 1)
            (key,) = rows
            assert rows[key] is not None and key.startswith(f"{APP}|TPL|".encode())
            lc.clock.offset = 400 * DAY  # retention.stats_days
            rows = await lc.until(lc.topic("stats"), lambda latest: latest[key] is None)
            assert rows[key] is None

            def cleared(latest: dict[bytes, bytes | None]) -> bool:
                rows = [v for k, v in latest.items() if k.startswith((b"r|", b"d|"))]
                return bool(rows) and all(v is None for v in rows)

            # the row and its dirty mark are tombstoned (the user's last-send entry ends by
            # its feedback window, on the wall clock)
            assert cleared(await lc.until(lc.changelog("stats", "stats"), cleared))
            labels = {"store": "stats", "reason": "stats_day"}
            assert await metric(lc, "wxsub_expired_total", 1, **labels) == 1
        local = lc.local("state", "stats", "stats")
        assert not [k for k in local if k.startswith((b"r|", b"d|"))]
        # still live: the user's last send and the send's ref (their windows are on the wall
        # clock), each with its due-index entry
        assert sorted(k[:2] for k in local if not k.startswith(b"\x01")) == [b"l|", b"s|"]
        assert len(local) == 4
        # a worker with an empty state directory restores exactly those
        async with lc.running(StatsStage(lc.env, interval_s=0.2), state="state2"):
            pass
        assert lc.local("state2", "stats", "stats") == local


async def test_sent_refs_end_after_the_open_window_and_a_late_open_is_unknown(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A send's ref (``s|user|ref``) lives ``open_window_ms`` after the send (7 days in
    production, 10 s here), then the DueIndex deletes it, tombstoned in the changelog; an open
    within the window is ``opened``, the same open again ``duplicate``, after it ``unknown_ref``
    (once its 1 s grace for a send is over).
    The user's last send (``l|``, the feedback window, 10 s here too) ends the same way; both
    are counted, and a restarted worker restores the day rows only."""
    async with lifecycle(kafka_bootstrap, tmp_path) as lc:
        nid = "0123456789abcdef0123456789abcdef"

        async def send() -> None:  # once the stage runs: the window starts at the send
            sent = Outcome(
                "e1", "order_status", "sent", "deliver", APP, "u1", "TPL", nid, at=lc.clock()
            )
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            await producer.start()
            await producer.send_and_wait(lc.topic("outcomes"), encode_internal(sent),
                                         key=f"{APP}:u1".encode())  # fmt: skip
            await producer.stop()

        def opened(eid: str) -> tuple[str, MessageOpened]:
            return "opened", MessageOpened(eid, at(lc.clock()), APP, "u1", ref_of(nid), 1014)

        def refs(latest: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            return {k: v for k, v in latest.items() if k.startswith((b"s|", b"l|"))}

        changelog = lc.changelog("stats", "stats")
        stage = StatsStage(lc.env, interval_s=0.2, feedback_window_ms=10_000,
                           open_window_ms=10_000, open_grace_ms=1000)  # fmt: skip
        async with lc.running(stage):
            await send()
            live = refs(await lc.until(changelog, lambda latest: len(refs(latest)) == 2))
            assert sorted(live) == [f"l|{APP}:u1|TPL".encode(),
                                    f"s|{APP}:u1|{ref_of(nid)}".encode()]  # fmt: skip
            await lc.publish([opened("o1"), opened("o2")])
            gone = await lc.until(
                changelog, lambda latest: all(v is None for v in refs(latest).values())
            )
            assert len(refs(gone)) == 2 and all(v is None for v in refs(gone).values())
            for reason in ("sent_ref_window", "last_send_window"):
                labels = {"store": "stats", "reason": reason}
                assert await metric(lc, "wxsub_expired_total", 1, **labels) == 1
            await lc.publish([opened("o3")])
            for _ in range(100):
                opens = [o for o in await _outcomes(lc) if o.kind == "opened"]
                if len(opens) == 3:
                    break
                await asyncio.sleep(0.2)

            def emitted(latest: dict[bytes, bytes | None]) -> bool:  # o3's row: no dirty mark
                return any(b"unknown_ref" in (v or b"") for v in latest.values())

            assert emitted(await lc.until(lc.topic("stats"), emitted))
        assert [(o.event_id, o.reason) for o in opens] == [
            ("o1", "opened"),
            ("o2", "duplicate"),
            ("o3", "unknown_ref"),
        ]
        local = lc.local("state", "stats", "stats")
        assert local and {k[:2] for k in local} == {b"r|"}  # no s|, l|, d| or due entries
        async with lc.running(StatsStage(lc.env, interval_s=0.2), state="state2"):
            pass
        assert lc.local("state2", "stats", "stats") == local
