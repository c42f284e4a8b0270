"""Watches and the product fan-out: who is told about a price drop, a restock, a promotion.

State: one ``WatchState`` per (target, user, kind), stored under :func:`watch_key`; all the
watches of a target share :func:`watch_prefix`, so the products stage can stream a target's
watchers with a prefix scan (a million watchers never sit in one value). Store with
``orjson.dumps``, rebuild with ``WatchState.from_dict``.

A fan-out reads thousands of stored watches per chunk: :class:`Fanout` prepares one product
event once (its kind, target and condition, and its candidate's encoded bytes with holes for the
per-watcher fields) so that each watcher costs one ``orjson.loads``, a few comparisons and a byte
join, with the same results as :func:`matches` and ``encode_internal(fanout_candidate(...))``.

Conditions: ``price_drop`` with no target price fires on any drop; with a target price it fires
when the price reaches it (old > target >= new). ``restock`` fires when stock goes from 0 to > 0.
``promotion`` fires for every promotion on the watched store or category. Price and stock events
meet ``sku`` watches only (their topic is keyed by sku).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from wxsub.agents.rules.common import outcome, to_ms
from wxsub.schemas.internal import Candidate, Outcome, OutcomeReason, encode_internal
from wxsub.schemas.records import ProductPriceChanged, ProductStockChanged, Promotion, Watch
from wxsub.schemas.struct import from_doc

__all__ = [
    "STAGE",
    "Fanout",
    "ProductEvent",
    "WatchState",
    "WatchStep",
    "apply_watch",
    "event_target",
    "fanout_candidate",
    "matches",
    "no_match_outcome",
    "on_watch",
    "promotion_matches",
    "watch_key",
    "watch_matches",
    "watch_outcome",
    "watch_prefix",
]

STAGE = "products"
ProductEvent = ProductPriceChanged | ProductStockChanged | Promotion


@dataclass(frozen=True, slots=True)
class WatchState:
    """One user's watch of one target for one kind."""

    appid: str
    openid: str
    target_type: str
    target_id: str
    kind: str
    target_price: int | None
    occurred_at: int
    event_id: str

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> WatchState:
        return from_doc(cls, doc)

    @property
    def key(self) -> str:
        return watch_key(self.appid, self.target_type, self.target_id, self.openid, self.kind)


def watch_prefix(appid: str, target_type: str, target_id: str) -> str:
    """The store-key prefix shared by every watch of one target."""
    return f"{appid}\x1f{target_type}\x1f{target_id}\x1f"


def watch_key(appid: str, target_type: str, target_id: str, openid: str, kind: str) -> str:
    return f"{watch_prefix(appid, target_type, target_id)}{openid}\x1f{kind}"


def event_target(ev: ProductEvent) -> tuple[str, str]:
    """The (target_type, target_id) whose watchers an event concerns."""
    if isinstance(ev, Promotion):
        return ev.target.type, ev.target.id
    return "sku", ev.sku_id


def apply_watch(existing: WatchState | None, ev: Watch) -> WatchState | None:
    """The new value for the watch's key: a WatchState, or None to delete it.

    An event older (event time) than the stored watch changes nothing.
    """
    at = to_ms(ev.occurred_at)
    if existing is not None and at < existing.occurred_at:
        return existing
    if ev.op == "unwatch":
        return None
    return WatchState(
        appid=ev.appid,
        openid=ev.openid,
        target_type=ev.target.type,
        target_id=ev.target.id,
        kind=ev.kind,
        target_price=ev.target_price,
        occurred_at=at,
        event_id=ev.event_id,
    )


@dataclass(frozen=True, slots=True)
class WatchStep:
    """A watch event's result: the key's new watch (None: none) and unwatch time (None: no
    marker), and the event's outcome."""

    watch: WatchState | None
    unwatched_at: int | None
    outcome: Outcome


def on_watch(
    existing: WatchState | None,
    unwatched_at: int | None,
    ev: Watch,
    now_ms: int,
    too_late: bool = False,
) -> WatchStep:
    """A watch event against the key's watch and its remembered unwatch (event time of the
    last applied unwatch, kept ``retention.unwatch_s``). An event older than either changes
    nothing (``regression``); an unwatch deletes the watch and is remembered, so a late older
    watch cannot bring it back; ``too_late`` (older than ``unwatch_s``,
    ``rules.retention.watch_too_late``) refuses the event as ``stale``."""
    at = to_ms(ev.occurred_at)
    if too_late:
        out = outcome(
            ev.event_id, "watch", OutcomeReason.STALE, STAGE, now_ms,
            appid=ev.appid, openid=ev.openid, detail=f"{ev.op} {ev.kind}: older than unwatch_s",
        )  # fmt: skip
        return WatchStep(existing, unwatched_at, out)
    if unwatched_at is not None and at < unwatched_at:
        out = outcome(
            ev.event_id, "watch", OutcomeReason.REGRESSION, STAGE, now_ms,
            appid=ev.appid, openid=ev.openid, detail=f"{ev.op} {ev.kind}: older than an unwatch",
        )  # fmt: skip
        return WatchStep(existing, unwatched_at, out)
    out = watch_outcome(existing, ev, now_ms)
    if out.reason == OutcomeReason.REGRESSION:
        return WatchStep(existing, unwatched_at, out)
    new = apply_watch(existing, ev)
    return WatchStep(new, at if ev.op == "unwatch" else None, out)


