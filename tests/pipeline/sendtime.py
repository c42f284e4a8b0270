"""The oracle after decide: what the deliver stage's send-time guards do with the intents, what
the stats stage makes of the sends and of the shop's ``opened`` events. Pure, like oracle.py.

Send time is the one input the pipeline does not take from the log: the wall clock of each send.
The model takes bounds instead (:class:`SendTimes`) and asks the guards (``rules/guards.py``, the
same functions the deliver stage calls) at both ends of each bound; an intent whose verdict
differs between the ends is **ambiguous** (:class:`Ambiguous`): the test's construction, not the
pipeline, is at fault, and the oracle refuses it rather than guess. A test makes the bounds hold
by construction:

- ``first_from``: no send is attempted before it (the deliver workers start after it);
- ``first_by``: every backlog intent's first attempt is made by then (the deliver stage reads
  its whole backlog well before; the quiet window ends after it, so every marketing send in it
  is deferred); intents decided ``later``, while the deliver stage runs, by ``release_by``;
- a deferred send is re-attempted at its release (the end of the quiet window, ``due`` in the
  ledger) at the earliest and by ``release_by`` at the latest.

Paths (``Sent.reasons`` of a notification): ``sent``; ``stale`` (at the first attempt);
``quiet_hours_deferred, sent`` (released after the window); ``quiet_hours_deferred, stale``
(past ``stale_after_s`` when released). Pauses end intents at decide in the tests here, so the
send-time ``paused`` guard is not modelled (tests/deliver/test_deliver_pauses.py checks it).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wxsub.agents.rules import attribution, guards
from wxsub.agents.rules import delivery as dl
from wxsub.agents.rules import stats as st
from wxsub.merchants import MerchantConfig, Merchants
from wxsub.schemas.internal import Intent, Outcome, OutcomeReason
from wxsub.wechat.client import SendResult

__all__ = [
    "Ambiguous",
    "Delivered",
    "Open",
    "SendTimes",
    "deliveries",
    "judge_opens",
    "quiet_window",
    "stale_split",
    "stats_rows",
]

_POLICY = dl.DeliveryPolicy()
_DEFERRED = OutcomeReason.QUIET_HOURS_DEFERRED
RowTotals = dict[tuple[str, str], st.Row]  # (appid, template) -> counters summed over days


class Ambiguous(ValueError):
    """The bounds do not decide a send's fate: a verdict differs between their two ends."""


@dataclass(frozen=True)
class SendTimes:
    first_from: int
    first_by: int
    release_by: int


@dataclass
class Delivered:
    """The deliver stage's outcomes for a set of intents."""

    outcomes: list[Outcome] = field(default_factory=list)  # in path order
    sent: dict[str, Intent] = field(default_factory=dict)  # notification id -> what went out
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # notification id -> reasons

    def keys(self) -> Counter[tuple[str, str]]:
        """(notification id, reason) of every outcome: what deliver outcomes are compared by."""
        return Counter((o.notification_id, o.reason) for o in self.outcomes)

    def path_counts(self) -> Counter[tuple[str, ...]]:
        return Counter(self.paths.values())


def deliveries(
    backlog: Iterable[Intent],
    merchants: Merchants,
    times: SendTimes,
    later: Iterable[Intent] = (),
) -> Delivered:
    """Every intent through the send-time guards: those of the ``backlog`` first attempted
    within ``first_from`` .. ``first_by``, those decided ``later`` (while the deliver stage
    runs) within ``first_from`` .. ``release_by``; a deferred one again at its release ..
    ``release_by``. Raises :class:`Ambiguous` when the bounds leave a verdict open (see the
    module docstring): a marketing intent decided during the quiet window, say."""
    out = Delivered()
    queued = [(i, times.first_by) for i in backlog] + [(i, times.release_by) for i in later]
    for intent, first_by in sorted(queued, key=lambda q: q[0].notification_id):
        cfg = merchants.app(intent.appid)
        early, due = _path(intent, cfg, times.first_from, None)
        late, late_due = _path(intent, cfg, first_by, None)
        if _reasons(early) != _reasons(late) or due != late_due:
            raise Ambiguous(f"{intent.kind} {intent.notification_id}: first attempt "
                            f"{_reasons(early)} .. {_reasons(late)}")  # fmt: skip
        if due is not None:
            if due > times.release_by:
                raise Ambiguous(f"released at {due}, after release_by {times.release_by}")
            late, _ = _path(intent, cfg, first_by, times.release_by)
            if _reasons(early) != _reasons(late):
                raise Ambiguous(f"{intent.kind} {intent.notification_id}: at release "
                                f"{_reasons(early)} .. {_reasons(late)}")  # fmt: skip
        out.outcomes += early
        out.paths[intent.notification_id] = _reasons(early)
        if early[-1].reason == OutcomeReason.SENT:
            out.sent[intent.notification_id] = intent
    return out


