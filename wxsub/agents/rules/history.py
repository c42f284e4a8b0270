"""A user's recent decisions, kept in their state: what support reads to answer "why not?".

Each ``UserState`` keeps its last :data:`HISTORY_MAX` decisions, oldest first, in
``UserState.history``: every candidate decided (an intent, a hold, or a suppression with its
reason and detail), every held or deferred intent released by the timer, every state event
(subscription, preference) and every credit correction from delivery. An entry is a JSON
array, and the history is the entries' JSON text joined by newlines, kept as one string:

    [at, event_id, kind, subject, reason, template_id, detail]

The notification id is not stored: it is ``notification_id(appid, openid, template_id,
event_id)`` for every candidate decision, and :func:`decisions` computes it (a correction keeps
its notification id in the ``event_id`` place).

One string, not a list of lists: the decide stage reads and writes a user's state for every
candidate, and parsing the entries into Python objects each time (to append one) would cost
more than keeping them; a string is one object to read and write, and appending, trimming and
expiring are string operations. The cost per event is in bench/RESULTS.md ("support").
``at`` is the wall-clock time of the decision (epoch ms); ``reason`` is an ``OutcomeReason``
or one of :data:`INTENT`, :data:`HELD`, :data:`RELEASED`, :data:`CORRECTION`.
:func:`decisions` gives them as :class:`Decided` tuples.

Bounded: at most :data:`HISTORY_MAX` entries, and an entry older than the app's dedupe
retention (the state's own memory of what it decided) is dropped when the next one is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from wxsub.schemas.internal import NOTIFY_KINDS, notification_id

__all__ = [
    "CORRECTION",
    "HELD",
    "HISTORY_MAX",
    "INTENT",
    "RELEASED",
    "Decided",
    "add",
    "decisions",
    "entry",
]

HISTORY_MAX = 20
INTENT = "intent"  # decided: the intent went to delivery
HELD = "held"  # a logistics intent held for collapse (detail: until when)
RELEASED = "released"  # a held or deferred intent the timer released to delivery
CORRECTION = "correction"  # a credit correction from delivery (detail: zero | restore)


class Decided(NamedTuple):
    """One entry of a user's history, named."""

    at: int
    event_id: str
    kind: str
    subject: str
    reason: str
    template_id: str
    notification_id: str
    detail: str


def entry(
    at: int,
    event_id: str,
    kind: str,
    subject: str,
    reason: str,
    template_id: str = "",
    nid: str = "",
    detail: str = "",
) -> list[Any]:
    """An entry in its stored form (``nid`` is kept only for a correction, see above)."""
    if reason == CORRECTION:
        event_id = nid
    return [at, event_id, kind, subject, reason, template_id, detail]


def add(history: str, entries: Sequence[Sequence[Any]], horizon_ms: int) -> str:
    """``history`` with ``entries`` appended, the oldest dropped past :data:`HISTORY_MAX`, and
    entries decided before ``horizon_ms`` forgotten."""
    if not entries:
        return history
    text = "\n".join([orjson.dumps(e).decode() for e in entries])
    out = f"{history}\n{text}" if history else text
    if len(out) > HISTORY_MAX * _MIN_ENTRY:  # (else it cannot hold too many entries)
        n = out.count("\n") + 1
        if n > HISTORY_MAX:
            out = out.split("\n", n - HISTORY_MAX)[-1]
    if _at(out) < horizon_ms:
        out = "\n".join([line for line in out.split("\n") if _at(line) >= horizon_ms])
    return out


def expire(history: str, horizon_ms: int) -> str:
    """``history`` without the entries decided before ``horizon_ms`` (oldest first, so only the
    first entry needs a look when nothing is due)."""
    if not history or _at(history) >= horizon_ms:
        return history
    return "\n".join([line for line in history.split("\n") if _at(line) >= horizon_ms])


_MIN_ENTRY = len('[0,"","","","","",""]') + 1


def _at(line: str) -> int:
    """The ``at`` of the (first) entry of ``line``: the number after its ``[``."""
    return int(line[1 : line.index(",")])


def decisions(history: str, appid: str = "", openid: str = "") -> list[Decided]:
    """The entries of the history of user ``appid:openid`` as :class:`Decided` tuples, oldest
    first (entries of another length, a newer writer's, are skipped)."""
    out = []
    for line in history.split("\n") if history else ():
        e = orjson.loads(line)
        if len(e) != 7:
            continue
        at, event_id, kind, subject, reason, template_id, detail = e
        nid = ""
        if reason == CORRECTION:
            nid, event_id = event_id, ""
        elif template_id and kind in NOTIFY_KINDS:
            nid = notification_id(appid, openid, template_id, event_id)
        out.append(Decided(at, event_id, kind, subject, reason, template_id, nid, detail))
    return out
