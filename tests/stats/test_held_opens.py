"""Opens that reach the stats stage before their send, on a real broker (a StageRunner on the
session broker, the stats store's changelog read back).

The app's ``retention.open_window_s`` is 3600 (not the 7-day default) and the grace is 20 s.
User u1 opens message A twice before A's ``sent`` outcome exists, and opens a ref nobody was
sent; user u2 opens ``MAX_HELD_PER_USER + 1`` unknown refs at once; u3 opens an unknown ref an
hour after the fact. Held: u1's two refs and u2's first ``MAX_HELD_PER_USER`` (each written to the
changelog); not held: u2's last one (the bound) and u3's (older than the grace), both
``unknown_ref`` at once. Then A's send arrives: its opens end ``opened`` and ``duplicate``, the
others ``unknown_ref`` at the grace's end. Every held entry is tombstoned, A's ref is kept with
the app's window (its due-index entry at the send + 1 h), the rows and the expiry counter add up,
and a worker with an empty state directory restores no held open.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.agents.factory import APPID, app_doc
from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.polling import until
from tests.lifecycle.harness import Lifecycle, at, lifecycle, stats_by_template
from wxsub.agents.rules import attribution as att
from wxsub.agents.stats import StatsStage
from wxsub.merchants import parse_merchants
from wxsub.schemas.internal import Outcome, decode_internal, encode_internal
from wxsub.schemas.records import MessageOpened, user_key

pytestmark = pytest.mark.kafka

NID = "0123456789abcdef0123456789abcdef"
REF_A = att.ref_of(NID)
N = att.MAX_HELD_PER_USER
GRACE_MS = 20_000
HOUR_MS = 3_600_000


def _opened(eid: str, user: str, ref: str, at_ms: int) -> tuple[str, MessageOpened]:
    return "opened", MessageOpened(eid, at(at_ms), APPID, user, ref, 1014)


def _held(key: bytes) -> bool:
    return key.startswith(b"o|")


async def _outcomes(lc: Lifecycle) -> list[Outcome]:
    recs = await read_all(lc.settings.kafka.bootstrap, lc.topic("outcomes"))
    return [o for o in (decode_internal(Outcome, r.value) for r in recs) if o.kind == "opened"]


async def test_opens_before_their_send_wait_for_it_or_end_unknown_after_the_grace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    merchants = parse_merchants(
        {"apps": {APPID: app_doc(retention={"open_window_s": HOUR_MS // 1000})}}
    )
    async with lifecycle(kafka_bootstrap, tmp_path, merchants) as lc:
        changelog = lc.changelog("stats", "stats")
        stage = StatsStage(lc.env, interval_s=0.2, open_grace_ms=GRACE_MS)
        async with lc.running(stage):
            now = lc.clock()
            opens = [
                _opened("a1", "u1", REF_A, now),
                _opened("a2", "u1", REF_A, now + 1),  # A again: waits with the first
                _opened("x1", "u1", "AAAAAAAAAAAA", now),
                *(_opened(f"b{i}", "u2", f"BBBBBBBBBB{i:02d}", now) for i in range(N + 1)),
                _opened("c1", "u3", "CCCCCCCCCCCC", now - HOUR_MS),  # too old to wait
            ]
            await lc.publish(opens)

            def held(latest: dict[bytes, bytes | None]) -> list[bytes]:
                return [k for k, v in latest.items() if _held(k) and v is not None]

            waiting = held(await lc.until(changelog, lambda got: len(held(got)) == 2 + N))
            u1, u2 = (user_key(APPID, u).encode() for u in ("u1", "u2"))
            assert sorted(waiting) == sorted(
                [b"o|%s|%s" % (u1, REF_A.encode()), b"o|%s|AAAAAAAAAAAA" % u1]
                + [b"o|%s|BBBBBBBBBB%02d" % (u2, i) for i in range(N)]
            )
            # A's send arrives (its outcome, as the deliver stage writes it)
            sent_at = lc.clock()
            sent = Outcome("e-a", "order_status", "sent", "deliver", APPID, "u1", "TPL", NID,
                           at=sent_at)  # fmt: skip
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            await producer.start()
            await producer.send_and_wait(lc.topic("outcomes"), encode_internal(sent),
                                         key=user_key(APPID, "u1").encode())  # fmt: skip
            await producer.stop()

            async def all_ended() -> list[Outcome] | None:
                got = await _outcomes(lc)
                return got if len(got) >= len(opens) else None

            ended = await until(all_ended, 90) or await _outcomes(lc)

            async def rows_done() -> dict[str, dict[str, int]] | None:
                got = await stats_by_template(lc)
                return got if got.get("-", {}).get("open:unknown_ref") == N + 3 else None

            rows = await until(rows_done, 90) or await stats_by_template(lc)
            await asyncio.sleep(1)  # settle: an open ended twice would show
            ended = await _outcomes(lc)
            rows = await stats_by_template(lc)
            latest = await lc.latest(changelog)
            grace = lc.metrics.registry.get_sample_value(
                "wxsub_expired_total", {"store": "stats", "reason": "open_grace"}
            )
        assert sorted((o.event_id, o.reason, o.template_id) for o in ended) == sorted(
            [("a1", "opened", "TPL"), ("a2", "duplicate", "TPL"), ("x1", "unknown_ref", "-"),
             ("c1", "unknown_ref", "-")]
            + [(f"b{i}", "unknown_ref", "-") for i in range(N + 1)]
        )  # fmt: skip
        assert {o.at for o in ended if o.event_id == "a1"} == {now}  # the open's time
        assert rows["TPL"]["sent"] == 1
        assert (rows["TPL"]["opened"], rows["TPL"]["open:duplicate"]) == (1, 1)
        assert rows["-"] == {"open:unknown_ref": N + 3}
        # every held entry (and its due-index entry) ended in a tombstone; u2's last open and
        # u3's were never held
        held_keys = {k: v for k, v in latest.items() if _held(k)}
        assert len(held_keys) == 2 + N and all(v is None for v in held_keys.values())
        due_held = {k: v for k, v in latest.items() if k.startswith(b"\x01due|") and b"|o|" in k}
        assert len(due_held) == 2 + N and all(v is None for v in due_held.values())
        assert grace == 1 + N  # u1's unknown ref and u2's held ones: ended by the grace
        # A's ref is kept with the app's window (fixed at the send), marked by its first open
        ref_key = b"s|%s|%s" % (user_key(APPID, "u1").encode(), REF_A.encode())
        kept_raw = latest[ref_key]
        assert kept_raw is not None
        kept = att.decode_ref(kept_raw)
        assert kept == att.SentRef("TPL", "order_status", sent_at, now, HOUR_MS)
        due_key = b"\x01due|%013d|" % (sent_at + HOUR_MS) + ref_key
        assert latest.get(due_key) == b""
        local = lc.local("state", "stats", "stats")
        assert not [k for k in local if _held(k) or b"|o|" in k]
        async with lc.running(StatsStage(lc.env, interval_s=0.2), state="state2"):
            pass
        assert lc.local("state2", "stats", "stats") == local
