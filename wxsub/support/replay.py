"""``wxsub dlq replay``: re-publish dead letters to their source topics, once each.

Reads the DLQ (read_committed) to its current end, keeps the records that match the filters
(reason, stage, source topic, dead-letter time range, attempts below ``--max-attempt``) and have
not been replayed before, and re-publishes each one unchanged (``DeadLetter.original()``: key,
value, the source's headers, ``wxsub.dlq.attempt``).

The record of what was replayed is the compacted topic ``<prefix>dlq-replayed``: one record per
replayed DLQ record, keyed by its DLQ position ``partition:offset``, written in the **same Kafka
transaction** as the re-published record (transactional id ``{app_id}-dlq-replay``, which also
fences a second run started concurrently). So a run that crashes replays nothing it has not
marked, and running the command twice replays nothing twice. Why not a consumer-group commit: a
group offset is one position per partition, while replays are filtered: a run for reason
``internal`` would move the position past the ``schema`` records it skipped, and a later run for
``schema`` would never see them. The markers expire with the DLQ's own retention (the topic is
``compact,delete`` with the DLQ's ``retention.ms``): once a dead letter is gone, nothing can
replay it again.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from wxsub.dlq import DLQ_TOPIC, DeadLetter, parse_dead_letter
from wxsub.settings import KafkaSettings, load_settings
from wxsub.streams.connection import client_kwargs
from wxsub.streams.reading import read_topic
from wxsub.streams.topics import TOPICS

__all__ = ["REPLAYED_TOPIC", "Filters", "Report", "register", "replay"]

REPLAYED_TOPIC = "dlq-replayed"
_CHUNK = 500  # re-published records per transaction


@dataclass(frozen=True)
class Filters:
    reasons: frozenset[str] = frozenset()  # empty: any
    stages: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()  # source topics, full or logical names
    since: dt.datetime | None = None  # dead-lettered at or after
    until: dt.datetime | None = None  # dead-lettered before
    max_attempt: int = 3  # a record that failed this often is left alone

    def match(self, dead: DeadLetter, kafka: KafkaSettings) -> bool:
        if self.reasons and dead.reason not in self.reasons:
            return False
        if self.stages and dead.stage not in self.stages:
            return False
        if self.topics and not any(dead.topic in (t, kafka.topic(t)) for t in self.topics):
            return False
        if self.since is not None and dead.time < self.since:
            return False
        if self.until is not None and dead.time >= self.until:
            return False
        return dead.attempt < self.max_attempt


@dataclass
class Report:
    scanned: int = 0
    matched: int = 0
    already: int = 0  # matched, but replayed by an earlier run
    replayed: int = 0  # (dry run: would be replayed)
    by_reason: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned, "matched": self.matched, "already_replayed": self.already,
            "replayed": self.replayed, "by_reason": dict(self.by_reason), "dry_run": self.dry_run,
        }  # fmt: skip


async def replay(
    kafka: KafkaSettings,
    app_id: str,
    filters: Filters,
    *,
    dry_run: bool = False,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Re-publish the matching dead letters not replayed before (the module docstring)."""
    dlq, marks = kafka.topic(DLQ_TOPIC), kafka.topic(REPLAYED_TOPIC)
    await _ensure_replayed_topic(kafka, marks)
    done = {r.key for r in await read_topic(kafka.bootstrap, marks) if r.key is not None}
    report = Report(dry_run=dry_run)
    todo: list[tuple[bytes, DeadLetter]] = []
    for rec in await read_topic(kafka.bootstrap, dlq):
        report.scanned += 1
        try:
            dead = parse_dead_letter(rec.value or b"", rec.headers, rec.key)
        except ValueError:
            continue  # not a wxsub dead letter
        if not filters.match(dead, kafka):
            continue
        report.matched += 1
        mark = b"%d:%d" % (rec.partition, rec.offset)
        if mark in done:
            report.already += 1
            continue
        todo.append((mark, dead))
        report.by_reason[dead.reason] += 1
    if dry_run:
        report.replayed = len(todo)
        return report
    producer = AIOKafkaProducer(
        **client_kwargs(kafka), transactional_id=f"{app_id}-dlq-replay", acks="all"
    )
    await producer.start()  # fences an earlier run of the command still in flight
    try:
        for start in range(0, len(todo), _CHUNK):
            chunk = todo[start : start + _CHUNK]
            async with producer.transaction():
                futures = []
                for mark, dead in chunk:
                    topic, key, value, headers = dead.original()
                    futures.append(await producer.send(topic, value, key=key, headers=headers))
                    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                    doc = {"topic": topic, "replayed_at": when, "reason": dead.reason}
                    futures.append(await producer.send(marks, orjson.dumps(doc), key=mark))
                await asyncio.gather(*futures)
            report.replayed += len(chunk)
            if progress is not None:
                progress(report)
    finally:
        await producer.stop()
    return report


async def _ensure_replayed_topic(kafka: KafkaSettings, name: str) -> None:
    retention = next(t.retention_ms for t in TOPICS if t.name == DLQ_TOPIC)
    admin = AIOKafkaAdminClient(**client_kwargs(kafka))
    await admin.start()
    try:
        if name in set(await admin.list_topics()):
            return
        configs = {"cleanup.policy": "compact,delete", "retention.ms": str(retention)}
        topic = NewTopic(name, 1, kafka.replication_factor, topic_configs=configs)
        try:
            await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


# --- the command --------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dlq", help="the dead-letter topic: replay what a fix covers")
    sub = p.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    r = sub.add_parser(
        "replay",
        help="re-publish matching dead letters to their source topics, each at most once",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    r.add_argument("--reason", action="append", default=[], help="only this reason (repeatable)")
    r.add_argument("--stage", action="append", default=[], help="only this stage (repeatable)")
    r.add_argument("--topic", action="append", default=[], help="only this source topic")
    r.add_argument("--since", type=_time, help="dead-lettered at or after (ISO 8601, UTC if bare)")
    r.add_argument("--until", type=_time, help="dead-lettered before (ISO 8601)")
    r.add_argument("--max-attempt", type=int, default=3, help="leave records failed this often")
    r.add_argument("--dry-run", action="store_true", help="count what would be replayed, send none")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--bootstrap", help="Kafka bootstrap servers (default: kafka.bootstrap)")
    r.add_argument("--config", default=argparse.SUPPRESS, help="settings TOML file")
    r.set_defaults(func=_run)


def _time(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    if args.bootstrap:
        settings = settings.with_overrides(kafka={"bootstrap": args.bootstrap})
    filters = Filters(
        frozenset(args.reason), frozenset(args.stage), frozenset(args.topic),
        args.since, args.until, args.max_attempt,
    )  # fmt: skip

    def progress(r: Report) -> None:
        print(f"replayed {r.replayed} of {r.matched - r.already}", file=sys.stderr)

    report = asyncio.run(
        replay(settings.kafka, settings.worker.app_id, filters, dry_run=args.dry_run,
               progress=progress)
    )  # fmt: skip
    if args.json:
        print(orjson.dumps(report.to_json()).decode())
    else:
        verb = "would replay" if report.dry_run else "replayed"
        reasons = ", ".join(f"{k}={n}" for k, n in sorted(report.by_reason.items())) or "-"
        print(f"scanned {report.scanned}, matched {report.matched}, already replayed "
              f"{report.already}, {verb} {report.replayed} ({reasons})")  # fmt: skip
    return 0
