"""Credits, mutes, preferences and corrections; credits never go negative (property)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tests.agents.factory import MIN, T0, TPL, cand, config, pref, sub
from wxsub.agents.rules.decide import decide, on_timer
from wxsub.agents.rules.subscriptions import (
    UserState,
    apply_correction,
    apply_preference,
    apply_subscription,
)
from wxsub.schemas.internal import Correction

CFG = config()
T_ORDER = TPL["order_status"]


def _apply(state: UserState, ev: object) -> UserState:
    new, _ = apply_subscription(state, ev, CFG, T0)  # type: ignore[arg-type]
    return new


def test_accepts_add_credits_per_template() -> None:
    state = UserState()
    for i in range(3):
        state = _apply(state, sub(T_ORDER, event_id=f"a{i}"))
    state = _apply(state, sub(TPL["logistics"], event_id="b"))
    assert state.credits == {T_ORDER: 3, TPL["logistics"]: 1}


def test_duplicate_event_does_not_add_twice() -> None:
    state, first = apply_subscription(UserState(), sub(T_ORDER, event_id="a"), CFG, T0)
    again, second = apply_subscription(state, sub(T_ORDER, event_id="a"), CFG, T0)
    assert (first.reason, second.reason) == ("applied", "duplicate")
    assert again.credit(T_ORDER) == 1


def test_popup_reject_and_sent_change_nothing() -> None:
    state = _apply(UserState(), sub(T_ORDER, status="reject", event_id="r"))
    state = _apply(state, sub(T_ORDER, event="sent", status=None, event_id="s"))
    assert state.credits == {} and state.muted_templates == ()


def test_change_reject_mutes_until_a_new_accept() -> None:
    state = _apply(UserState(), sub(T_ORDER, event_id="a1"))
    state = _apply(state, sub(T_ORDER, event="change", status="reject", event_id="c"))
    assert state.muted_templates == (T_ORDER,) and state.credit(T_ORDER) == 1
    assert decide(state, cand(), CFG, T0).outcomes[0].reason == "muted"
    state = _apply(state, sub(T_ORDER, event_id="a2"))
    assert state.muted_templates == () and state.credit(T_ORDER) == 2


def test_preferences_mute_kinds_by_event_time() -> None:
    state, out = apply_preference(UserState(), pref("order_status", "mute"), CFG, T0)
    assert out.reason == "applied" and state.muted_kinds == ("order_status",)
    older, out = apply_preference(state, pref("order_status", "unmute", t=T0 - MIN), CFG, T0)
    assert out.reason == "regression" and older.muted_kinds == ("order_status",)
    state, _ = apply_preference(state, pref("all", "mute", t=T0 + MIN), CFG, T0)
    assert len(state.muted_kinds) == 5
    state, _ = apply_preference(state, pref("all", "unmute", t=T0 + 2 * MIN), CFG, T0)
    assert state.muted_kinds == ()


def test_corrections() -> None:
    state = _apply(_apply(UserState(), sub(T_ORDER, event_id="a")), sub(T_ORDER, event_id="b"))
    decision = decide(state, cand(), CFG, T0)
    (intent,) = decision.intents
    state = decision.state
    assert state.credit(T_ORDER) == 1
    restore = Correction("wxapp", "o-user-1", T_ORDER, "restore", intent.notification_id)
    state = apply_correction(state, restore)
    assert state.credit(T_ORDER) == 2
    assert apply_correction(state, restore).credit(T_ORDER) == 2  # once per notification
    unknown = Correction("wxapp", "o-user-1", T_ORDER, "restore", "never-sent")
    assert apply_correction(state, unknown).credit(T_ORDER) == 2
    zero = Correction("wxapp", "o-user-1", T_ORDER, "zero", intent.notification_id)
    assert apply_correction(state, zero).credit(T_ORDER) == 0


def test_state_round_trips_through_json() -> None:
    state = _apply(UserState(), sub(T_ORDER, event_id="a"))
    state, _ = apply_preference(state, pref("restock"), CFG, T0)
    state = decide(state, cand(), CFG, T0).state
    back = UserState.from_dict(orjson.loads(orjson.dumps(state)))
    assert back == state


# --- property: credits never negative -------------------------------------------------------------

_TEMPLATES = [T_ORDER, TPL["logistics"]]
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("accept"), st.sampled_from(_TEMPLATES)),
        st.tuples(st.just("reject"), st.sampled_from(_TEMPLATES)),
        st.tuples(st.just("send"), st.sampled_from(["order_status", "logistics"])),
        st.tuples(st.just("zero"), st.sampled_from(_TEMPLATES)),
        st.tuples(st.just("restore"), st.integers(min_value=0, max_value=30)),
        st.tuples(st.just("timer"), st.integers(min_value=0, max_value=120)),
    ),
    max_size=60,
)


@given(ops=_ops)
def test_credits_never_negative(ops: list[tuple[str, object]]) -> None:
    state = UserState()
    accepted = {t: 0 for t in _TEMPLATES}
    sent: list[tuple[str, str]] = []  # (nid, template)
    now = T0
    for i, (op, arg) in enumerate(ops):
        now += 1000
        if op == "accept":
            state, _ = apply_subscription(state, sub(str(arg), event_id=f"a{i}", t=now), CFG, now)
            accepted[str(arg)] += 1
        elif op == "reject":
            ev = sub(str(arg), event="change", status="reject", event_id=f"r{i}", t=now)
            state, _ = apply_subscription(state, ev, CFG, now)
        elif op == "send":
            c = cand(str(arg), event_id=f"e{i}", subject=f"o{i % 3}", t=now)
            decision = decide(state, c, CFG, now)
            state = decision.state
            sent += [(x.notification_id, x.template_id) for x in decision.intents]
        elif op == "zero":
            state = apply_correction(state, Correction("wxapp", "o-user-1", str(arg), "zero", ""))
        elif op == "restore" and sent:
            nid, tpl = sent[int(str(arg)) % len(sent)]
            state = apply_correction(state, Correction("wxapp", "o-user-1", tpl, "restore", nid))
        elif op == "timer":
            decision = on_timer(state, CFG, now + int(str(arg)) * 1000)
            state = decision.state
            sent += [(x.notification_id, x.template_id) for x in decision.intents]
        assert all(v > 0 for v in state.credits.values())
        for tpl in _TEMPLATES:
            # never more sends decided than credits granted (corrections aside, which only lower)
            assert state.credit(tpl) <= accepted[tpl]
