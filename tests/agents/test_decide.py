"""decide and on_timer: one hand-written case per reason, quiet hours, collapse, caps."""

from __future__ import annotations

import datetime as dt

import orjson

from tests.agents.factory import (
    BASE,
    HOUR,
    MIN,
    OPENID,
    T0,
    TPL,
    TZ,
    cand,
    config,
    order,
    pref,
    sub,
)
from wxsub.agents.rules.decide import decide, on_timer, quiet_release
from wxsub.agents.rules.orders import apply_order_event
from wxsub.agents.rules.subscriptions import (
    UserState,
    apply_preference,
    apply_subscription,
    decode_user,
    encode_user,
)
from wxsub.merchants import QuietHours
from wxsub.schemas.internal import (
    Candidate,
    Intent,
    decode_internal,
    encode_internal,
    notification_id,
)

CFG = config()
NO_COLLAPSE = config(collapse_window_s=0)
NIGHT = int(dt.datetime(2024, 5, 1, 23, 30, tzinfo=TZ).timestamp() * 1000)
MORNING = int(dt.datetime(2024, 5, 2, 8, 0, tzinfo=TZ).timestamp() * 1000)


def rich(credits: int = 5) -> UserState:
    """A user with ``credits`` for every template."""
    state = UserState()
    for kind, tpl in TPL.items():
        for i in range(credits):
            state, _ = apply_subscription(state, sub(tpl, event_id=f"{kind}{i}"), CFG, T0)
    return state


def reasons(decision: object) -> list[str]:
    return [o.reason for o in decision.outcomes]  # type: ignore[attr-defined]


def test_sends_with_credit() -> None:
    state = rich(1)
    d = decide(state, cand(), CFG, T0 + 1000)
    (intent,) = d.intents
    assert d.outcomes == ()
    assert intent.notification_id == notification_id("wxapp", OPENID, TPL["order_status"], "e1")
    assert intent.event_ids == ("e1",) and intent.decided_at == T0 + 1000
    assert intent.body["touser"] == OPENID and intent.body["template_id"] == TPL["order_status"]
    assert d.state.credit(TPL["order_status"]) == 0


def test_no_template() -> None:
    assert reasons(decide(rich(), cand(), None, T0)) == ["no_template"]
    no_restock = config(kinds={k: v for k, v in BASE["kinds"].items() if k != "restock"})
    assert reasons(decide(rich(), cand("restock"), no_restock, T0)) == ["no_template"]


def test_stale() -> None:
    d = decide(rich(), cand(t=T0 - 24 * HOUR - 1), CFG, T0)
    assert reasons(d) == ["stale"] and d.intents == ()
    assert decide(rich(), cand(t=T0 - 24 * HOUR), CFG, T0).intents


def test_duplicate_whatever_the_first_result() -> None:
    d1 = decide(rich(), cand(), CFG, T0)
    assert len(d1.intents) == 1
    assert reasons(decide(d1.state, cand(), CFG, T0)) == ["duplicate"]
    poor = decide(UserState(), cand(), CFG, T0)
    assert reasons(poor) == ["no_credit"]
    assert reasons(decide(poor.state, cand(), CFG, T0)) == ["duplicate"]


def test_kind_muted_and_template_muted() -> None:
    state, _ = apply_preference(rich(), pref("order_status"), CFG, T0)
    assert reasons(decide(state, cand(), CFG, T0)) == ["not_subscribed_kind"]
    state, _ = apply_subscription(
        rich(), sub(TPL["order_status"], event="change", status="reject", event_id="x"), CFG, T0
    )
    assert reasons(decide(state, cand(), CFG, T0)) == ["muted"]


def test_invalid_data() -> None:
    d = decide(rich(), cand(status="teleported"), CFG, T0)
    assert reasons(d) == ["invalid_data"] and "phrase2" in d.outcomes[0].detail
    assert d.state.credit(TPL["order_status"]) == 5  # no credit spent


def test_content_blocked() -> None:
    d = decide(rich(), cand("price_drop", title="赌 博 用品"), CFG, T0)
    assert reasons(d) == ["content_blocked"]


