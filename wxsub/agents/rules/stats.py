"""Statistics for merchants as pure functions: outcomes -> counters per (appid, template, day).

A row is a flat ``dict[str, int]`` of counters, so rows of several partitions add up key by key:

- ``granted``: credits granted (popup accepts the decide stage applied; duplicates excluded)
- ``sent``: sends WeChat accepted (including in-doubt sends settled as sent by a receipt)
- ``failed:<errcode>``: sends WeChat refused (including in-doubt sends settled as failed)
- ``in_doubt``: sends whose answer was lost (reported, never silently resent)
- ``reconciled``: in-doubt sends settled by WeChat's ``subscribe_msg_sent_event``
- ``suppressed:<reason>``: notifications that ended without a send, by reason
- ``card:<update|replaced|illegal|ended>``: order events a service card took instead of a
  classic message (``card_update`` ...: docs/service-cards.md), not counted as suppressed;
  ``card:refused``: users who refused an order's card (-1004), user feedback like ``feedback``
- ``deferred``: marketing held for quiet hours (not an end: it is sent or suppressed later)
- ``rejects``: user rejects (popup reject, or switched off in the settings menu)
- ``feedback``: rejects of a template the user was sent within ``FEEDBACK_WINDOW_MS`` before:
  the user's answer to our messages (each send is counted at most once)
- ``receipts``: WeChat's sent receipts received
- ``opened``: sends opened (an ``opened`` event joined to its send, first open only; counted on
  the open's day); ``open:duplicate`` / ``open:unknown_ref``: opens not counted (the second open
  of a send / no send kept with that ref, in the ``-`` template row): docs/policies.md, Opens

The day is the outcome's decision time in the merchant's time zone (UTC for unknown appids).
Outcomes that name no template (orders-stage suppressions) get the template configured for
their kind, or ``-``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from wxsub.agents.rules.pauses import kinds_of_template
from wxsub.merchants import MerchantConfig
from wxsub.schemas.internal import NOTIFY_KINDS, Outcome, OutcomeReason
from wxsub.schemas.struct import record

__all__ = [
    "FEEDBACK_WINDOW_MS",
    "NO_TEMPLATE",
    "PLAIN_COUNTERS",
    "STAGE",
    "Row",
    "RowKey",
    "StatsRecord",
    "Update",
    "add_rows",
    "app_label",
    "day_of",
    "decode_record",
    "encode_record",
    "funnel",
    "row_key",
    "split_row",
    "update",
]

STAGE = "stats"
NO_TEMPLATE = "-"
FEEDBACK_WINDOW_MS = 7 * 24 * 3600 * 1000
_UTC = zoneinfo.ZoneInfo("UTC")
#: counters without a label part, in display order
PLAIN_COUNTERS = (
    "granted", "sent", "opened", "in_doubt", "reconciled", "deferred", "rejects", "feedback",
    "receipts",
)  # fmt: skip

Row = dict[str, int]
_CARD_REASONS = frozenset(
    {OutcomeReason.CARD_UPDATE, OutcomeReason.CARD_REPLACED, OutcomeReason.CARD_ILLEGAL,
     OutcomeReason.CARD_ENDED, OutcomeReason.CARD_REFUSED}
)  # fmt: skip


@dataclass(frozen=True, slots=True, order=True)
class RowKey:
    appid: str
    template: str
    day: str  # YYYY-MM-DD in the merchant's time zone

    def encode(self) -> bytes:
        return f"{self.appid}|{self.template}|{self.day}".encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> RowKey:
        text = raw.decode() if isinstance(raw, bytes) else raw
        appid, template, day = text.split("|")[:3]
        return cls(appid, template, day)


@record
class Update:
    """What one outcome changes: counters of ``key``'s row, and the user's last send.

    ``last_send``: the new last-send time of (user, template) (None: unchanged);
    ``forget_send``: the last send was answered by a reject (counted as feedback) and is dropped.
    """

    key: RowKey | None
    counters: tuple[str, ...] = ()
    last_send: int | None = None
    forget_send: bool = False


def day_of(at_ms: int, tz: dt.tzinfo | None) -> str:
    moment = dt.datetime.fromtimestamp(at_ms / 1000, tz or _UTC)
    return moment.date().isoformat()


def row_key(o: Outcome, cfg: MerchantConfig | None) -> RowKey | None:
    """The row an outcome counts in, or None (preference and watch state events)."""
    if o.kind not in NOTIFY_KINDS and o.kind != "subscription":
        return None
    template = o.template_id
    if not template:
        kind = cfg.kind(o.kind) if cfg is not None else None
        template = kind.template_id if kind is not None else NO_TEMPLATE
    tz = cfg.timezone if cfg is not None else None
    return RowKey(o.appid or NO_TEMPLATE, template, day_of(o.at, tz))


def update(o: Outcome, cfg: MerchantConfig | None, last_send: int | None, window_ms: int) -> Update:
    """How ``o`` changes the statistics; ``last_send``: the user's last send of the template."""
    key = row_key(o, cfg)
    if key is None:
        return Update(None)
    if o.kind == "subscription":
        return _subscription(o, key, last_send, window_ms)
    if o.stage != "deliver":
        if o.reason in _CARD_REASONS:
            return Update(key, (f"card:{o.reason.removeprefix('card_')}",))
        counter = (
            "deferred"
            if o.reason == OutcomeReason.QUIET_HOURS_DEFERRED
            else f"suppressed:{o.reason}"
        )
        return Update(key, (counter,))
    return _delivery(o, key)


