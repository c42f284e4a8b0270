"""Orders table, logistics join, pending logistics and orphans."""

from __future__ import annotations

import orjson

from tests.agents.factory import BASE, MIN, OPENID, T0, config, logistics, order
from wxsub.agents.rules.orders import (
    OrderState,
    apply_logistics_event,
    apply_order_event,
    expire_pending,
    on_logistics_event,
    on_order_event,
    pending_from_list,
    replaces,
)
from wxsub.schemas.internal import encode_internal

CFG = config()


def test_notifying_status_makes_a_candidate() -> None:
    state, cands, outs = apply_order_event(None, order("paid"), CFG, T0 + 5)
    assert state is not None and state.status == "paid" and state.openid == OPENID
    assert outs == ()
    (c,) = cands
    assert (c.kind, c.subject, c.event_id, c.occurred_at, c.received_at) == (
        "order_status", "o1", "o1-paid", T0, T0 + 5,
    )  # fmt: skip
    assert c.values["status"] == "paid" and c.values["amount"] == 1250
    assert c.values["items_summary"] == "蓝色T恤等2件"


def test_non_notifying_status_is_no_rule() -> None:
    state, cands, outs = apply_order_event(None, order("created", event_id="c"), CFG, T0)
    assert state is not None and state.status == "created" and cands == ()
    assert [(o.reason, o.openid, o.stage) for o in outs] == [("no_rule", OPENID, "orders")]


def test_regression_by_event_time_is_ignored() -> None:
    state, _, _ = apply_order_event(None, order("shipped", event_id="s", t=T0 + MIN), CFG, T0)
    again, cands, outs = apply_order_event(state, order("paid", event_id="p"), CFG, T0)
    assert again == state and cands == ()
    assert [o.reason for o in outs] == ["regression"]


def test_same_event_again_is_duplicate() -> None:
    state, _, _ = apply_order_event(None, order("paid"), CFG, T0)
    again, cands, outs = apply_order_event(state, order("paid"), CFG, T0)
    assert again == state and cands == () and [o.reason for o in outs] == ["duplicate"]


def test_replaces_tells_from_the_stored_dict_when_the_stored_order_is_not_read() -> None:
    """The orders stage passes no order when ``replaces`` says so: the step must be the same."""
    stored, _, _ = apply_order_event(None, order("shipped", event_id="s", t=T0 + MIN), CFG, T0)
    assert stored is not None
    doc = orjson.loads(encode_internal(stored))
    cases = {
        "s": ("shipped", T0 + 2 * MIN, False),  # the stored event again: duplicate
        "p": ("paid", T0, False),  # older: regression
        "d": ("delivered", T0 + 2 * MIN, True),
        "e": ("delivered", T0 + MIN, True),  # the same time is not older
    }
    for event_id, (status, t, want) in cases.items():
        ev = order(status, event_id=event_id, t=t)
        assert replaces(doc, ev) is want, event_id
        with_order = apply_order_event(stored, ev, CFG, T0)
        if want:
            assert apply_order_event(None, ev, CFG, T0) == with_order
        else:
            assert with_order[0] == stored and with_order[2]


def test_unconfigured_app_or_kind() -> None:
    _, cands, outs = apply_order_event(None, order(), None, T0)
    assert cands == () and [o.reason for o in outs] == ["no_template"]
    no_orders = config(kinds={k: v for k, v in BASE["kinds"].items() if k != "order_status"})
    _, cands, outs = apply_order_event(None, order(), no_orders, T0)
    assert cands == () and [o.reason for o in outs] == ["no_template"]


def test_logistics_joins_the_order_owner() -> None:
    state, _, _ = apply_order_event(None, order("paid"), CFG, T0)
    decision = apply_logistics_event(state, logistics("out_for_delivery"), CFG, T0 + 1)
    assert decision.outcome is None and decision.pending is None
    c = decision.candidate
    assert c is not None
    assert (c.kind, c.openid, c.subject, c.values["waybill"]) == (
        "logistics", OPENID, "o1", "SF123456",
    )  # fmt: skip
    quiet = apply_logistics_event(state, logistics("in_transit", event_id="l2"), CFG, T0)
    assert quiet.outcome is not None and quiet.outcome.reason == "no_rule"
    assert quiet.outcome.openid == OPENID


def test_logistics_before_order_waits_then_joins_in_order() -> None:
    step = on_logistics_event(None, (), logistics("in_transit", event_id="l1"), CFG, T0)
    step = on_logistics_event(step.order, step.pending, logistics(event_id="l2"), CFG, T0 + 1)
    assert step.order is None and [p.event_id for p in step.pending] == ["l1", "l2"]
    assert step.candidates == () and step.outcomes == ()
    # the pending list survives a store round trip
    pending = pending_from_list(orjson.loads(orjson.dumps(step.pending)))
    assert pending == step.pending
    joined = on_order_event(None, pending, order("created", event_id="c"), CFG, T0 + 2)
    assert joined.pending == ()
    assert [o.reason for o in joined.outcomes] == ["no_rule", "no_rule"]  # created, in_transit
    assert [c.event_id for c in joined.candidates] == ["l2"]
    assert joined.candidates[0].openid == OPENID


def test_orphans_expire_on_wall_clock() -> None:
    step = on_logistics_event(None, (), logistics(event_id="l1"), CFG, T0)
    keep, gone = expire_pending(step.pending, T0 + 599_999, CFG)
    assert keep == step.pending and gone == ()
    keep, gone = expire_pending(step.pending, T0 + 600_000, CFG)
    assert keep == ()
    assert [(o.event_id, o.reason, o.openid) for o in gone] == [("l1", "orphan", "")]


def test_order_state_round_trip() -> None:
    state, _, _ = apply_order_event(None, order("paid"), CFG, T0)
    assert state is not None
    assert OrderState.from_dict(orjson.loads(orjson.dumps(state))) == state
