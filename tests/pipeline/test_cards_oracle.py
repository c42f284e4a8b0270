"""The generated log's service-card orders (cards_log.py) as the oracle sees them: the card
states each card must reach in WeChat, per card type; never a classic intent for a carded order;
the late and unpaid orders on the classic path."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.pipeline import cards_log
from tests.pipeline.eventlog import EventLog, Knobs, generate
from tests.pipeline.oracle import Expected, expected
from wxsub.merchants import parse_merchants

NOW = 1_717_245_296_789

#: scenario -> the card states WeChat accepts, per card type (the defaults, plus 2002's
#: ``delivered = 0`` and 2006's ``shipped = 3``)
STATES = {
    (2001, "life"): [1, 4, 6, 8],
    (2001, "illegal"): [1, 4],
    (2001, "ended"): [1, 4, 8],
    (2001, "aftersale"): [1, 4, 6, 7, 9],
    (2002, "life"): [1, 3, 8],
    (2002, "illegal"): [1, 3],
    (2002, "aftersale"): [1, 7, 9],
    (2006, "life"): [1, 3, 8, 9],
    (2006, "cancel"): [1, 11],
    (2006, "ended"): [1, 9],
}


@pytest.fixture(scope="module")
def log() -> EventLog:
    return generate(Knobs(now_ms=NOW, seed=3, users=20, orders=30, skus=4, stores=1))


@pytest.fixture(scope="module")
def exp(log: EventLog) -> Expected:
    return expected(log.entries, parse_merchants(log.merchants_doc), NOW)


def _scenario(openid: str) -> tuple[int, str]:
    _, notify_type, name, _ = openid.split("-")
    return int(notify_type), name


def test_card_states_per_scenario(log: EventLog, exp: Expected) -> None:
    payer = {(p.appid, p.transaction_id): p.openid for p in cards_log.payments(
        e.record for e in log.entries)}  # fmt: skip
    got: dict[tuple[int, str], list[list[int]]] = defaultdict(list)
    for key, states in exp.cards.items():
        got[_scenario(payer[key])].append(states)
    assert {k: v[0] for k, v in got.items()} == STATES
    assert all(len(v) == 2 and v[0] == v[1] for v in got.values())  # two rounds each
    late = [k for k, openid in payer.items() if _scenario(openid) == (2001, "late")]
    assert late and not any(k in exp.cards for k in late)  # too late: no card call at all


def test_never_both_and_the_classic_path(exp: Expected) -> None:
    classic = {_scenario(i.openid) for i in exp.intents.values() if i.appid in cards_log.CARD_APPS}
    assert classic == {(2001, "late"), (2001, "nopay")}
