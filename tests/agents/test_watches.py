"""Watches and their conditions."""

from __future__ import annotations

import orjson

from tests.agents.factory import MIN, OPENID, SKU1, STORE, T0, price, promotion, stock, watch
from wxsub.agents.rules.watches import (
    Fanout,
    WatchState,
    apply_watch,
    fanout_candidate,
    matches,
    no_match_outcome,
    promotion_matches,
    watch_key,
    watch_matches,
    watch_outcome,
    watch_prefix,
)
from wxsub.schemas.internal import Candidate, encode_internal
from wxsub.schemas.records import Target


def _w(**kw: object) -> WatchState:
    state = apply_watch(None, watch(**kw))  # type: ignore[arg-type]
    assert state is not None
    return state


def test_watch_unwatch_and_regression() -> None:
    w = _w()
    assert w.key == watch_key("wxapp", "sku", "sku1", OPENID, "price_drop")
    assert w.key.startswith(watch_prefix("wxapp", "sku", "sku1"))
    assert apply_watch(w, watch(op="unwatch", t=T0 + 1)) is None
    assert apply_watch(w, watch(op="unwatch", t=T0 - 1)) == w  # older: ignored
    assert watch_outcome(w, watch(op="unwatch", t=T0 - 1), T0).reason == "regression"
    assert watch_outcome(None, watch(), T0).reason == "applied"
    assert WatchState.from_dict(orjson.loads(orjson.dumps(w))) == w


def test_any_drop() -> None:
    w = _w()
    assert watch_matches(w, price(2000, 1999))
    assert not watch_matches(w, price(2000, 2000))
    assert not watch_matches(w, price(2000, 2500))
    assert not watch_matches(w, price(2000, 1000, sku="other"))


def test_target_price_is_reached_once() -> None:
    w = _w(target_price=1500)
    assert not watch_matches(w, price(2000, 1600))
    assert watch_matches(w, price(1600, 1500))
    assert watch_matches(w, price(2000, 1000))
    assert not watch_matches(w, price(1400, 1300))  # already below: told when it crossed


def test_restock_from_zero_only() -> None:
    w = _w(kind="restock")
    assert watch_matches(w, stock(0, 5))
    assert not watch_matches(w, stock(2, 5))
    assert not watch_matches(w, stock(5, 0))
    assert not watch_matches(_w(), stock(0, 5))  # a price watch ignores stock


def test_promotion_on_watched_target() -> None:
    w = _w(kind="promotion", target=STORE)
    assert promotion_matches(w, promotion())
    assert matches(w, promotion())
    assert not promotion_matches(w, promotion(target=Target("store", "st2")))
    assert not matches(_w(), promotion())


def test_fanout_candidate_values() -> None:
    w = _w(target_price=1500)
    c = fanout_candidate(w, price(2000, 1500, t=T0 - MIN), T0)
    assert (c.kind, c.openid, c.subject, c.occurred_at, c.received_at) == (
        "price_drop", OPENID, "sku1", T0 - MIN, T0,
    )  # fmt: skip
    assert c.values["drop"] == 500 and c.values["target_price"] == 1500
    p = fanout_candidate(_w(kind="promotion", target=STORE), promotion(), T0)
    assert p.subject == "promo1" and p.values["starts_at"] == T0
    assert no_match_outcome(stock(3, 4), T0).reason == "no_match"


# --- the fan-out's per-watcher path: same answers and bytes as the rules above ----------------

_EVENTS = [
    price(2000, 1500),
    price(2000, 2000),
    price(1500, 2000),
    price(2000, 1000, sku="other"),
    stock(0, 5),
    stock(2, 5),
    promotion(),
    promotion(target=Target("category", "c1")),
]
_WATCHES = [
    _w(),
    _w(target_price=1500),
    _w(target_price=1499),
    _w(target_price=2000),
    _w(target_price=1000),
    _w(kind="restock"),
    _w(kind="promotion", target=STORE),
    _w(kind="promotion", target=SKU1),
    _w(openid='o-"quoted"\\ \x01 用户 \U0001f600'),
    _w(target=Target("sku", "other")),
]


def _doc(w: WatchState) -> dict[str, object]:
    return dict(orjson.loads(orjson.dumps(w)))


def test_fanout_matches_and_encodes_like_the_rules() -> None:
    for ev in _EVENTS:
        fan = Fanout(ev, T0)
        told = [w for w in _WATCHES if matches(w, ev)]
        assert [w for w in _WATCHES if fan.matches(_doc(w))] == told
        if fan.kind is None:
            assert not told  # a rise, or stock that was there: nobody is told, no scan
        for w in told:
            assert fan.encode(_doc(w)) == encode_internal(fanout_candidate(w, ev, T0))
    assert Fanout(price(2000, 1500), T0)._pieces is not None  # the template path ran


def test_fanout_falls_back_to_full_encoding_when_the_cut_does_not_fit() -> None:
    ev, w = price(2000, 1500), _w(target_price=1500)

    def reversed_bytes(c: Candidate) -> bytes:  # not JSON: the stand-ins are not found
        return orjson.dumps(c)[::-1]

    def marks_users(c: Candidate) -> bytes:  # differs from the cut for real users only
        return orjson.dumps(c) + (b"!" if c.openid.startswith("o-") else b"")

    for encode in (reversed_bytes, marks_users):
        fan = Fanout(ev, T0, encode)
        for _ in range(2):
            assert fan.encode(_doc(w)) == encode(fanout_candidate(w, ev, T0))
        assert fan._pieces is None
