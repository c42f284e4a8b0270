"""The user's recent decisions (rules/history.py): what is noted, in order, and the bounds."""

from __future__ import annotations

from tests.agents.factory import APPID, MIN, OPENID, T0, TPL, cand, config, pref, sub
from wxsub.agents.rules import history as hist
from wxsub.agents.rules.decide import decide, on_timer
from wxsub.agents.rules.subscriptions import (
    UserState,
    apply_correction,
    apply_preference,
    apply_subscription,
    decode_user,
    encode_user,
)
from wxsub.schemas.internal import Candidate, Correction

CFG = config()


def _logi(event_id: str, t: int) -> Candidate:
    return cand("logistics", event_id=event_id, subject="o1", t=t, state="delivered")


def test_every_decision_is_noted_with_its_reason_in_order() -> None:
    state, _ = apply_subscription(UserState(), sub(TPL["order_status"], event_id="s1"), CFG, T0)
    d1 = decide(state, cand(event_id="e1"), CFG, T0)  # sent: the one credit
    d2 = decide(d1.state, cand(event_id="e2"), CFG, T0)  # no credit left
    d3 = decide(d2.state, cand(event_id="e1"), CFG, T0)  # the same event again
    state, _ = apply_preference(d3.state, pref("order_status"), CFG, T0)
    d4 = decide(state, cand(event_id="e3"), CFG, T0 + 1)
    got = [(d.event_id, d.kind, d.reason) for d in hist.decisions(d4.state.history, APPID, OPENID)]
    assert got == [
        ("s1", "subscription", "applied"),
        ("e1", "order_status", "intent"),
        ("e2", "order_status", "no_credit"),
        ("e1", "order_status", "duplicate"),
        (pref("order_status").event_id, "preference", "applied"),
        ("e3", "order_status", "not_subscribed_kind"),
    ]
    sent = hist.decisions(d4.state.history, APPID, OPENID)[1]
    assert sent.notification_id == d1.intents[0].notification_id
    assert sent.template_id == TPL["order_status"] and sent.subject == "o1"
    assert hist.decisions(d4.state.history, APPID, OPENID)[-1].detail == "order_status muted"
    assert decode_user(encode_user(d4.state)).history == d4.state.history


def test_held_collapsed_and_released_are_noted() -> None:
    state = UserState(credits={TPL["logistics"]: 3})
    d1 = decide(state, _logi("l1", T0), CFG, T0)
    d2 = decide(d1.state, _logi("l2", T0 + MIN), CFG, T0 + 1000)
    d3 = on_timer(d2.state, CFG, T0 + 10 * MIN)
    got = [(d.event_id, d.reason) for d in hist.decisions(d3.state.history, APPID, OPENID)]
    assert got == [("l1", "held"), ("l1", "collapsed"), ("l2", "held"), ("l2", "released")]
    assert (
        hist.decisions(d3.state.history, APPID, OPENID)[-1].notification_id
        == d3.intents[0].notification_id
    )


def test_corrections_are_noted_and_the_history_is_bounded() -> None:
    state = UserState(credits={TPL["order_status"]: 1})
    zero = Correction("wxapp", "o-user-1", TPL["order_status"], "zero", "n1", at=T0)
    state = apply_correction(state, zero, CFG, T0)
    assert hist.decisions(state.history)[-1][4:] == (
        "correction", TPL["order_status"], "n1", "zero",
    )  # fmt: skip
    for i in range(hist.HISTORY_MAX + 5):
        state = decide(state, cand(event_id=f"x{i}"), CFG, T0 + i).state
    assert len(hist.decisions(state.history)) == hist.HISTORY_MAX
    assert hist.decisions(state.history)[-1].event_id == f"x{hist.HISTORY_MAX + 4}"
    # entries older than the app's dedupe retention go when the next one comes
    later = T0 + CFG.dedupe_retention_s * 1000 + 10 * MIN
    state = decide(state, cand(event_id="late", t=later), CFG, later).state
    assert [d.event_id for d in hist.decisions(state.history)] == ["late"]