def test_a_paused_kind_spends_no_credit_and_stays_seen() -> None:
    d = decide(rich(), cand(), CFG, T0, paused="43107 at send")
    assert reasons(d) == ["paused"] and d.intents == ()
    assert d.outcomes[0].detail == "kind paused: 43107 at send"
    assert d.state.credit(TPL["order_status"]) == 5  # no credit spent
    # the pause lifted: the same event again is a duplicate, a new one is sent
    assert reasons(decide(d.state, cand(), CFG, T0)) == ["duplicate"]
    assert len(decide(d.state, cand(event_id="e2"), CFG, T0).intents) == 1


def test_no_credit() -> None:
    d = decide(UserState(), cand(), CFG, T0)
    assert reasons(d) == ["no_credit"] and d.state.credits == {}


def test_transactional_cap_on_event_time() -> None:
    state = rich(10)
    for i in range(5):
        d = decide(state, cand(event_id=f"e{i}", t=T0 + i * MIN), NO_COLLAPSE, T0 + HOUR)
        assert len(d.intents) == 1
        state = d.state
    d = decide(state, cand(event_id="e5", t=T0 + 5 * MIN), NO_COLLAPSE, T0 + HOUR)
    assert reasons(d) == ["capped"] and d.state.credit(TPL["order_status"]) == 5
    # an hour of event time later the window has moved on
    d = decide(state, cand(event_id="e6", t=T0 + 65 * MIN), NO_COLLAPSE, T0 + HOUR)
    assert len(d.intents) == 1


def test_marketing_cap_is_separate() -> None:
    state = rich(10)
    for i in range(2):
        state = decide(state, cand("promotion", event_id=f"r{i}", subject=f"s{i}"), CFG, T0).state
    assert reasons(decide(state, cand("promotion", event_id="r9"), CFG, T0)) == ["capped"]
    assert len(decide(state, cand(event_id="o9"), CFG, T0).intents) == 1
    # watched-item alerts are service messages: the transactional cap, not the marketing one
    assert len(decide(state, cand("restock", event_id="x9"), CFG, T0).intents) == 1


def test_quiet_hours_defer_marketing_then_release() -> None:
    state = rich()
    d = decide(state, cand("promotion", t=NIGHT), CFG, NIGHT + MIN)
    assert reasons(d) == ["quiet_hours_deferred"] and d.intents == ()
    assert d.state.credit(TPL["promotion"]) == 4  # decided now: credit consumed
    assert d.state.next_due() == MORNING
    assert on_timer(d.state, CFG, MORNING - 1).intents == ()
    released = on_timer(d.state, CFG, MORNING)
    (intent,) = released.intents
    assert intent.notification_id == d.outcomes[0].notification_id
    assert released.state.deferred == () and released.state.next_due() is None
    # transactional kinds ignore quiet hours
    assert len(decide(state, cand(t=NIGHT), CFG, NIGHT + MIN).intents) == 1


def test_quiet_release_arithmetic() -> None:
    quiet = QuietHours(dt.time(22), dt.time(8))
    assert quiet_release(NIGHT, quiet, TZ) == MORNING
    early = int(dt.datetime(2024, 5, 2, 3, 0, tzinfo=TZ).timestamp() * 1000)
    assert quiet_release(early, quiet, TZ) == MORNING
    assert quiet_release(T0, quiet, TZ) is None
    lunch = QuietHours(dt.time(12), dt.time(13, 30))
    noon = int(dt.datetime(2024, 5, 1, 12, 5, tzinfo=TZ).timestamp() * 1000)
    end = int(dt.datetime(2024, 5, 1, 13, 30, tzinfo=TZ).timestamp() * 1000)
    assert quiet_release(noon, lunch, TZ) == end


def _logi(event_id: str, t: int, state: str = "out_for_delivery") -> Candidate:
    return cand("logistics", event_id=event_id, subject="o1", t=t, state=state, status=state)


def test_collapse_latest_wins_and_saves_the_credit() -> None:
    state = rich(2)
    d1 = decide(state, _logi("l1", T0), CFG, T0)
    assert d1.intents == () and d1.outcomes == ()  # held
    assert d1.state.credit(TPL["logistics"]) == 1
    d2 = decide(d1.state, _logi("l2", T0 + MIN, "delivered"), CFG, T0 + 10_000)
    assert [(o.event_id, o.reason) for o in d2.outcomes] == [("l1", "collapsed")]
    assert d2.state.credit(TPL["logistics"]) == 1  # l1's credit came back, l2 took one
    assert on_timer(d2.state, CFG, T0 + 60_000).intents == ()  # l2's window runs from its arrival
    (intent,) = on_timer(d2.state, CFG, T0 + 70_000).intents
    assert intent.event_ids == ("l1", "l2")
    assert intent.body["data"]["phrase2"]["value"] == "已签收"


