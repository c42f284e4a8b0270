"""``wxsub pauses [show] | lift APPID KIND | set APPID KIND --reason TEXT``: kind pauses.

A pause stops every send of one kind for one mini program (``wxsub.agents.rules.pauses``: tripped
by WeChat's 43107/45168, by feedback over the threshold, or by ``set``). ``show`` lists the
pauses in force with why, by whom and since when; ``lift`` ends one (the workers follow the
compacted ``pauses`` topic and send again from then on; what ended as ``paused`` meanwhile stays
ended); ``set`` pauses a kind by hand. ``docs/operations.md`` has the runbook.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from wxsub.agents.rules.pauses import PauseRecord, decode_pause, encode_pause, paused_table
from wxsub.settings import Settings, load_settings
from wxsub.streams.connection import client_kwargs
from wxsub.streams.reading import read_topic
from wxsub.streams.topics import ensure_topics

__all__ = ["live_pauses", "write_pause"]


async def live_pauses(settings: Settings) -> dict[tuple[str, str], PauseRecord]:
    """(appid, kind) -> the record of each pause in force."""
    topic = settings.kafka.topic("pauses")
    records = [decode_pause(r.value) for r in await read_topic(settings.kafka.bootstrap, topic)
               if r.value is not None]  # fmt: skip
    return paused_table(records)


async def write_pause(settings: Settings, appid: str, kind: str, paused: bool, reason: str) -> None:
    """Write an operator's pause (or lift) record, acks=all."""
    await ensure_topics(settings.kafka, settings.worker.app_id)
    rec = PauseRecord(appid, kind, paused, reason, "operator", int(time.time() * 1000))
    producer = AIOKafkaProducer(**client_kwargs(settings.kafka), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka.topic("pauses"), encode_pause(rec), rec.key)
    finally:
        await producer.stop()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pauses",
        help="show, lift or set kind pauses",
        description="Show the kinds paused per mini program (43107, 45168, feedback, operator), "
        "lift one, or pause one by hand.",
    )
    p.add_argument("action", nargs="?", choices=("show", "lift", "set"), default="show")
    p.add_argument("appid", nargs="?")
    p.add_argument("kind", nargs="?")
    p.add_argument("--reason", default="", help="why (set and lift)")
    p.add_argument("--config", default=argparse.SUPPRESS, help="settings TOML file")
    p.set_defaults(func=_pauses)


def _pauses(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    if args.action == "show":
        table = asyncio.run(live_pauses(settings))
        if not table:
            print("no kind is paused")
        for (appid, kind), rec in sorted(table.items()):
            since = dt.datetime.fromtimestamp(rec.at / 1000, dt.UTC).isoformat(timespec="seconds")
            print(f"{appid}  {kind:<12}  {rec.source:<8}  since {since}  {rec.reason}")
        return 0
    if not args.appid or not args.kind:
        print(f"wxsub pauses {args.action} APPID KIND")
        return 2
    paused = args.action == "set"
    reason = args.reason or ("paused by an operator" if paused else "lifted by an operator")
    asyncio.run(write_pause(settings, args.appid, args.kind, paused, reason))
    print(f"{args.appid} {args.kind}: {'paused' if paused else 'lifted'}")
    return 0
