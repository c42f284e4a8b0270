"""Auto-pause as pure functions: when a kind of message stops being sent for a mini program.

A pause is per (appid, kind). It is tripped by

- WeChat: a send answered **43107** (the capability or the template is banned) or **45168**
  (content refused) pauses the kind at once (the deliver stage writes the record in the
  transaction that writes the answer);
- feedback: a stats row (one partition's share of an (appid, template, day) row) whose
  ``feedback`` (rejects within 7 days of a send) crosses ``reject_rate`` of its ``sent`` once it
  has at least ``min_sends`` sends pauses every kind sending with that template;
- an operator: ``wxsub pauses set APPID KIND --reason ...``.

It ends only when an operator lifts it (``wxsub pauses lift APPID KIND``): a ban does not lift
itself, and the shop must change what it sends first. While paused, every send of the kind ends
unsent as ``paused`` at send time (``rules/guards.py``): pending retries, deferrals and new
intents alike; nothing reaches WeChat.

Records live on the compacted ``pauses`` topic, key ``appid|kind``, the latest record is the
state (``paused`` false: lifted). Bounded by the configured (appid, kind) pairs; every worker
follows the topic whole (``wxsub.agents.kind_pauses``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from wxsub.merchants import MerchantConfig
from wxsub.schemas.struct import from_doc, record

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PAUSE_ERRCODES",
    "PauseRecord",
    "Thresholds",
    "decode_pause",
    "encode_pause",
    "feedback_trips",
    "kinds_of_template",
    "on_errcode",
    "pause_key",
    "paused_table",
]

#: errcodes of a send that pause the kind at once, and what they mean
PAUSE_ERRCODES: dict[int, str] = {
    43107: "WeChat 43107: the capability or the template is banned",
    45168: "WeChat 45168: the content was refused",
}


@record
class PauseRecord:
    """The ``pauses`` topic's value: whether (appid, kind) is paused, why, by whom, when."""

    appid: str
    kind: str
    paused: bool
    reason: str
    source: str  # wechat | feedback | operator
    at: int
    errcode: int | None = None

    @property
    def key(self) -> bytes:
        return pause_key(self.appid, self.kind)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Feedback pause thresholds (safe defaults: 5% of at least 50 sends of a partition's day)."""

    reject_rate: float = 0.05
    min_sends: int = 50

    def __post_init__(self) -> None:
        if not 0 < self.reject_rate <= 1 or self.min_sends < 1:
            raise ValueError("0 < reject_rate <= 1 and min_sends >= 1")


DEFAULT_THRESHOLDS = Thresholds()


def pause_key(appid: str, kind: str) -> bytes:
    return f"{appid}|{kind}".encode()


def encode_pause(rec: PauseRecord) -> bytes:
    return orjson.dumps(rec)


def decode_pause(raw: bytes) -> PauseRecord:
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("a pause record is an object")
    return from_doc(PauseRecord, doc)


def on_errcode(appid: str, kind: str, errcode: int | None, now_ms: int) -> PauseRecord | None:
    """The pause a send's errcode trips, or None."""
    if errcode is None or errcode not in PAUSE_ERRCODES:
        return None
    return PauseRecord(appid, kind, True, PAUSE_ERRCODES[errcode], "wechat", now_ms, errcode)


def _over(row: Mapping[str, int], t: Thresholds) -> bool:
    sent = row.get("sent", 0)
    return sent >= t.min_sends and row.get("feedback", 0) >= t.reject_rate * sent


def feedback_trips(
    before: Mapping[str, int],
    after: Mapping[str, int],
    appid: str,
    template: str,
    cfg: MerchantConfig | None,
    t: Thresholds,
    now_ms: int,
) -> tuple[PauseRecord, ...]:
    """The pauses a stats row update trips: only when the row *crosses* the threshold (so a
    lifted pause stays lifted until another row crosses), for each kind using the template."""
    if _over(before, t) or not _over(after, t):
        return ()
    sent, feedback = after.get("sent", 0), after.get("feedback", 0)
    reason = f"feedback: {feedback} rejects after {sent} sends >= {t.reject_rate:.0%}"
    return tuple(
        PauseRecord(appid, kind, True, reason, "feedback", now_ms)
        for kind in kinds_of_template(cfg, template)
    )


def kinds_of_template(cfg: MerchantConfig | None, template: str) -> tuple[str, ...]:
    """The kinds of an app that send with ``template`` (itself or a ``by_status`` variant)."""
    if cfg is None:
        return ()
    return tuple(
        name
        for name, kc in sorted(cfg.kinds.items())
        if any(k.template_id == template for k in kc.all_templates())
    )


def paused_table(records: Iterable[PauseRecord]) -> dict[tuple[str, str], PauseRecord]:
    """(appid, kind) -> the record of every pause in force (the latest record per key wins)."""
    latest: dict[tuple[str, str], PauseRecord] = {}
    for rec in records:
        latest[(rec.appid, rec.kind)] = rec
    return {k: r for k, r in latest.items() if r.paused}
