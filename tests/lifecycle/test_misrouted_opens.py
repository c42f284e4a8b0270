"""``opened`` events on the wrong partition, on a real broker: the same sends and opens played
twice, once with every open on the partition its key hashes to (murmur2) and once with every
open on another partition (explicit partition numbers, as a publisher with another partitioner
would). The stats stage moves each misrouted open to its home partition in the same
transaction, once; the open outcomes and the stats rows are the same in both runs (the unknown
refs wait a 1 s grace for a send on their home partition, then end ``unknown_ref``)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka_helpers import read_all
from tests.fixtures.polling import until as _until
from tests.lifecycle.harness import at, lifecycle, stats_by_template
from wxsub.agents.rules.attribution import ref_of
from wxsub.agents.stats import StatsStage
from wxsub.schemas import encode
from wxsub.schemas.internal import Outcome, decode_internal, encode_internal
from wxsub.schemas.records import MessageOpened, user_key
from wxsub.streams.outbox import partition_for

pytestmark = pytest.mark.kafka

APP = "wxMisrouted"
NIDS = {f"u{i}": hashlib.md5(b"%d" % i).hexdigest() for i in (1, 2, 3, 4)}
UNKNOWN_REF = "AAAAAAAAAAAA"
# (event id, user, ref): opened, duplicate, opened, unknown ref, another user's ref (unknown)
OPENS = [
    ("o1", "u1", ref_of(NIDS["u1"])),
    ("o2", "u1", ref_of(NIDS["u1"])),
    ("o3", "u2", ref_of(NIDS["u2"])),
    ("o4", "u3", UNKNOWN_REF),
    ("o5", "u4", ref_of(NIDS["u3"])),
    ("o6", "u3", ref_of(NIDS["u3"])),
]
WANT_OUTCOMES = [
    ("o1", "opened", "TPL"),
    ("o2", "duplicate", "TPL"),
    ("o3", "opened", "TPL"),
    ("o4", "unknown_ref", "-"),
    ("o5", "unknown_ref", "-"),
    ("o6", "opened", "TPL"),
]


async def _play(bootstrap: str, tmp: Path, wrong: bool) -> dict[str, Any]:
    """The sends, then the opens (each on its home partition, or on another one when
    ``wrong``); what the stats stage made of them."""
    async with lifecycle(bootstrap, tmp) as lc:
        parts = lc.settings.kafka.partitions
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            async with lc.running(StatsStage(lc.env, interval_s=0.2, open_grace_ms=1000)):
                now = lc.clock()
                for user, nid in list(NIDS.items())[:3]:  # u4 was sent nothing
                    sent = Outcome(f"e-{user}", "order_status", "sent", "deliver", APP, user,
                                   "TPL", nid, at=now)  # fmt: skip
                    await producer.send_and_wait(lc.topic("outcomes"), encode_internal(sent),
                                                 key=user_key(APP, user).encode())  # fmt: skip
                refs = lc.changelog("stats", "stats")  # the sends are kept before any open
                await lc.until(refs, lambda got: sum(k[:2] == b"s|" for k in got) == 3)
                for eid, user, ref in OPENS:
                    key = user_key(APP, user).encode()
                    home = partition_for(key, parts)
                    part = (home + 1) % parts if wrong else home
                    ev = MessageOpened(eid, at(now), APP, user, ref, 1014)
                    await producer.send_and_wait(lc.topic("opened"), encode(ev), key=key,
                                                 partition=part)  # fmt: skip

                async def opens() -> list[Outcome] | None:
                    recs = await read_all(bootstrap, lc.topic("outcomes"))
                    got = [decode_internal(Outcome, r.value) for r in recs]
                    got = [o for o in got if o.kind == "opened"]
                    return got if len(got) >= len(OPENS) else None

                outcomes = await _until(opens) or []

                async def rows() -> dict[str, dict[str, int]] | None:
                    got = await stats_by_template(lc)
                    opened = got.get("TPL", {}).get("opened", 0)
                    unknown = got.get("-", {}).get("open:unknown_ref", 0)
                    return got if opened == 3 and unknown == 2 else None

                stats = await _until(rows) or await stats_by_template(lc)
                await asyncio.sleep(1)  # settle: an open counted twice would show
                stats = await stats_by_template(lc)
        finally:
            await producer.stop()
        published = await read_all(bootstrap, lc.topic("opened"))
        dlq = await read_all(bootstrap, lc.topic("dlq"))
        moved = lc.metrics.registry.get_sample_value(
            "wxsub_events_misrouted_total", {"topic": "opened"}
        )
        return {
            "outcomes": sorted((o.event_id, o.reason, o.template_id) for o in outcomes),
            "stats": stats,
            "moved": moved or 0.0,
            "dlq": len(dlq),
            "published": [
                (r.partition, partition_for(r.key, parts), dict(r.headers or ())) for r in published
            ],
        }


async def test_opens_on_the_wrong_partition_give_the_same_outcomes_and_stats(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    right = await _play(kafka_bootstrap, tmp_path / "right", wrong=False)
    wrong = await _play(kafka_bootstrap, tmp_path / "wrong", wrong=True)
    assert right["outcomes"] == WANT_OUTCOMES
    assert wrong["outcomes"] == right["outcomes"]
    tpl = right["stats"]["TPL"]
    assert (tpl["sent"], tpl["opened"], tpl["open:duplicate"]) == (3, 3, 1)
    assert right["stats"]["-"]["open:unknown_ref"] == 2
    assert wrong["stats"] == right["stats"]
    assert right["dlq"] == wrong["dlq"] == 0
    # the right run moved nothing; the wrong one had every open off its home partition and
    # moved each one there, once (the copy names where it came from)
    assert right["moved"] == 0 and wrong["moved"] == len(OPENS)
    assert all(p == home for p, home, _ in right["published"])
    originals = [(p, home) for p, home, h in wrong["published"] if "wxsub.moved.from" not in h]
    copies = [(p, home) for p, home, h in wrong["published"] if "wxsub.moved.from" in h]
    assert len(originals) == len(copies) == len(OPENS)
    assert all(p != home for p, home in originals) and all(p == home for p, home in copies)
