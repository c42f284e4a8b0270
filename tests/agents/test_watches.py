"""Watches and their conditions."""

from __future__ import annotations

import orjson

from tests.agents.factory import MIN, OPENID, STORE, T0, price, promotion, stock, watch
from wxsub.agents.rules.watches import (
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
