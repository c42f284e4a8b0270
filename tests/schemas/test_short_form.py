"""Records stored in their short form (``internal.short_form``) read back equal, the full
form is still read, and ``from_doc`` builds the same record by position as by keyword."""

from __future__ import annotations

import orjson
import pytest

from wxsub.agents.rules.orders import HeldCandidate, OrderState
from wxsub.schemas.internal import Candidate, encode_internal, plain, short_form
from wxsub.schemas.struct import field_names, from_doc

BASE = OrderState("wx1", "o1", "u1", "paid", 1_717_245_296_789, "e1", 12_900, "CNY", None, "t", 2)


def _roundtrip(order: OrderState) -> tuple[bytes, OrderState]:
    raw = encode_internal({"order": order, "pending": ()})
    return raw, OrderState.from_dict(orjson.loads(raw)["order"])


def test_an_order_without_card_data_leaves_the_card_fields_out() -> None:
    raw, back = _roundtrip(BASE)
    doc = orjson.loads(raw)["order"]
    assert tuple(doc) == field_names(OrderState)[:11]
    assert back == BASE


@pytest.mark.parametrize(
    "changes",
    [
        {"card_code": "4200001"},
        {"card_status": 2},
        {"card_seq": 1},
        {"card_off": "fallback"},
        {"paid_at": 1},
        {"pay_amount": 5},
        {"card_active": True},
    ],
)
def test_any_card_field_set_keeps_the_full_form(changes: dict[str, object]) -> None:
    order = OrderState(**{**plain(BASE), **changes})  # type: ignore[arg-type]
    raw, back = _roundtrip(order)
    assert tuple(orjson.loads(raw)["order"]) == field_names(OrderState)
    assert back == order


def test_held_candidates_keep_the_full_form_and_read_back() -> None:
    cand = Candidate("order_status", "wx1", "u1", "e1", 1, 2, "o1", {"status": "paid"})
    order = OrderState(**{**plain(BASE), "card_held": (HeldCandidate(cand, "card_update"),)})
    _, back = _roundtrip(order)
    assert back == order


def test_the_full_form_of_earlier_versions_is_read() -> None:
    full = orjson.dumps({n: getattr(BASE, n) for n in field_names(OrderState)})
    assert OrderState.from_dict(orjson.loads(full)) == BASE


def test_from_doc_by_position_equals_by_keyword() -> None:
    doc = orjson.loads(encode_internal(BASE))
    assert from_doc(OrderState, doc) == OrderState(**doc)
    shuffled = dict(reversed(list(doc.items())))  # not in field order: by keyword
    assert from_doc(OrderState, shuffled) == BASE
    with pytest.raises(TypeError):
        from_doc(OrderState, {**doc, "unknown": 1})


def test_a_default_without_a_literal_is_refused() -> None:
    with pytest.raises(TypeError, match="no literal default"):
        short_form(Candidate, 7)  # values: a dict factory
