"""The orders side of service cards (wxsub/agents/rules/cards.py), pure: which card operations an
order's events produce, the reasons they end with, and which classic candidates go ahead."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from wxsub.agents.rules import orders
from wxsub.agents.rules.cards import (
    ACTIVATE_WINDOW_MS,
    UPDATE_WINDOW_MS,
    CardResult,
    CardStep,
    apply_card_result,
    card_logistics_step,
    card_order_step,
    on_card_result,
)
from wxsub.agents.rules.orders import OrderState
from wxsub.merchants import MerchantConfig, parse_merchants
from wxsub.schemas.records import LogisticsUpdated, OrderItem, OrderStatusChanged

APP, USER, TX = "wxcardrules00001", "oCardUser", "4200000000000000000042"
NOW = 1_717_245_296_000
TPL = "TPL_ORDER"


def merchant(notify_type: int = 2001, **cards: Any) -> MerchantConfig:
    doc: dict[str, Any] = {"apps": {APP: {
        "kinds": {
            "order_status": {
                "template_id": TPL, "notify_on": ["paid", "shipped", "delivered", "cancelled"],
                "data": {"character_string1": "{order_id}", "phrase2": "{status_text}"},
            },
            "logistics": {
                "template_id": "TPL_LOGI", "notify_on": ["out_for_delivery", "delivered"],
                "data": {"character_string1": "{waybill}", "phrase2": "{status_text}"},
            },
        },
        "cards": {"type": notify_type, "wxa_path_query": "pages/o?id={order_id}",
                  "product_img": "https://shop/i.png", **cards},
    }}}  # fmt: skip
    cfg = parse_merchants(doc).app(APP)
    assert cfg is not None
    return cfg


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def ev(
    n: int, status: str, *, tx: str | None = TX, paid: int = NOW - 600_000
) -> OrderStatusChanged:
    return OrderStatusChanged(
        f"e{n}", _at(NOW - 500_000 + n * 1000), APP, USER, "o1", status, 1005,  # type: ignore[arg-type]
        items=(OrderItem("s", "阿白", 2, 1005),), transaction_id=tx,
        pay_amount=1005 if tx else None, paid_at=_at(paid) if tx else None,
    )  # fmt: skip


def run(
    statuses: Sequence[str], cfg: MerchantConfig | None = None, activate: bool = True, **kw: Any
) -> tuple[OrderState | None, list[CardStep]]:
    """The order's events through the card rules; ``activate``: the card stage says
    ``activated`` right after the first operation (merged into that step)."""
    cfg = cfg or merchant()
    order: OrderState | None = None
    steps = []
    for n, status in enumerate(statuses):
        e = ev(n, status, **kw)
        step = orders.on_order_event(order, (), e, cfg, NOW)
        carded = card_order_step(order, (), step, e, cfg, NOW)
        order = carded.step.order
        if activate and order is not None and order.card_seq and not order.card_active:
            res = on_card_result(order, CardResult(APP, "o1", TX, "activated"), NOW)
            order = res.step.order
            outs = carded.step.outcomes + res.step.outcomes
            merged = replace(carded.step, order=order, outcomes=outs)
            carded = CardStep(merged, carded.ops, carded.saved + res.saved)
        steps.append(carded)
    return order, steps


def reasons(steps: Sequence[CardStep]) -> list[list[str]]:
    return [[o.reason for o in s.step.outcomes] for s in steps]


def test_a_paid_order_activates_and_moves_the_card_instead_of_classic() -> None:
    order, steps = run(["paid", "shipped", "delivered", "completed"])
    ops = [op for s in steps for op in s.ops]
    assert [(op.seq, op.status) for op in ops] == [(1, 1), (2, 4), (3, 6), (4, 8)]
    assert all(not s.step.candidates for s in steps)  # never both
    assert reasons(steps) == [["card_update"]] * 4
    assert [s.saved for s in steps] == [("order_status",)] * 3 + [()]  # completed: no notify
    first = ops[0]
    assert (first.code, first.notify_type, first.pay_amount) == (TX, 2001, 1005)
    assert first.pay_time == (NOW - 600_000) // 1000
    assert first.content["product_count"] == 2  # state 1 carries the products
    assert first.content["product_list"]["info_list"][0]["product_name"] == "阿白"
    assert first.content["wxa_path_query"] == "pages/o?id=o1"
    assert set(ops[1].content) == {"cur_status", "wxa_path_query"}  # state 4: the path only
    assert order is not None and order.card_off == "terminal" and order.card_status == 8


def test_first_event_that_cannot_activate_goes_through_state_1() -> None:
    _, steps = run(["shipped"])
    assert [op.status for op in steps[0].ops] == [1, 4]
    assert reasons(steps) == [["card_update"]]


def test_illegal_transition_ends_with_card_illegal_and_no_classic() -> None:
    _, steps = run(["paid", "shipped", "cancelled"])
    assert reasons(steps)[2] == ["card_illegal"]
    assert not steps[2].ops and not steps[2].step.candidates
    assert "4 -> 10 not allowed" in steps[2].step.outcomes[0].detail


def test_after_a_terminal_state_card_ended_and_classic_goes_ahead() -> None:
    _, steps = run(["paid", "completed", "cancelled", "refunding"])
    assert reasons(steps)[2] == []  # the classic candidate is how the event ends
    assert [c.kind for c in steps[2].step.candidates] == ["order_status"]
    assert reasons(steps)[3] == ["card_ended"] and not steps[3].ops  # no classic: card_ended
    assert steps[3].step.outcomes[0].detail == "card terminal"


def test_a_status_mapped_to_nothing_is_replaced() -> None:
    _, steps = run(["paid", "delivered"], merchant(order_status={"delivered": 0}))
    assert reasons(steps)[1] == ["card_replaced"] and not steps[1].ops
    assert steps[1].saved == ("order_status",)


def test_replaces_only_the_configured_kinds() -> None:
    _, steps = run(["paid", "shipped"], merchant(replaces=["logistics"]))
    assert [c.kind for c in steps[1].step.candidates] == ["order_status"]
    assert [op.status for op in steps[1].ops] == [4]


def test_no_transaction_id_or_no_cards_config_keeps_the_classic_path() -> None:
    _, steps = run(["paid", "shipped"], tx=None)
    assert all(not s.ops for s in steps) and all(s.step.candidates for s in steps)
    plain = parse_merchants(
        {
            "apps": {
                APP: {
                    "kinds": {
                        "order_status": {
                            "template_id": TPL,
                            "notify_on": ["paid"],
                            "data": {"thing1": "{order_id}"},
                        }
                    }
                }
            }
        }
    )
    _, steps = run(["paid"], plain.app(APP))  # fmt: skip
    assert not steps[0].ops and steps[0].step.candidates


def test_activation_window_24h() -> None:
    late = NOW - ACTIVATE_WINDOW_MS - 1000
    order, steps = run(["paid", "shipped"], paid=late)
    assert order is not None and order.card_off == "fallback"
    assert all(not s.ops and s.step.candidates for s in steps)
    just = NOW - ACTIVATE_WINDOW_MS + 60_000
    _, steps = run(["paid"], paid=just)
    assert [op.status for op in steps[0].ops] == [1]


def test_update_window_30_days() -> None:
    cfg = merchant()
    order, _ = run(["paid"])
    assert order is not None
    later = NOW + ACTIVATE_WINDOW_MS + UPDATE_WINDOW_MS
    e = ev(5, "shipped")
    step = orders.on_order_event(order, (), e, cfg, later)
    carded = card_order_step(order, (), step, e, cfg, later)
    assert not carded.ops and [c.kind for c in carded.step.candidates] == ["order_status"]
    assert carded.step.order is not None and carded.step.order.card_off == "window"
    e = ev(6, "refunding")  # no classic candidate: the event ends card_ended
    step = orders.on_order_event(carded.step.order, (), e, cfg, later)
    again = card_order_step(carded.step.order, (), step, e, cfg, later)
    assert [(o.reason, o.detail) for o in again.step.outcomes] == [("card_ended", "card window")]


def test_fallback_and_refusal_from_the_card_stage() -> None:
    order, _ = run(["paid"])
    assert order is not None
    other = apply_card_result(order, CardResult(APP, "o1", "other-code", "fallback"))
    assert other is order  # not this card
    fell = apply_card_result(order, CardResult(APP, "o1", TX, "fallback", "85433"))
    assert fell is not None and fell.card_off == "fallback"
    assert apply_card_result(fell, CardResult(APP, "o1", TX, "refused")) is fell  # first wins
    cfg = merchant()
    e = ev(3, "shipped")
    step = card_order_step(fell, (), orders.on_order_event(fell, (), e, cfg, NOW), e, cfg, NOW)
    assert not step.ops and [c.kind for c in step.step.candidates] == ["order_status"]
    refused = apply_card_result(order, CardResult(APP, "o1", TX, "refused"))
    assert refused is not None
    step = card_order_step(
        refused, (), orders.on_order_event(refused, (), e, cfg, NOW), e, cfg, NOW
    )
    assert not step.ops and not step.step.candidates  # the user said no: no classic either
    assert [o.reason for o in step.step.outcomes] == ["card_ended"]


def test_duplicates_make_no_second_operation() -> None:
    cfg = merchant()
    e = ev(0, "paid")
    first = card_order_step(None, (), orders.on_order_event(None, (), e, cfg, NOW), e, cfg, NOW)
    order = first.step.order
    again = card_order_step(order, (), orders.on_order_event(order, (), e, cfg, NOW), e, cfg, NOW)
    assert len(first.ops) == 1 and not again.ops


def test_logistics_move_the_card_and_are_replaced() -> None:
    cfg = merchant()
    order, _ = run(["paid"])
    seen = []
    for n, state in enumerate(["picked_up", "out_for_delivery", "delivered"]):
        lg = LogisticsUpdated(f"l{n}", _at(NOW - 400_000 + n), APP, "o1", "SF1", "顺丰",
                              state)  # type: ignore[arg-type]  # fmt: skip
        step = orders.on_logistics_event(order, (), lg, cfg, NOW)
        carded = card_logistics_step(step, lg, cfg, NOW)
        order = carded.step.order
        seen.append(([op.status for op in carded.ops], [o.reason for o in carded.step.outcomes],
                     [c.kind for c in carded.step.candidates]))  # fmt: skip
    assert seen[1] == ([], ["card_replaced"], [])  # 4 again: the classic one is dropped
    assert seen[2] == ([6], ["card_update"], [])
    assert seen[0][0] == [4]


def test_2006_arrival_time_on_delivery() -> None:
    _, steps = run(["paid", "shipped", "delivered"], merchant(2006, order_status={"shipped": 3}))
    ops = [op for s in steps for op in s.ops]
    assert [op.status for op in ops] == [1, 3, 8]
    assert ops[2].content["arrival_time"] == ops[2].occurred_at // 1000


# --- classic candidates held while the activation is pending (issue 19: "keep the classic path")


def test_while_activation_is_pending_the_latest_classic_candidate_per_kind_is_held() -> None:
    order, steps = run(["paid", "shipped", "delivered"], activate=False)
    assert order is not None and not order.card_active
    assert all(not s.step.candidates for s in steps)  # not sent (yet)
    assert reasons(steps) == [[], ["card_update"], ["card_update"]]  # the superseded ones end
    assert [[o.event_id for o in s.step.outcomes] for s in steps] == [[], ["e0"], ["e1"]]
    assert [s.saved for s in steps] == [(), ("order_status",), ("order_status",)]
    assert [(h.candidate.event_id, h.reason) for h in order.card_held] == [("e2", "card_update")]
    # logistics while pending: held beside it (one per kind)
    cfg = merchant()
    lg = LogisticsUpdated("l0", _at(NOW - 400_000), APP, "o1", "SF1", "顺丰",
                          "out_for_delivery")  # type: ignore[arg-type]  # fmt: skip
    carded = card_logistics_step(orders.on_logistics_event(order, (), lg, cfg, NOW), lg, cfg, NOW)
    order = carded.step.order
    assert order is not None and not carded.step.candidates and not carded.step.outcomes
    assert [h.candidate.kind for h in order.card_held] == ["order_status", "logistics"]
    assert [h.reason for h in order.card_held] == ["card_update", "card_illegal"]  # 6 -> 4


def test_held_candidates_end_when_the_card_is_activated() -> None:
    order, _ = run(["paid", "shipped"], activate=False)
    assert order is not None
    res = on_card_result(order, CardResult(APP, "o1", TX, "activated"), NOW)
    new = res.step.order
    assert new is not None and new.card_active and not new.card_held
    assert [(o.event_id, o.reason) for o in res.step.outcomes] == [("e1", "card_update")]
    assert res.saved == ("order_status",) and not res.step.candidates  # a credit saved
    # active now: the next replaced candidate is dropped at once, not held
    cfg = merchant()
    e = ev(2, "delivered")
    step = card_order_step(new, (), orders.on_order_event(new, (), e, cfg, NOW), e, cfg, NOW)
    assert step.saved == ("order_status",) and [o.reason for o in step.step.outcomes] == [
        "card_update"
    ]
    assert step.step.order is not None and not step.step.order.card_held
    other = on_card_result(order, CardResult(APP, "o1", "another", "activated"), NOW)
    assert other.step.order is order  # not this card: nothing


def test_held_candidates_go_to_decide_when_the_card_falls_back() -> None:
    order, steps = run(["paid", "shipped", "completed"], activate=False)  # terminal, unconfirmed
    assert order is not None and order.card_off == "terminal"
    res = on_card_result(order, CardResult(APP, "o1", TX, "fallback", "85433"), NOW)
    new = res.step.order
    assert new is not None and not new.card_held and not res.saved
    assert [(c.event_id, c.kind) for c in res.step.candidates] == [("e1", "order_status")]
    assert not res.step.outcomes  # e1 ends in decide; e0 ended when e1 superseded it
    assert [o.event_id for s in steps for o in s.step.outcomes] == ["e0", "e2"]
    again = on_card_result(new, CardResult(APP, "o1", TX, "fallback", "85433"), NOW)
    assert again.step.order is new  # once


def test_held_candidates_are_dropped_when_the_user_refuses() -> None:
    order, _ = run(["paid"], activate=False)
    assert order is not None
    res = on_card_result(order, CardResult(APP, "o1", TX, "refused", "user refused"), NOW)
    assert res.step.order is not None and res.step.order.card_off == "refused"
    assert [(o.event_id, o.reason) for o in res.step.outcomes] == [
        ("e0", "card_update"), ("e0", "card_refused"),
    ]  # fmt: skip
    assert not res.step.candidates and res.saved == ("order_status",)


def test_an_order_with_held_candidates_round_trips() -> None:
    import orjson

    from wxsub.schemas.internal import encode_internal

    order, _ = run(["paid", "shipped"], activate=False)
    assert order is not None and order.card_held
    assert OrderState.from_dict(orjson.loads(encode_internal(order))) == order
