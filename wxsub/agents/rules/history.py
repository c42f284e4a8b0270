"""A user's recent decisions, kept in their state: what support reads to answer "why not?".

Each ``UserState`` keeps its last :data:`HISTORY_MAX` decisions, oldest first, in
``UserState.history``: every candidate decided (an intent, a hold, or a suppression with its
reason and detail), every held or deferred intent released by the timer, every state event
(subscription, preference) and every credit correction from delivery. An entry is one line,
its fields separated by tabs, and the history is the lines joined by newlines, kept as one
string:

    at TAB K R event_id TAB subject TAB template_id TAB detail

``K`` and ``R`` are one character each, the kind's and the reason's codes (:data:`KIND_CODES`,
:data:`REASON_CODES`: fixed forever, new values get new codes), written just before the event
id. Earlier forms are read too: the tab form of 2026-12-06 with the kind and reason spelled out
(seven fields, ``at TAB event_id TAB kind TAB subject TAB reason TAB template_id TAB detail``),
still written for a kind or reason without a code, and a JSON array ``[at, event_id, kind,
subject, reason, template_id, detail]``, the first version's form, still written for an entry
with a tab or a newline in a field. A reader of the seven-field form only (the version before
this one) skips the five-field entries in its answers and still trims and expires them by
their ``at``, which keeps its place (the first version cannot read the tab forms: only its
support queries would fail).

Why so few bytes: the history is itself a string inside the user's stored JSON, which the
decide stage reads and writes for every candidate: each byte is encoded, compressed, stored and
read back again, and a tab is two bytes there (``\\t``). The codes and two tabs fewer save
20-23 stored bytes per entry over the seven-field form, which was itself a quarter fewer than
JSON arrays (whose 12 quotes are escaped): bench/RESULTS.md, "support".

The notification id is not stored: it is ``notification_id(appid, openid, template_id,
event_id)`` for every candidate decision, and :func:`decisions` computes it (a correction keeps
its notification id in the ``event_id`` place).

One string, not a list of lists: the decide stage reads and writes a user's state for every
candidate, and parsing the entries into Python objects each time (to append one) would cost
more than keeping them; a string is one object to read and write, and appending, trimming and
expiring are string operations. The cost per event is in bench/RESULTS.md ("support").
``at`` is the wall-clock time of the decision (epoch ms); ``reason`` is an ``OutcomeReason``
or one of :data:`INTENT`, :data:`HELD`, :data:`RELEASED`, :data:`CORRECTION`.
:func:`decisions` gives them as :class:`Decided` tuples, whatever the stored form.

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
    "KIND_CODES",
    "REASON_CODES",
    "RELEASED",
    "Decided",
    "add",
    "add_intent",
    "decisions",
    "entry",
]

HISTORY_MAX = 20
INTENT = "intent"  # decided: the intent went to delivery
HELD = "held"  # a logistics intent held for collapse (detail: until when)
RELEASED = "released"  # a held or deferred intent the timer released to delivery
CORRECTION = "correction"  # a credit correction from delivery (detail: zero | restore)

#: the stored one-character codes of kinds and reasons: never change or reuse one (stored
#: histories hold them); a value without a code is written in the seven-field form
KIND_CODES = {
    "order_status": "o", "logistics": "l", "price_drop": "p", "restock": "r", "promotion": "m",
    "subscription": "s", "preference": "f", CORRECTION: "c",
}  # fmt: skip
REASON_CODES = {
    INTENT: "i", HELD: "h", RELEASED: "r", CORRECTION: "c", "applied": "a", "duplicate": "d",
    "no_credit": "n", "stale": "s", "no_template": "t", "template_unfit": "u",
    "not_subscribed_kind": "k", "muted": "m", "invalid_data": "v", "content_blocked": "b",
    "collapsed": "l", "capped": "p", "quiet_hours_deferred": "q", "regression": "g",
    "paused": "z", "no_rule": "x", "orphan": "o", "no_match": "w", "card_update": "C",
    "card_replaced": "E", "card_illegal": "I", "card_ended": "N", "card_refused": "F",
}  # fmt: skip
_KINDS = {code: kind for kind, code in KIND_CODES.items()}
_REASONS = {code: reason for reason, code in REASON_CODES.items()}
_KIND_CODE, _REASON_CODE = KIND_CODES.get, REASON_CODES.get
_INTENT_CODE = REASON_CODES[INTENT]


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
) -> str:
    """An entry in its stored form (``nid`` is kept only for a correction, see above)."""
    if reason == CORRECTION:
        event_id = nid
    k, r = _KIND_CODE(kind), _REASON_CODE(reason)
    if k is not None and r is not None:
        line = f"{at}\t{k}{r}{event_id}\t{subject}\t{template_id}\t{detail}"
        if line.count("\t") == 4 and "\n" not in line:  # (no field holds a tab or a newline)
            return line
    line = f"{at}\t{event_id}\t{kind}\t{subject}\t{reason}\t{template_id}\t{detail}"
    if line.count("\t") == 6 and "\n" not in line:
        return line
    return orjson.dumps([at, event_id, kind, subject, reason, template_id, detail]).decode()


def add_intent(
    history: str, at: int, event_id: str, kind: str, subject: str, template_id: str,
    horizon_ms: int,
) -> str:  # fmt: skip
    """``add(history, [entry(at, event_id, kind, subject, INTENT, template_id)], horizon_ms)``:
    most decisions, in one call, without the entry's tests for the other reasons."""
    k = _KIND_CODE(kind)
    if k is not None:
        line = f"{at}\t{k}{_INTENT_CODE}{event_id}\t{subject}\t{template_id}\t"
        if line.count("\t") == 4 and "\n" not in line:
            if history:
                return _bounded(f"{history}\n{line}", horizon_ms)
            # the first entry (a new user, most of a fan-out's): nothing to drop, unless it
            # is itself past the horizon (_bounded's ~5 k instructions, half a decision's
            # history cost)
            return line if at >= horizon_ms else _bounded(line, horizon_ms)
    return add(history, (entry(at, event_id, kind, subject, INTENT, template_id),), horizon_ms)