def watch_outcome(existing: WatchState | None, ev: Watch, now_ms: int) -> Outcome:
    """The outcome of a watch event: ``applied``, or ``regression`` when it was older."""
    older = existing is not None and to_ms(ev.occurred_at) < existing.occurred_at
    reason = OutcomeReason.REGRESSION if older else OutcomeReason.APPLIED
    return outcome(
        ev.event_id, "watch", reason, STAGE, now_ms,
        appid=ev.appid, openid=ev.openid, detail=f"{ev.op} {ev.kind}",
    )  # fmt: skip


def watch_matches(watch: WatchState, ev: ProductPriceChanged | ProductStockChanged) -> bool:
    """Whether a price or stock change meets this watch's condition."""
    if watch.target_type != "sku" or watch.target_id != ev.sku_id or watch.appid != ev.appid:
        return False
    if isinstance(ev, ProductPriceChanged):
        if watch.kind != "price_drop" or ev.new_price >= ev.old_price:
            return False
        target = watch.target_price
        return target is None or ev.new_price <= target < ev.old_price
    return watch.kind == "restock" and ev.old_stock <= 0 < ev.new_stock


def promotion_matches(watch: WatchState, ev: Promotion) -> bool:
    return (
        watch.kind == "promotion"
        and watch.appid == ev.appid
        and (watch.target_type, watch.target_id) == (ev.target.type, ev.target.id)
    )


def matches(watch: WatchState, ev: ProductEvent) -> bool:
    """:func:`watch_matches` or :func:`promotion_matches`, by event type."""
    if isinstance(ev, Promotion):
        return promotion_matches(watch, ev)
    return watch_matches(watch, ev)


def fanout_candidate(watch: WatchState, ev: ProductEvent, now_ms: int) -> Candidate:
    """The candidate for one matching watcher."""
    return Candidate(
        kind=watch.kind,
        appid=ev.appid,
        openid=watch.openid,
        event_id=ev.event_id,
        occurred_at=to_ms(ev.occurred_at),
        received_at=now_ms,
        subject=ev.promotion_id if isinstance(ev, Promotion) else ev.sku_id,
        values=_values(watch, ev),
    )


def _values(watch: WatchState, ev: ProductEvent) -> dict[str, object]:
    if isinstance(ev, Promotion):
        return {
            "promotion_id": ev.promotion_id,
            "title": ev.title,
            "starts_at": to_ms(ev.starts_at),
            "ends_at": to_ms(ev.ends_at),
            "discount": ev.discount,
            "description": ev.description,
            "target_type": ev.target.type,
            "target_id": ev.target.id,
        }
    common = {
        "sku_id": ev.sku_id,
        "title": ev.title,
        "store_id": ev.store_id,
        "category_id": ev.category_id,
    }
    if isinstance(ev, ProductPriceChanged):
        return common | {
            "old_price": ev.old_price,
            "new_price": ev.new_price,
            "drop": ev.old_price - ev.new_price,
            "target_price": watch.target_price,
            "currency": ev.currency,
        }
    return common | {"old_stock": ev.old_stock, "new_stock": ev.new_stock}


def no_match_outcome(ev: ProductEvent, now_ms: int) -> Outcome:
    """The outcome of a product event that met no watcher's condition."""
    kind = {ProductPriceChanged: "price_drop", ProductStockChanged: "restock"}.get(
        type(ev), "promotion"
    )
    return outcome(ev.event_id, kind, OutcomeReason.NO_MATCH, STAGE, now_ms, appid=ev.appid)


# stand-ins for the per-watcher fields while a candidate's bytes are cut into a template
_HOLES: dict[str, Any] = {
    "openid": "\ue000wxsub:openid\ue000",
    "target_price": "\ue000wxsub:tp\ue000",
}


