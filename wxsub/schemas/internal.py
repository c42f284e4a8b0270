"""Internal message records: what the stages pass to each other over Kafka.

These are not the public contract (that is the JSON Schema of the input events); they may change
with the code. All are immutable records (dataclasses made by ``wxsub.schemas.struct.record``),
encoded with ``encode_internal`` (orjson) and decoded with ``decode_internal``. Times are epoch
milliseconds (ints).

Flow: ingest stage -> ``Candidate`` (keyed by user) -> decide stage -> ``Intent`` (keyed by user)
-> deliver stage -> ``Delivery`` ledger records; every stage -> ``Outcome`` (keyed by user or by
source key) for events that end without a send, and deliver -> ``Outcome`` for send results.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any, TypeVar, cast

import orjson

from wxsub.schemas.records import user_key  # one definition of the per-user partitioning key
from wxsub.schemas.struct import field_names, from_doc, record

__all__ = [
    "MARKETING_KINDS",
    "NOTIFY_KINDS",
    "Candidate",
    "Correction",
    "Delivery",
    "Intent",
    "Outcome",
    "OutcomeReason",
    "decode_internal",
    "encode_internal",
    "notification_id",
    "plain",
    "short_form",
    "user_key",
]

# kinds of notification; marketing messages obey quiet hours and the marketing cap
NOTIFY_KINDS = ("order_status", "logistics", "price_drop", "restock", "promotion")
#: the kinds whose messages are marketing unless the merchant config says otherwise (a kind's
#: ``class``): promotions. Orders, logistics and the price and restock alerts a user asked for by
#: watching an item are service messages (docs/policies.md, Message classes)
MARKETING_KINDS = frozenset({"promotion"})


# a copy of an empty hash is a new one without parsing the constructor's keywords again
_BLAKE2B_16 = hashlib.blake2b(digest_size=16)


def notification_id(appid: str, openid: str, template_id: str, source_event_id: str) -> str:
    """Deterministic id of one notification: a replay can never mint a second one."""
    h = _BLAKE2B_16.copy()
    h.update("\x1f".join((appid, openid, template_id, source_event_id)).encode())
    return h.hexdigest()


@record
class Candidate:
    """A reason to notify one user, before any policy is applied."""

    kind: str  # one of NOTIFY_KINDS
    appid: str
    openid: str
    event_id: str  # the source event's id (for fan-out: the product event's id)
    occurred_at: int  # source event time, epoch ms
    received_at: int  # when the ingest stage read it, epoch ms (end-to-end latency)
    subject: str  # order_id / sku_id / promotion_id: the collapse and dedupe scope
    values: dict[str, Any] = field(default_factory=dict)  # event fields for rendering


@record
class Intent:
    """A complete, validated WeChat send, ready for the deliver stage."""

    notification_id: str
    appid: str
    openid: str
    template_id: str
    kind: str
    event_ids: tuple[str, ...]  # source events this send covers (more than one when collapsed)
    occurred_at: int
    received_at: int
    decided_at: int
    body: dict[str, Any]  # touser, template_id, page, data, miniprogram_state, lang
    config_version: int = 0  # the merchant-config version that decided it (0: the file)


class OutcomeReason(enum.StrEnum):
    """``Outcome.reason``: how an event ended. docs/policies.md explains the rule reasons and
    docs/delivery.md the send results; the values are what the outcomes topic, the metrics and
    the stats rows carry."""

    # decide (rules/decide.py), in the order it checks
    NO_TEMPLATE = "no_template"
    TEMPLATE_UNFIT = "template_unfit"  # the kind's template at WeChat does not fit its mapping
    STALE = "stale"
    DUPLICATE = "duplicate"  # also: an order or state event seen before
    NOT_SUBSCRIBED_KIND = "not_subscribed_kind"
    MUTED = "muted"
    INVALID_DATA = "invalid_data"
    CONTENT_BLOCKED = "content_blocked"
    COLLAPSED = "collapsed"
    CAPPED = "capped"
    NO_CREDIT = "no_credit"
    QUIET_HOURS_DEFERRED = "quiet_hours_deferred"
    # orders, logistics, products
    NO_RULE = "no_rule"
    REGRESSION = "regression"  # also: a preference or watch older than the stored one
    ORPHAN = "orphan"
    NO_MATCH = "no_match"
    # state events (subscription, preference, watch)
    APPLIED = "applied"
    # sends (rules/delivery.py)
    SENT = "sent"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"
    RECONCILED_SENT = "reconciled_sent"
    RECONCILED_FAILED = "reconciled_failed"
    # service cards (rules/cards.py, docs/service-cards.md)
    CARD_UPDATE = "card_update"  # the event moved the order's card
    CARD_REPLACED = "card_replaced"  # a classic template the live card replaces was not sent
    CARD_ILLEGAL = "card_illegal"  # the card state table forbids the transition it needs
    CARD_ENDED = "card_ended"  # the card is terminal, refused or past its window
    CARD_REFUSED = "card_refused"  # the user refused the order's card (-1004): user feedback
    # send-time guards (rules/guards.py): the deliver stage also ends sends as ``stale`` and
    # defers them as ``quiet_hours_deferred``
    PAUSED = "paused"  # the app's kind is paused (feedback, 43107, 45168): nothing sent
    # opens (stats stage, agents/opens.py): an ``opened`` event joined to its send, or not
    # (``duplicate`` when the send was opened before)
    OPENED = "opened"
    UNKNOWN_REF = "unknown_ref"  # no send kept with that ref for the user (or past 7 days)


@record
class Outcome:
    """How one input event (or one fan-out target of it) ended, when not (only) by an intent."""

    event_id: str
    kind: str
    reason: str  # an OutcomeReason (a plain str once decoded)
    stage: str
    appid: str = ""
    openid: str = ""
    template_id: str = ""
    notification_id: str = ""
    errcode: int | None = None
    detail: str = ""
    at: int = 0
    config_version: int = 0  # the merchant-config version that decided it (0: the file)


@record
class Delivery:
    """The deliveries ledger (compacted, keyed by notification id): attempt -> sent|failed."""

    notification_id: str
    state: str  # a LedgerState of rules/delivery.py: attempt | retry | sent | failed | in_doubt
    appid: str
    openid: str
    template_id: str
    attempt: int = 1
    msgid: str = ""  # WeChat msgid as a decimal string (it exceeds 2^53)
    errcode: int | None = None
    at: int = 0


@record
class Correction:
    """Credit corrections from delivery back to the subscriptions state (keyed by user)."""

    appid: str
    openid: str
    template_id: str
    action: str  # a CreditEffect of the errcode table (wechat/errcodes.py): zero | restore
    notification_id: str
    at: int = 0


T = TypeVar("T")
_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {}  # by record class: a finite set


def _encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    """``lambda o: {"a": o.a, "b": o.b, ...}`` for a dataclass, generated once per class.

    orjson's built-in dataclass path (slots, frozen) costs ~2-3 µs per instance here; a
    generated dict literal is about twice as fast and gives the same bytes (same keys, same
    order). Generated as ``dataclasses`` generates ``__init__``: the names are field names,
    which are identifiers, so the source cannot carry anything else.
    """
    names = field_names(cls)
    source = "lambda o: {" + ", ".join(f"{n!r}: o.{n}" for n in names) + "}"
    return cast(Callable[[Any], dict[str, Any]], eval(source))  # noqa: S307


def short_form(cls: type, required: int) -> None:
    """Encode records of ``cls`` without their fields after the first ``required`` whenever
    all of those hold their defaults (a stored order without a service card: 11 of its 19
    fields). Decoding gives the same record: :func:`~wxsub.schemas.struct.from_doc` builds
    by position from the fields given, in order, and the rest take their defaults (and
    ``cls(**doc)``, what versions before this one do, does the same). Every encoding of
    ``cls`` then takes this form; the full form is still read.

    Leaving 8 default fields out of an order saves ~8 k of the ~30 k instructions that
    writing and reading it back cost (orjson's work per key; bench/RESULTS.md "Session 7:
    CPU per event")."""
    names = field_names(cls)
    conds = []
    for f in fields(cls)[required:]:
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if default is None:
            conds.append(f"o.{f.name} is None")
        elif type(default) in (bool, int, str) or default == ():
            conds.append(f"o.{f.name} == {default!r}")
        else:  # (a generated test must compare to a literal)
            raise TypeError(f"{cls.__name__}.{f.name}: no literal default to leave out")
    head = ", ".join(f"{n!r}: o.{n}" for n in names[:required])
    tail = ", ".join(f"{n!r}: o.{n}" for n in names[required:])
    source = f"lambda o: {{{head}}} if {' and '.join(conds)} else {{{head}, {tail}}}"
    _ENCODERS[cls] = eval(source)  # noqa: S307 (field names and literals only, as _encoder)


def plain(obj: Any) -> dict[str, Any]:
    """orjson ``default=`` for dataclasses (with ``OPT_PASSTHROUGH_DATACLASS``)."""
    cls = type(obj)
    enc = _ENCODERS.get(cls)
    if enc is None:
        if not is_dataclass(obj):
            raise TypeError(f"{cls.__name__} is not JSON serializable")
        enc = _ENCODERS[cls] = _encoder(cls)
    return enc(obj)


def encode_internal(record: Any) -> bytes:
    """orjson bytes of a record (dataclasses nested anywhere), as ``orjson.dumps`` gives."""
    enc = _ENCODERS.get(type(record))
    if enc is not None:  # the record itself as a dict: one call less out of orjson per record
        record = enc(record)
    return orjson.dumps(record, default=plain, option=orjson.OPT_PASSTHROUGH_DATACLASS)


def decode_internal(cls: type[T], raw: bytes | str) -> T:
    """Decode an internal record, ignoring fields a newer writer added."""
    doc = orjson.loads(raw)
    if "event_ids" in doc:
        doc["event_ids"] = tuple(doc["event_ids"])
    try:  # written by this version (by position, struct.py), or with defaults left out
        return from_doc(cls, doc)
    except TypeError:  # fields a newer writer added
        pass
    known = frozenset(field_names(cls))
    return cls(**{k: v for k, v in doc.items() if k in known})