def add(history: str, entries: Sequence[str], horizon_ms: int) -> str:
    """``history`` with ``entries`` (:func:`entry`) appended, the oldest dropped past
    :data:`HISTORY_MAX`, and entries decided before ``horizon_ms`` forgotten."""
    if not entries:
        return history
    text = entries[0] if len(entries) == 1 else "\n".join(entries)
    return _bounded(f"{history}\n{text}" if history else text, horizon_ms)


def _bounded(out: str, horizon_ms: int) -> str:
    """``out`` without its oldest entries past :data:`HISTORY_MAX` and before ``horizon_ms``."""
    if len(out) > _LONG:  # (else it cannot hold too many entries, below)
        n = out.count("\n") + 1
        if n > HISTORY_MAX:
            out = out.split("\n", n - HISTORY_MAX)[-1]
    # the oldest entry's ``at``: 13 digits and a tab for every time of 2001-2286 (int() of them,
    # without _at's tests and search: ~1.5 k instructions less per decision)
    head = out[:13]
    if (int(head) if out[13:14] == "\t" and head.isdecimal() else _at(out)) < horizon_ms:
        out = "\n".join([line for line in out.split("\n") if _at(line) >= horizon_ms])
    return out


def expire(history: str, horizon_ms: int) -> str:
    """``history`` without the entries decided before ``horizon_ms`` (oldest first, so only the
    first entry needs a look when nothing is due)."""
    if not history or _at(history) >= horizon_ms:
        return history
    return "\n".join([line for line in history.split("\n") if _at(line) >= horizon_ms])


# the shortest entry of a wall-clock time (13 digits since 2001) and its newline: no count of a
# shorter history (a history of times before 2001 may go past HISTORY_MAX until that length)
_MIN_ENTRY = len("1000000000000\toi\t\t\t") + 1
_LONG = HISTORY_MAX * _MIN_ENTRY


def _at(line: str) -> int:
    """The ``at`` of the (first) entry of ``line``: its first field."""
    if line[0] == "[":
        return int(line[1 : line.index(",")])
    return int(line[: line.index("\t")])


def decisions(history: str, appid: str = "", openid: str = "") -> list[Decided]:
    """The entries of the history of user ``appid:openid`` as :class:`Decided` tuples, oldest
    first, whatever their stored form (entries of another length or with codes unknown here,
    a newer writer's, are skipped)."""
    out = []
    for line in history.split("\n") if history else ():
        e: list[Any] = orjson.loads(line) if line[0] == "[" else line.split("\t")
        if len(e) == 5 and line[0] != "[":
            at, coded, subject, template_id, detail = e
            kind, reason = _KINDS.get(coded[:1]), _REASONS.get(coded[1:2])
            if kind is None or reason is None:  # a newer writer's code
                continue
            event_id = coded[2:]
        elif len(e) == 7:
            at, event_id, kind, subject, reason, template_id, detail = e
        else:
            continue
        at = int(at)
        nid = ""
        if reason == CORRECTION:
            nid, event_id = event_id, ""
        elif template_id and kind in NOTIFY_KINDS:
            nid = notification_id(appid, openid, template_id, event_id)
        out.append(Decided(at, event_id, kind, subject, reason, template_id, nid, detail))
    return out
