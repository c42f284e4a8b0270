"""``wxsub stats``: sends, suppressions and user feedback per appid, template and day.

The stats stage of the workers keeps, per partition, a cumulative row per (appid, template, day)
and writes it to the compacted ``stats`` topic (``wxsub.agents.stats``). :func:`read_stats`
reads that topic to its end (read_committed), keeps the latest record per key and sums the
partitions; the worker's ``/stats`` and this command both use it. Counters are explained in
``wxsub.agents.rules.stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from wxsub.agents.rules.stats import Row, RowKey, add_rows, decode_record, split_row
from wxsub.errors import SetupError
from wxsub.settings import KafkaSettings, load_settings
from wxsub.streams.connection import security_kwargs
from wxsub.streams.reading import read_topic

__all__ = ["StatsTable", "format_table", "open_rate", "read_stats", "register"]


@dataclass(frozen=True)
class StatsTable:
    """Rows summed over partitions, by (appid, template, day)."""

    rows: Mapping[RowKey, Row]

    def select(
        self, appid: str | None = None, day: str | None = None, template: str | None = None
    ) -> StatsTable:
        keep = {
            k: r
            for k, r in self.rows.items()
            if (appid is None or k.appid == appid)
            and (day is None or k.day == day)
            and (template is None or k.template == template)
        }
        return StatsTable(keep)

    def total(self) -> Row:
        return add_rows(self.rows.values())

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"appid": k.appid, "template": k.template, "day": k.day, **split_row(self.rows[k])}
            for k in sorted(self.rows)
        ]


async def read_stats(kafka: KafkaSettings, timeout_s: float = 10.0) -> StatsTable:
    """Read the compacted ``stats`` topic to its current end and sum the partitions."""
    try:
        async with asyncio.timeout(timeout_s):
            latest = await _read_latest(
                kafka.bootstrap, kafka.topic("stats"), security_kwargs(kafka)
            )
    except (KafkaError, TimeoutError) as exc:
        raise SetupError(f"cannot read {kafka.topic('stats')} from {kafka.bootstrap}") from exc
    per_key: dict[RowKey, list[Row]] = {}
    for raw in latest.values():
        rec = decode_record(raw)
        per_key.setdefault(rec.key, []).append(rec.counters)
    return StatsTable({k: add_rows(rows) for k, rows in per_key.items()})


async def _read_latest(
    bootstrap: str, topic: str, security: dict[str, Any] | None = None
) -> dict[bytes, bytes]:
    """The latest value per key of the compacted ``topic`` (a tombstone removes the key)."""
    latest: dict[bytes, bytes] = {}
    for rec in await read_topic(bootstrap, topic, security=security):
        if rec.key is None:
            continue
        if rec.value is None:
            latest.pop(rec.key, None)
        else:
            latest[rec.key] = rec.value
    return latest


# --- the table ----------------------------------------------------------------------------------

_COLUMNS = (
    "granted", "sent", "opened", "failed", "in_doubt", "suppressed", "card", "rejects", "feedback",
)  # fmt: skip


def format_table(table: StatsTable) -> str:
    """A fixed-width table, one line per row (with the open rate: opened / sent), with failures
    and suppressions broken down."""
    head = ["day", "appid", "template", *_COLUMNS, "open%"]
    lines: list[list[str]] = []
    notes: list[str] = []
    for doc in table.to_json():
        cells = [doc["day"], doc["appid"], _short(doc["template"])]
        for col in _COLUMNS:
            value = doc[col]
            cells.append(str(sum(value.values()) if isinstance(value, dict) else value))
        cells.append(open_rate(doc["opened"], doc["sent"]))
        lines.append(cells)
        detail = _detail(doc)
        if detail:
            notes.append(f"  {doc['day']} {doc['appid']} {_short(doc['template'])}: {detail}")
    if not lines:
        return "no statistics yet (is a worker running the stats stage?)"
    total = split_row(table.total())
    counts = [str(_sum(total[c])) for c in _COLUMNS]  # type: ignore[arg-type]
    rate = open_rate(_sum(total["opened"]), _sum(total["sent"]))  # type: ignore[arg-type]
    lines.append(["total", "", "", *counts, rate])
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    out = [_row(head, widths), _row(["-" * w for w in widths], widths)]
    out += [_row(r, widths) for r in lines]
    if notes:
        out += [
            "",
            "breakdown (failed by errcode, suppressed by reason, card results, opens not counted):",
            *notes,
        ]
    return "\n".join(out)


def open_rate(opened: int, sent: int) -> str:
    """Opens per send in percent ("-" before any send). An open is counted on its own day, so a
    day's rate can pass 100% when opens of earlier days' sends come in."""
    return f"{100 * opened / sent:.1f}" if sent else "-"


def _sum(value: int | Mapping[str, int]) -> int:
    return sum(value.values()) if isinstance(value, Mapping) else value


def _detail(doc: Mapping[str, Any]) -> str:
    parts = [f"failed {code}={n}" for code, n in doc["failed"].items()]
    parts += [f"{reason}={n}" for reason, n in doc["suppressed"].items()]
    parts += [f"card {result}={n}" for result, n in doc.get("card", {}).items()]
    parts += [f"open {why}={n}" for why, n in doc.get("open", {}).items()]
    return ", ".join(parts)


def _short(template: str, width: int = 24) -> str:
    return template if len(template) <= width else template[: width - 1] + "…"


def _row(cells: Iterable[str], widths: list[int]) -> str:
    pairs = enumerate(zip(cells, widths, strict=True))
    parts = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in pairs]
    return "  ".join(parts).rstrip()


# --- the command --------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "stats",
        help="sends, suppressions and user feedback per appid, template and day",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--appid", help="only this appid")
    p.add_argument("--day", help="only this day (YYYY-MM-DD, the merchant's time zone)")
    p.add_argument("--template", help="only this template id")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: kafka.bootstrap)")
    p.add_argument("--config", default=argparse.SUPPRESS, help="settings TOML file")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    if args.bootstrap:
        settings = settings.with_overrides(kafka={"bootstrap": args.bootstrap})
    table = asyncio.run(read_stats(settings.kafka)).select(args.appid, args.day, args.template)
    if args.json:
        sys.stdout.write(orjson.dumps(table.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_table(table))
    return 0
