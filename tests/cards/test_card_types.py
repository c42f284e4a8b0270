"""The card tables (wxsub/wechat/card_types.py) against an independent transcription of
wechat-service-cards.md §4: every (previous, next) pair of every card type, activation states,
terminal states, required fields per state, field formats, the ``p1.`` code prefix."""

from __future__ import annotations

from typing import Any

import pytest

from wxsub.wechat.card_types import CARD_TYPES, check_content, legal, strip_code_prefix

# state -> (may activate, the states it may follow), as the facts file's tables say
# (2001 rows 1-4 [doc], 5-11 [3p]; 2002/2006 beyond 1-2: wxsub's own table [inf])
TABLES: dict[int, dict[int, tuple[bool, set[int]]]] = {
    2001: {
        1: (True, {7}), 2: (True, {1, 7}), 3: (False, {1, 2, 3, 7}), 4: (False, {1, 2, 3, 7}),
        5: (False, {3, 4, 7}), 6: (False, {4, 5, 7}), 7: (False, {1, 2, 3, 4, 5, 6}),
        8: (False, {1, 2, 3, 4, 5, 6, 7}), 9: (False, {7}), 10: (False, {1, 2, 7}),
        11: (False, {7}),
    },
    2002: {
        1: (True, {7}), 2: (True, {1, 7}), 3: (False, {1, 2, 7}), 4: (False, {3, 7}),
        7: (False, {1, 2, 3, 4}), 8: (False, {3, 4, 7}), 9: (False, {7}), 10: (False, {1, 2, 7}),
    },
    2006: {
        1: (True, {10}), 2: (True, {1, 2, 10}), 3: (False, {1, 2, 10}),
        5: (False, {1, 2, 3, 5, 10}), 8: (False, {3, 5, 10}), 9: (False, {1, 2, 3, 5, 8, 10}),
        10: (False, {1, 2, 3, 5, 8}), 11: (False, {1, 2, 10}),
    },
}  # fmt: skip
TERMINAL = {2001: {8, 9, 10, 11}, 2002: {8, 9, 10}, 2006: {9, 11}}
PRODUCTS = {"product_count", "product_list", "wxa_path_query"}


@pytest.mark.parametrize("notify_type", sorted(TABLES))
def test_every_transition_of_the_table(notify_type: int) -> None:
    card = CARD_TYPES[notify_type]
    table = TABLES[notify_type]
    assert set(card.states) == set(table)
    for new, (activates, after) in table.items():
        assert legal(card, None, new) is activates, (new, "activation")
        for prev in range(0, 13):
            assert legal(card, prev, new) is (prev in after), (prev, new)
    for prev in table:  # a state that does not exist is never legal
        assert not legal(card, prev, 6 if notify_type != 2001 else 12)
        assert not legal(card, None, 0)


@pytest.mark.parametrize("notify_type", sorted(TABLES))
def test_terminal_states(notify_type: int) -> None:
    card = CARD_TYPES[notify_type]
    assert {s for s in card.states if card.terminal(s)} == TERMINAL[notify_type]


def _product(**extra: Any) -> dict[str, Any]:
    item = {"product_img": "https://x/y.png", "product_name": "阿白", "product_path_query": "p"}
    return {"info_list": [{**item, **extra}]}


def _content(status: int, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"cur_status": status, "wxa_path_query": "pages/o?id=1"}
    if status in (1, 2):
        doc.update(product_count=1, product_list=_product())
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize("notify_type", sorted(TABLES))
def test_required_fields_per_state(notify_type: int) -> None:
    card = CARD_TYPES[notify_type]
    for status, state in card.states.items():
        assert check_content(card, _content(status)) is None, status
        need = PRODUCTS if status in (1, 2) else {"wxa_path_query"}
        assert set(state.required) == need
        for name in need:
            problem = check_content(card, _content(status, **{name: None}))
            assert problem == f"state {status} requires {name}"


def test_optional_and_unknown_fields() -> None:
    c2001, c2006 = CARD_TYPES[2001], CARD_TYPES[2006]
    assert check_content(c2001, _content(2, send_time=1_696_157_643)) is None
    assert check_content(c2001, _content(3, send_time=1_696_157_643)) is None
    assert check_content(c2001, _content(4, send_time=1)) == "state 4 does not take send_time"
    assert check_content(c2001, _content(4, product_count=1)) == (
        "state 4 does not take product_count"
    )
    rider = {"arrival_time": 1, "distance_to_store": 2, "distance_to_destination": 3}
    assert check_content(c2006, _content(5, **rider)) is None
    assert check_content(c2006, _content(8, arrival_time=1)) is None
    assert check_content(CARD_TYPES[2002], _content(3, pickup_time=1)) is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"wxa_path_query": "p"}, "cur_status missing or not an integer"),
        (_content(1, cur_status="1"), "cur_status missing or not an integer"),
        (_content(1, cur_status=True), "cur_status missing or not an integer"),
        (_content(12), "cur_status 12 is not a state of card 2001"),
        (_content(2, send_time=-1), "send_time must be a uint32"),
        (_content(2, send_time=2**32), "send_time must be a uint32"),
        (_content(1, product_count=1.5), "product_count must be a uint32"),
        (_content(4, wxa_path_query="x" * 1025), "wxa_path_query must be text of at most"),
        (_content(1, product_list=[]), "product_list must be {info_list: [...]}"),
        (_content(1, product_list={"info_list": []}), "product_list.info_list must hold 1-10"),
        (_content(1, product_list={"info_list": [_product()["info_list"][0]] * 11}),
         "product_list.info_list must hold 1-10"),
        (_content(1, product_list=_product(product_name="")),
         "product_list.info_list[0].product_name missing or not text"),
        (_content(1, product_list=_product(count=-1)),
         "product_list.info_list[0].count must be a uint32"),
        (_content(1, product_list=_product(sku="1")),
         "product_list.info_list[0] has unknown field(s) sku"),
    ],
)  # fmt: skip
def test_bad_content(content: dict[str, Any], problem: str) -> None:
    got = check_content(CARD_TYPES[2001], content)
    assert got is not None and got.startswith(problem)


def test_product_fields_within_limits_pass() -> None:
    ok = _product(count=3, single_price=1005)
    assert check_content(CARD_TYPES[2001], _content(1, product_list=ok)) is None


@pytest.mark.parametrize(
    ("code", "stripped"),
    [
        ("p1.4200002043202311087295582095", "4200002043202311087295582095"),
        ("p12.42000", "42000"),
        ("4200002043202311087295582095", "4200002043202311087295582095"),
        ("px.42000", "px.42000"),
        ("q1.42000", "q1.42000"),
        ("p.42000", "p.42000"),
        ("p1.", ""),
    ],
)
def test_strip_code_prefix(code: str, stripped: str) -> None:
    assert strip_code_prefix(code) == stripped
