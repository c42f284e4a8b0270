"""The demo's accounting: what went in, how each event ended, and whether it all adds up.

Every record that went in (published by the shop, or produced by the gateway from WeChat's
pushes) must end as exactly one of: an event that led to a send (``sent``; a fan-out event
counts once however many messages it made), one whose notifications were all ``suppressed``
(by the most frequent reason), a ``card`` event (a WeChat Pay order's event a service card took
instead of a classic message: ``card_update`` ... in docs/service-cards.md), a ``state`` event
applied (accepts, rejects, receipts, watches,
preferences), an ``open`` (an ``opened`` event: joined to its send, a duplicate open, or an
unknown ref), a ``duplicate`` copy of an event already counted, or a ``dlq`` record. What
is left is ``pending`` (decided, not yet answered) or ``unaccounted`` (a bug). Messages are
checked on their own: every intent ends ``sent``, ``failed`` or ``in_doubt``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wxsub.schemas.internal import Intent, Outcome, OutcomeReason, decode_internal
from wxsub.settings import KafkaSettings
from wxsub.streams.connection import security_kwargs
from wxsub.streams.reading import read_topic

__all__ = ["Accounting", "account", "read_intents", "read_outcomes", "read_values"]

_STATE_KINDS = frozenset({"subscription", "preference", "watch"})
_SENT = frozenset({OutcomeReason.SENT, OutcomeReason.RECONCILED_SENT})
_FAILED = frozenset({OutcomeReason.FAILED, OutcomeReason.RECONCILED_FAILED})
_NOT_FINAL = frozenset({OutcomeReason.DUPLICATE, OutcomeReason.QUIET_HOURS_DEFERRED})
_CARD = frozenset({OutcomeReason.CARD_UPDATE, OutcomeReason.CARD_REPLACED,
                   OutcomeReason.CARD_ILLEGAL, OutcomeReason.CARD_ENDED})  # fmt: skip


@dataclass
class Accounting:
    """The reconciliation of one run (see the module docstring)."""

    records_in: Counter[str] = field(default_factory=Counter)  # by topic (+ "bad")
    ended: Counter[str] = field(default_factory=Counter)  # sent, state, suppressed:<r>, ...
    messages: Counter[str] = field(default_factory=Counter)  # intents, sent, failed, in_doubt

    @property
    def total_in(self) -> int:
        return sum(self.records_in.values())

    @property
    def suppressed(self) -> Counter[str]:
        return Counter(
            {k.split(":", 1)[1]: n for k, n in self.ended.items() if k.startswith("suppressed:")}
        )

    @property
    def open_messages(self) -> int:
        done = self.messages["sent"] + self.messages["failed"] + self.messages["in_doubt"]
        return self.messages["intents"] - done

    @property
    def reconciles(self) -> bool:
        """Every record ended, exactly once, and every message has its answer."""
        settled = not self.ended["pending"] and not self.ended["unaccounted"]
        return settled and sum(self.ended.values()) == self.total_in and not self.open_messages


def account(
    inputs: Iterable[tuple[str, str | None]],
    outcomes: Sequence[Outcome],
    intents: Sequence[Intent],
    dlq: int,
) -> Accounting:
    """``inputs``: (logical topic, event id or None for a bad record) of every record in."""
    acc = Accounting()
    copies: Counter[str] = Counter()
    for topic, event_id in inputs:
        acc.records_in["bad" if event_id is None else topic] += 1
        if event_id is not None:
            copies[event_id] += 1
    by_event: dict[str, list[Outcome]] = {}
    answers: dict[str, str] = {}  # notification id -> sent | failed | in_doubt
    for o in outcomes:
        by_event.setdefault(o.event_id, []).append(o)
        label = _message_label(o.reason) if o.stage == "deliver" else ""
        if label and answers.get(o.notification_id) != "sent":  # a receipt may settle a doubt
            answers[o.notification_id] = label
    # a message answers for every event it covers (collapsed logistics: several)
    messages: dict[str, set[str]] = {}
    for intent in intents:
        label = answers.get(intent.notification_id, "pending")
        for event_id in intent.event_ids:
            messages.setdefault(event_id, set()).add(label)
    for event_id, n in copies.items():
        ends = messages.get(event_id, set())
        acc.ended[_classify(by_event.get(event_id, []), ends)] += 1
        acc.ended["duplicate"] += n - 1
    acc.ended["dlq"] = dlq
    acc.messages["intents"] = len({i.notification_id for i in intents})
    acc.messages.update(Counter(answers.values()))
    return acc


def _message_label(reason: str) -> str:
    if reason in _SENT:
        return "sent"
    if reason in _FAILED:
        return "failed"
    return "in_doubt" if reason == OutcomeReason.IN_DOUBT else ""


def _classify(outs: list[Outcome], messages: set[str]) -> str:
    for label in ("sent", "failed", "in_doubt"):
        if label in messages:
            return label
    if any(o.kind in _STATE_KINDS for o in outs):
        return "state"
    if any(o.kind == "opened" for o in outs):
        return "open"  # opened, duplicate or unknown_ref (docs/publishers.md, Opens)
    if "pending" in messages:
        return "pending"  # a message decided, its answer not in yet
    final = [o.reason for o in outs if o.reason not in _NOT_FINAL]
    if any(r in _CARD for r in final):
        return "card"
    if final:
        return "suppressed:" + Counter(final).most_common(1)[0][0]
    if any(o.reason == OutcomeReason.DUPLICATE for o in outs):
        return "suppressed:duplicate"
    return "pending" if outs else "unaccounted"


# --- reading topics -------------------------------------------------------------------------------


async def read_values(kafka: KafkaSettings, logical: str) -> list[bytes]:
    """Every committed value of topic ``logical`` from the start to its current end (connecting
    as ``kafka`` says: TLS/SASL included, connection.py)."""
    recs = await read_topic(kafka.bootstrap, kafka.topic(logical), security=security_kwargs(kafka))
    return [r.value for r in recs if r.value is not None]


async def read_outcomes(kafka: KafkaSettings) -> list[Outcome]:
    return [decode_internal(Outcome, v) for v in await read_values(kafka, "outcomes")]


async def read_intents(kafka: KafkaSettings) -> list[Intent]:
    return [decode_internal(Intent, v) for v in await read_values(kafka, "intents")]