def test_collapse_older_update_is_folded_in() -> None:
    d1 = decide(rich(), _logi("l2", T0 + MIN, "delivered"), CFG, T0)
    d2 = decide(d1.state, _logi("l1", T0), CFG, T0 + 1000)
    assert [(o.event_id, o.reason) for o in d2.outcomes] == [("l1", "collapsed")]
    (intent,) = on_timer(d2.state, CFG, T0 + 60_000).intents
    assert intent.event_ids == ("l1", "l2")
    assert d2.state.credit(TPL["logistics"]) == 4


def test_collapse_last_credit_moves_to_the_newer_update() -> None:
    d1 = decide(rich(1), _logi("l1", T0), CFG, T0)
    assert d1.state.credit(TPL["logistics"]) == 0
    d2 = decide(d1.state, _logi("l2", T0 + MIN), CFG, T0 + 1000)
    assert reasons(d2) == ["collapsed"]
    (intent,) = on_timer(d2.state, CFG, T0 + 61_000).intents
    assert intent.event_ids == ("l1", "l2")


def test_failed_newer_update_keeps_the_held_one() -> None:
    d1 = decide(rich(), _logi("l1", T0), CFG, T0)
    bad = cand("logistics", event_id="l2", subject="o1", t=T0 + MIN, status="nope", state="nope")
    d2 = decide(d1.state, bad, CFG, T0 + 1000)
    assert reasons(d2) == ["invalid_data"]
    (intent,) = on_timer(d2.state, CFG, T0 + 60_000).intents
    assert intent.event_ids == ("l1",)


def test_after_release_a_new_update_is_a_new_message() -> None:
    d1 = decide(rich(), _logi("l1", T0), CFG, T0)
    released = on_timer(d1.state, CFG, T0 + 60_000)
    d2 = decide(released.state, _logi("l2", T0 + MIN), CFG, T0 + 61_000)
    assert d2.outcomes == ()
    assert len(on_timer(d2.state, CFG, T0 + 121_000).intents) == 1


def test_without_collapse_window_logistics_go_now() -> None:
    assert len(decide(rich(), _logi("l1", T0), NO_COLLAPSE, T0).intents) == 1


def test_dedupe_memory_is_bounded() -> None:
    state = decide(rich(), cand(), CFG, T0).state
    assert state.seen
    later = T0 + CFG.dedupe_retention_s * 1000 + 1
    pruned = decide(state, cand(event_id="new", t=later), CFG, later).state
    assert list(pruned.seen) == [notification_id("wxapp", OPENID, TPL["order_status"], "new")]
    assert len(pruned.sends) == 1


def test_state_with_held_and_deferred_round_trips() -> None:
    state = decide(rich(), _logi("l1", T0), CFG, T0).state
    state = decide(state, cand("promotion", t=NIGHT), CFG, NIGHT + MIN).state
    assert state.held and state.deferred
    back = UserState.from_dict(orjson.loads(orjson.dumps(state)))
    assert back == state
    assert (
        on_timer(back, CFG, MORNING + HOUR).intents == on_timer(state, CFG, MORNING + HOUR).intents
    )


def test_state_is_stored_short_and_the_full_form_still_reads() -> None:
    state = decide(rich(), _logi("l1", T0), CFG, T0).state
    state = decide(state, cand("promotion", t=NIGHT), CFG, NIGHT + MIN).state
    state = decide(state, cand(event_id="e2"), CFG, T0).state
    assert state.sends and state.held and state.deferred
    short = encode_user(state)
    full = orjson.dumps(state)  # how versions before the short form stored it
    assert len(short) < len(full)
    assert b'"muted_kinds"' not in short  # empty parts are left out
    assert decode_user(short) == state
    assert decode_user(full) == state
    assert decode_user(encode_user(UserState())) == UserState()


def test_candidates_travel_as_internal_records() -> None:
    _, (c,), _ = apply_order_event(None, order("paid"), CFG, T0)
    assert decode_internal(Candidate, encode_internal(c)) == c
    (intent,) = decide(rich(), c, NO_COLLAPSE, T0).intents
    assert decode_internal(Intent, encode_internal(intent)) == intent