class Fanout:
    """One product event's fan-out over stored watch documents (``orjson.loads`` of a stored
    :class:`WatchState`), without a WatchState or a Candidate per watcher.

    ``kind`` is the only watch kind the event can notify (None: it notifies nobody, e.g. a price
    that went up). :meth:`matches` is :func:`matches` on the document; :meth:`encode` returns
    ``encode(fanout_candidate(watch, ev, now_ms))``: the event's candidate is encoded once with
    stand-ins for the fields that vary per watcher (``openid``, ``values.target_price``) and cut
    there; each watcher's bytes are the pieces joined with its own fields' JSON. The first
    :meth:`encode` is checked against the full encoding; a codec the cut does not fit (not JSON,
    or a mismatch) falls back to the full encoding for every watcher.
    """

    def __init__(
        self,
        ev: ProductEvent,
        now_ms: int,
        encode: Callable[[Any], bytes] = encode_internal,
        watched_after: int | None = None,
    ) -> None:
        self.ev = ev
        self.now_ms = now_ms
        # a watch set at or before this (event time) is past its time-to-live: told nothing,
        # even before the sweep deletes it
        self._after = watched_after
        self._encode = encode
        self._appid = ev.appid
        self._target_type, self._target_id = event_target(ev)
        self._price: tuple[int, int] | None = None  # (new, old) of a price drop
        if isinstance(ev, Promotion):
            self.kind: str | None = "promotion"
        elif isinstance(ev, ProductPriceChanged):
            self.kind = "price_drop" if ev.new_price < ev.old_price else None
            self._price = (ev.new_price, ev.old_price)
        else:
            self.kind = "restock" if ev.old_stock <= 0 < ev.new_stock else None
        #: how the store key of a watch of ``kind`` ends (:func:`watch_key`)
        self.key_end = f"\x1f{self.kind}".encode()
        self._pieces: list[bytes] | None = None
        self._slots: list[str] = []
        self._checked = False
        if self.kind is not None:
            self._cut()

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """Whether the stored watch ``doc`` is told about this event."""
        return bool(self.select((doc,)))

    def select(self, docs: Iterable[Mapping[str, Any]]) -> list[Any]:
        """The stored watches among ``docs`` told about this event, in order (a chunk's, in
        one call: a method call per watcher cost about as much as its checks)."""
        kind, target_id, target_type, appid = (
            self.kind, self._target_id, self._target_type, self._appid,
        )  # fmt: skip
        after, price = self._after, self._price
        out = []
        for doc in docs:
            if (
                doc["kind"] != kind
                or doc["target_id"] != target_id
                or doc["target_type"] != target_type
                or doc["appid"] != appid
            ):
                continue
            if after is not None and doc["occurred_at"] <= after:
                continue
            if price is not None:
                target = doc["target_price"]
                if target is not None and not price[0] <= target < price[1]:
                    continue
            out.append(doc)
        return out

    def candidate(self, doc: Mapping[str, Any]) -> Candidate:
        return fanout_candidate(WatchState.from_dict(doc), self.ev, self.now_ms)

    def encode(self, doc: Mapping[str, Any]) -> bytes:
        """The encoded candidate for the matching watch ``doc``."""
        pieces = self._pieces
        if pieces is None:
            return self._encode(self.candidate(doc))
        dumps, slots = orjson.dumps, self._slots
        if len(slots) == 2:  # price drops: the common case, unrolled
            raw = b"".join(
                (pieces[0], dumps(doc[slots[0]]), pieces[1], dumps(doc[slots[1]]), pieces[2])
            )
        else:
            out = [pieces[0]]
            for slot, piece in zip(slots, pieces[1:], strict=True):
                out += (dumps(doc[slot]), piece)
            raw = b"".join(out)
        if not self._checked:
            self._checked = True
            full = self._encode(self.candidate(doc))
            if raw != full:
                self._pieces = None
                return full
        return raw

    def encode_many(self, docs: list[Any]) -> list[bytes]:
        """:meth:`encode` of each of ``docs`` (a chunk's matching watches), in order: the first
        through :meth:`encode` (its check), the rest joined here without a call per watcher."""
        if not docs:
            return []
        first = self.encode(docs[0])
        pieces, slots = self._pieces, self._slots
        if pieces is None or len(slots) != 2:
            return [first, *[self.encode(doc) for doc in docs[1:]]]
        dumps, join = orjson.dumps, b"".join
        p0, p1, p2 = pieces
        s0, s1 = slots
        return [first, *[join((p0, dumps(d[s0]), p1, dumps(d[s1]), p2)) for d in docs[1:]]]

    def _cut(self) -> None:
        """Encode a stand-in candidate and cut it at the stand-ins (see the class doc)."""
        probe = WatchState(
            self._appid, _HOLES["openid"], self._target_type, self._target_id, str(self.kind),
            _HOLES["target_price"], 0, "",
        )  # fmt: skip
        raw = self._encode(fanout_candidate(probe, self.ev, self.now_ms))
        marks = []
        for slot, hole in _HOLES.items():
            encoded = orjson.dumps(hole)
            found = raw.count(encoded)
            if found > 1 or (found == 0 and slot == "openid"):
                return
            if found:  # no target_price in the values of a restock or promotion
                marks.append((raw.index(encoded), len(encoded), slot))
        marks.sort()
        pieces, at = [], 0
        for start, size, _ in marks:
            pieces.append(raw[at:start])
            at = start + size
        pieces.append(raw[at:])
        self._pieces, self._slots = pieces, [slot for _, _, slot in marks]
