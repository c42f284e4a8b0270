"""A user's recent decisions, kept in their state: what support reads to answer "why not?".

Each ``UserState`` keeps its last :data:`HISTORY_MAX` decisions, oldest first, in
``UserState.history``: every candidate decided (an intent, a hold, or a suppression with its
reason and detail), every held or deferred intent released by the timer, every state event
(subscription, preference) and every credit correction from delivery. An entry is stored as a
short list (a record per entry would cost more to decode for every user read than the whole
history costs to keep, bench/RESULTS.md):

    [at, event_id, kind, subject, reason, template_id, notification_id, detail]

``at`` is the wall-clock time of the decision (epoch ms); ``reason`` is an ``OutcomeReason``
or one of :data:`INTENT`, :data:`HELD`, :data:`RELEASED`, :data:`CORRECTION`.
:func:`decisions` gives them as :class:`Decided` tuples.

Bounded: at most :data:`HISTORY_MAX` entries, and an entry older than the app's dedupe
retention (the state's own memory of what it decided) is dropped when the next one is added.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

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

History = tuple[Sequence[Any], ...]


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
    notification_id: str = "",
    detail: str = "",
) -> list[Any]:
    """An entry in its stored form."""
    return [at, event_id, kind, subject, reason, template_id, notification_id, detail]


def add(history: History, entries: Sequence[Sequence[Any]], horizon_ms: int) -> History:
    """``history`` with ``entries`` appended, the oldest dropped past :data:`HISTORY_MAX`, and
    entries decided before ``horizon_ms`` forgotten."""
    out = (*history, *entries)
    if len(out) > HISTORY_MAX:
        out = out[-HISTORY_MAX:]
    if out and out[0][0] < horizon_ms:
        out = tuple(e for e in out if e[0] >= horizon_ms)
    return out


def decisions(history: Iterable[Sequence[Any]]) -> list[Decided]:
    """The entries as :class:`Decided` tuples, oldest first (entries of another length are
    skipped: a newer writer's)."""
    return [Decided(*e) for e in history if len(e) == len(Decided._fields)]