def _delivery(o: Outcome, key: RowKey) -> Update:
    failed = f"failed:{o.errcode if o.errcode is not None else 'none'}"
    if o.reason == OutcomeReason.SENT:
        return Update(key, ("sent",), last_send=o.at)
    if o.reason == OutcomeReason.RECONCILED_SENT:
        return Update(key, ("sent", "reconciled"), last_send=o.at)
    if o.reason == OutcomeReason.FAILED:
        return Update(key, (failed,))
    if o.reason == OutcomeReason.RECONCILED_FAILED:
        return Update(key, (failed, "reconciled"))
    if o.reason == OutcomeReason.IN_DOUBT:
        return Update(key, ("in_doubt",))
    if o.reason == OutcomeReason.QUIET_HOURS_DEFERRED:  # send-time guards (rules/guards.py)
        return Update(key, ("deferred",))
    if o.reason in (OutcomeReason.STALE, OutcomeReason.PAUSED):
        return Update(key, (f"suppressed:{o.reason}",))
    return Update(key)  # not a send result


def _subscription(o: Outcome, key: RowKey, last_send: int | None, window_ms: int) -> Update:
    if o.reason != OutcomeReason.APPLIED:
        return Update(key)  # a duplicate push changes nothing
    # the decide stage writes "<event> <status>" (rules.subscriptions.apply_subscription)
    event, _, status = o.detail.partition(" ")
    if event == "popup" and status == "accept":
        return Update(key, ("granted",))
    if event == "sent":
        return Update(key, ("receipts",))
    if status != "reject":
        return Update(key)
    if last_send is not None and 0 <= o.at - last_send <= window_ms:
        return Update(key, ("rejects", "feedback"), forget_send=True)
    return Update(key, ("rejects",))


#: stats counters that are steps of the merchants' funnel (``wxsub_funnel_total{step}``)
_FUNNEL_STEPS = {"granted": "granted", "sent": "sent", "feedback": "rejected_after_send"}


def app_label(appid: str, cfg: MerchantConfig | None) -> str:
    """The appid as a metric label: ``other`` for an app the merchant config does not know
    (labels stay a finite set whatever appids bad input carries)."""
    return appid if cfg is not None else "other"


def funnel(
    o: Outcome, upd: Update, cfg: MerchantConfig | None
) -> list[tuple[bool, tuple[str, str, str, str]]]:
    """The funnel metrics an outcome's update moves: (suppressed?, labels) with labels
    (appid, template, kind, step or suppression reason). The kind of a subscription event
    (granted, rejects) is the kind the app sends with that template (``-`` if none, the first
    when several share it)."""
    if upd.key is None:
        return []
    kind = o.kind
    if kind not in NOTIFY_KINDS:
        kinds = kinds_of_template(cfg, upd.key.template)
        kind = kinds[0] if kinds else "-"
    app, template = app_label(o.appid, cfg), upd.key.template
    out: list[tuple[bool, tuple[str, str, str, str]]] = []
    for name in upd.counters:
        step = _FUNNEL_STEPS.get(name)
        if step is not None:
            out.append((False, (app, template, kind, step)))
        elif name.startswith("suppressed:"):
            out.append((True, (app, template, kind, name.removeprefix("suppressed:"))))
    return out


def add_rows(rows: Iterable[Mapping[str, int]]) -> Row:
    """The key-by-key sum of rows."""
    out: Row = {}
    for row in rows:
        for name, n in row.items():
            out[name] = out.get(name, 0) + n
    return out


def split_row(row: Mapping[str, int]) -> dict[str, object]:
    """A row as a document: plain counters, ``failed`` by errcode, ``suppressed`` by reason,
    ``card`` by card result, ``open`` (opens not counted) by why."""
    doc: dict[str, object] = {name: row.get(name, 0) for name in PLAIN_COUNTERS}
    for group in ("failed", "suppressed", "card", "open"):
        parts = {k.split(":", 1)[1]: n for k, n in row.items() if k.startswith(group + ":")}
        doc[group] = dict(sorted(parts.items()))
    return doc


# --- the stats topic record ---------------------------------------------------------------------


@record
class StatsRecord:
    """One partition's cumulative row, keyed ``appid|template|day|partition`` (compacted)."""

    key: RowKey
    partition: int
    counters: Row
    updated_at: int

    @property
    def topic_key(self) -> bytes:
        return self.key.encode() + b"|%d" % self.partition


def encode_record(rec: StatsRecord) -> bytes:
    return orjson.dumps(
        {
            "appid": rec.key.appid,
            "template": rec.key.template,
            "day": rec.key.day,
            "partition": rec.partition,
            "counters": rec.counters,
            "updated_at": rec.updated_at,
        }
    )


def decode_record(raw: bytes) -> StatsRecord:
    doc = orjson.loads(raw)
    key = RowKey(doc["appid"], doc["template"], doc["day"])
    counters = {str(k): int(v) for k, v in doc["counters"].items()}
    return StatsRecord(key, int(doc["partition"]), counters, int(doc.get("updated_at", 0)))
