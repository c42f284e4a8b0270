"""The user's recent decisions (rules/history.py): what is noted, in order, and the bounds."""

from __future__ import annotations

import orjson

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
from wxsub.schemas.internal import (
    NOTIFY_KINDS,
    Candidate,
    Correction,
    OutcomeReason,
    notification_id,
)

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


def test_an_entry_with_a_tab_or_newline_and_the_first_versions_json_lines_read_back() -> None:
    odd = hist.entry(T0, "e\t1", "order_status", "o\n1", "stale", "T", "", 'a "b"')
    plain = hist.entry(T0 + 1, "e2", "order_status", "o1", "stale", "T")
    first = '[1,"e0","order_status","o0","intent","T",""]'  # as the first version wrote it
    history = hist.add(hist.add(first, [odd], 0), [plain], 0)
    assert [(d.at, d.event_id, d.subject, d.detail) for d in hist.decisions(history)] == [
        (1, "e0", "o0", ""), (T0, "e\t1", "o\n1", 'a "b"'), (T0 + 1, "e2", "o1", ""),
    ]  # fmt: skip
    # trimmed and expired by its time whatever the form
    assert [d.event_id for d in hist.decisions(hist.add(history, [plain], T0))] == [
        "e\t1", "e2", "e2",
    ]  # fmt: skip


def test_entries_are_written_with_one_letter_codes_and_read_as_before() -> None:
    args = (T0, "e1", "order_status", "o1", "no_credit", "T", "", "d")
    coded = hist.entry(*args)
    assert coded == f"{T0}\ton" + "e1\to1\tT\td"
    seven = f"{T0}\te1\torder_status\to1\tno_credit\tT\td"  # as 2026-12-06's version wrote it
    first = orjson.dumps([T0, "e1", "order_status", "o1", "no_credit", "T", "d"]).decode()
    nid = notification_id(APPID, OPENID, "T", "e1")
    want = hist.Decided(T0, "e1", "order_status", "o1", "no_credit", "T", nid, "d")
    for stored in (coded, seven, first):
        assert hist.decisions(stored, APPID, OPENID) == [want]
    # the kind and reason become one character each, two tabs go
    assert len(seven) - len(coded) == len("order_status") - 1 + len("no_credit") - 1 + 2
    # a correction keeps its notification id where the event id goes, coded or not
    corr = hist.entry(T0, "", hist.CORRECTION, "T", hist.CORRECTION, "T", "n1", "zero")
    assert hist.decisions(corr)[0][4:] == ("correction", "T", "n1", "zero")
    # a kind or reason without a code is written in full; a code unknown here is skipped
    novel = hist.entry(T0, "e2", "order_status", "o1", "some_new_reason", "T")
    assert novel.count("\t") == 6
    assert [d.reason for d in hist.decisions(f"{coded}\n{novel}")] == [
        "no_credit",
        "some_new_reason",
    ]
    assert hist.decisions(f"{T0}\tZZe3\to1\tT\t\n{coded}", APPID, OPENID) == [want]
    # mixed forms are trimmed and expired by their times
    history = hist.add(hist.add(seven, [coded], 0), [hist.entry(T0 + 1, *args[1:])], T0 + 1)
    assert [d.at for d in hist.decisions(history)] == [T0 + 1]


def test_codes_are_one_character_distinct_and_cover_every_reason_noted() -> None:
    for codes in (hist.KIND_CODES, hist.REASON_CODES):
        assert all(len(c) == 1 and c not in "\t\n[" for c in codes.values())
        assert len(set(codes.values())) == len(codes)
    assert set(NOTIFY_KINDS) <= set(hist.KIND_CODES)
    decided = {r.value for r in OutcomeReason} - {
        "sent",
        "failed",
        "in_doubt",
        "reconciled_sent",
        "reconciled_failed",
        "opened",
        "unknown_ref",
    }  # fmt: skip (delivery's results go to the ledger, opens to the stats: not to the history)
    assert decided <= set(hist.REASON_CODES)


def test_an_intents_entry_is_the_entry_with_the_intent_reason() -> None:
    """hist.add_intent, the decide stage's short way to add an intent's entry, gives what add
    of entry does (also for a kind without a code, a field with a tab or a newline, a history
    full or expiring)."""
    old = hist.entry(T0 - 5, "e0", "order_status", "o0", hist.INTENT, TPL)
    full = "\n".join([old] * hist.HISTORY_MAX)
    for kind, subject in (("order_status", "o1"), ("newkind", "o1"), ("logistics", "a\tb"),
                          ("price_drop", "a\nb")):  # fmt: skip
        e = hist.entry(T0, "e1", kind, subject, hist.INTENT, TPL)
        for history, horizon in (("", 0), ("", T0 + 1), (old, 0), (full, 0), (full, T0 - 4),
                                 (old, T0 + 1)):  # fmt: skip
            assert hist.add_intent(history, T0, "e1", kind, subject, TPL, horizon) == hist.add(
                history, [e], horizon
            )


def test_the_oldest_entry_expires_by_its_at_whatever_its_width() -> None:
    """add() reads a 13-digit at directly, others as before: each expires past the horizon."""
    for at in (0, 999_999_999_999, T0, 10_000_000_000_000):
        old = hist.entry(at, "e0", "order_status", "o1", hist.INTENT, TPL)
        new = hist.entry(at + 10, "e1", "order_status", "o1", hist.INTENT, TPL)
        assert hist.add(old, [new], at + 1) == new
        assert hist.add(old, [new], at) == f"{old}\n{new}"
