"""The generated log's service-card orders (cards_log.py) as the oracle sees them: the card
states each card must reach in WeChat, per card type; never a classic intent for a carded order;
the late and unpaid orders on the classic path."""

from __future__ import annotations

from collections import Counter, defaultdict

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


def test_without_the_card_stage_the_held_candidates_never_end(log: EventLog, exp: Expected) -> None:
    """Only the card stage's ``activated`` ends the classic candidates held while a card's
    activation is pending; the pipeline tests run no card stage, and their oracle says so."""
    alone = expected(log.entries, parse_merchants(log.merchants_doc), NOW, card_stage=False)
    assert not exp.held and alone.held  # the latest per kind of each carded order
    assert alone.cards == exp.cards  # the same card operations either way
    ended = {key[0] for key in exp.outcomes}
    ended_alone = {key[0] for key in alone.outcomes if key[3] != "duplicate"}  # a redelivery
    assert alone.held <= ended and not alone.held & ended_alone
    missing = exp.outcomes - alone.outcomes  # exactly the held events' ends
    assert missing == Counter({k: n for k, n in exp.outcomes.items() if k[0] in alone.held
                               and k[3] != "duplicate"})  # fmt: skip
    assert alone.outcomes - exp.outcomes == Counter()