def _path(
    intent: Intent, cfg: MerchantConfig | None, first: int, release: int | None
) -> tuple[list[Outcome], int | None]:
    """The outcomes of one intent attempted at ``first`` and, if deferred, at ``release``
    (None: at its due time, the end of the quiet window); and that due time (None: not
    deferred)."""
    entry = dl.entry_for(intent, first)
    held = guards.at_send(entry, cfg, first)
    if held is None:
        return [_sent(entry, first)], None
    assert held.outcome is not None
    if held.outcome.reason != _DEFERRED or held.entry is None or held.entry.due is None:
        return [held.outcome], None
    due = held.entry.due
    at = due if release is None else max(release, due)
    again = dl.on_due(held.entry, at, None, _POLICY)
    assert again.entry is not None and again.send
    ended = guards.at_send(again.entry, cfg, at)
    if ended is None:
        return [held.outcome, _sent(again.entry, at)], due
    assert ended.outcome is not None and ended.outcome.reason != _DEFERRED, "deferred twice"
    return [held.outcome, ended.outcome], due


def _sent(entry: dl.Entry, at: int) -> Outcome:
    step = dl.on_result(dl.begin_attempt(entry, at), SendResult(msgid=1), at, _POLICY)
    assert step.outcome is not None
    return step.outcome


def _reasons(path: Sequence[Outcome]) -> tuple[str, ...]:
    return tuple(str(o.reason) for o in path)


def stale_split(occurred: Iterable[int], times: SendTimes, release_at: int) -> int:
    """A ``stale_after_s`` for marketing intents of these event times (ms), all deferred at
    ``times`` until ``release_at``: at least one of them turns stale while deferred (fresh at
    its first attempt, stale when released), at least one is still fresh when released, and
    none is ambiguous. ValueError when the times leave no such value."""
    stamps = sorted(set(occurred), reverse=True)
    for p in stamps[1:]:  # newest first; a newer one must remain to be sent
        limit_s = -(-(times.first_by - p) // 1000)  # fresh at first_by: first_by - p <= limit
        limit = limit_s * 1000
        if not release_at - p > limit:
            continue
        if all(_decided(o, limit, times, release_at) for o in stamps) and any(
            times.release_by - o <= limit for o in stamps
        ):
            return limit_s
    raise ValueError("no stale_after_s splits these event times unambiguously")


def _decided(o: int, limit: int, times: SendTimes, release_at: int) -> bool:
    if times.first_from - o > limit:  # stale at the first attempt, whenever it is made
        return True
    if times.first_by - o > limit:  # stale or not, depending on when the first attempt is
        return False
    return release_at - o > limit or times.release_by - o <= limit


def quiet_window(start_ms: int, end_ms: int, tz: dt.tzinfo) -> dict[str, str]:
    """The ``quiet_hours`` table for the local times of two instants (whole seconds)."""
    start = dt.datetime.fromtimestamp(start_ms / 1000, tz)
    end = dt.datetime.fromtimestamp(end_ms / 1000, tz)
    return {"start": f"{start:%H:%M:%S}", "end": f"{end:%H:%M:%S}"}


# --- opens and stats ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Open:
    """An ``opened`` event as the shop publishes it."""

    event_id: str
    appid: str
    openid: str
    ref: str


def judge_opens(sent: Mapping[str, Intent], opens: Sequence[Open]) -> list[Outcome]:
    """The stats stage's outcome for each open, in order: the first open of a sent message's
    ref (that user's) is ``opened``, the next ones ``duplicate``; anything else ``unknown_ref``
    (template ``-``). Every open is within the 7-day window of its send here."""
    by_ref = {(i.appid, i.openid, attribution.ref_of(nid)): i for nid, i in sent.items()}
    seen: set[tuple[str, str, str]] = set()
    out = []
    for o in opens:
        key = (o.appid, o.openid, o.ref)
        intent = by_ref.get(key)
        if intent is None:
            reason, template = OutcomeReason.UNKNOWN_REF, st.NO_TEMPLATE
        else:
            reason = OutcomeReason.DUPLICATE if key in seen else OutcomeReason.OPENED
            template = intent.template_id
            seen.add(key)
        out.append(Outcome(o.event_id, "opened", reason, st.STAGE, o.appid, o.openid, template,
                           detail=f"ref {o.ref}"))  # fmt: skip
    return out


def stats_rows(
    outcomes: Iterable[Outcome], opens: Iterable[Outcome], merchants: Merchants
) -> RowTotals:
    """The stats rows, summed over days, per (appid, template): every outcome through the stats
    rules (``rules/stats.py``) in order, each user's last send remembered as the stage does,
    then the open verdicts (``opened`` and ``open:duplicate`` in the send's template row,
    ``open:unknown_ref`` in the ``-`` row)."""
    rows: RowTotals = defaultdict(dict)
    last: dict[tuple[str, str, str], int] = {}
    for o in outcomes:
        cfg = merchants.app(o.appid)
        key = (o.appid, o.openid, o.template_id)
        upd = st.update(o, cfg, last.get(key), st.FEEDBACK_WINDOW_MS)
        if upd.key is None:
            continue
        if upd.last_send is not None and o.openid:
            last[key] = upd.last_send
        elif upd.forget_send:
            last.pop(key, None)
        _count(rows[(upd.key.appid, upd.key.template)], upd.counters)
    for o in opens:
        name = "opened" if o.reason == OutcomeReason.OPENED else f"open:{o.reason}"
        _count(rows[(o.appid, o.template_id)], (name,))
    return {k: row for k, row in rows.items() if row}  # (readers skip rows without counters)


def _count(row: st.Row, names: Iterable[str]) -> None:
    for name in names:
        row[name] = row.get(name, 0) + 1
