"""The delivery state machine as pure functions: every path, replays, receipts, backoff."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxsub.agents.rules.delivery import (
    DeliveryPolicy,
    Entry,
    LedgerState,
    Receipt,
    backoff_ms,
    begin_attempt,
    decode_entry,
    delivery_of,
    encode_entry,
    entry_for,
    evolve,
    match_receipt,
    on_due,
    on_intent,
    on_receipt,
    on_result,
)
from wxsub.errors import InDoubtError, PermanentError, QuotaExceeded, RetryableError
from wxsub.schemas.internal import Intent
from wxsub.wechat.client import SendResult

T0 = 1_714_528_800_000
POLICY = DeliveryPolicy(max_attempts=3, backoff_base_ms=1000, backoff_max_ms=8000, jitter=0.2)
MSGID = 2**60 + 7

ATTEMPT, RETRY, SENT, FAILED, IN_DOUBT = (
    LedgerState.ATTEMPT,
    LedgerState.RETRY,
    LedgerState.SENT,
    LedgerState.FAILED,
    LedgerState.IN_DOUBT,
)


def intent(
    nid: str = "n1", openid: str = "o1", event_ids: tuple[str, ...] = ("e0", "e1")
) -> Intent:
    return Intent(
        notification_id=nid,
        appid="wxa",
        openid=openid,
        template_id="TPL",
        kind="order_status",
        event_ids=event_ids,
        occurred_at=T0 - 5000,
        received_at=T0 - 4000,
        decided_at=T0 - 3000,
        body={"touser": openid, "template_id": "TPL", "data": {"thing1": {"value": "x"}}},
    )


def attempt(nid: str = "n1", at: int = T0) -> Entry:
    return begin_attempt(entry_for(intent(nid), at), at)


# --- intents --------------------------------------------------------------------------------


def test_new_intent_is_sent_from_an_attempt() -> None:
    step = on_intent(None, intent(), T0, None, POLICY)
    assert step.send and step.entry is not None and step.entry.intent == intent()
    att = begin_attempt(step.entry, T0)
    assert (att.state, att.attempts, att.attempt_at, att.due) == (ATTEMPT, 1, T0, T0)
    assert att.event_id == "e1"  # the intent's own event is the last id


def test_intent_while_appid_paused_becomes_a_retry_at_the_pause_end() -> None:
    step = on_intent(None, intent(), T0, T0 + 60_000, POLICY)
    assert not step.send and step.entry is not None
    assert (step.entry.state, step.entry.due, step.entry.attempts) == (RETRY, T0 + 60_000, 0)


@pytest.mark.parametrize("state", [SENT, FAILED, IN_DOUBT, RETRY])
def test_replayed_intent_of_a_known_id_does_nothing(state: str) -> None:
    old = replace(attempt(), state=state)
    step = on_intent(old, intent(), T0 + 1, None, POLICY)
    assert step.entry is None and not step.send and step.outcome is None


def test_replayed_intent_finding_an_attempt_is_in_doubt_not_resent() -> None:
    step = on_intent(attempt(), intent(), T0 + 10, None, POLICY)
    assert not step.send
    assert step.entry is not None and step.entry.state == IN_DOUBT and step.entry.intent is None
    assert step.entry.due is None
    assert step.outcome is not None and step.outcome.reason == "in_doubt"
    assert step.outcome.notification_id == "n1" and step.outcome.event_id == "e1"


def test_in_doubt_resend_policy_schedules_a_retry_within_the_budget() -> None:
    policy = replace(POLICY, in_doubt_resend=True)
    step = on_intent(attempt(), intent(), T0 + 10, None, policy)
    assert step.entry is not None and step.entry.state == RETRY and step.entry.due == T0 + 10
    assert step.outcome is None and step.result == "resend"
    exhausted = replace(attempt(), failures=2)
    step = on_intent(exhausted, intent(), T0 + 10, None, policy)
    assert step.entry is not None and step.entry.state == IN_DOUBT


# --- answers ------------------------------------------------------------------------------------


def test_sent_keeps_the_exact_msgid_and_drops_the_body() -> None:
    step = on_result(attempt(), SendResult(MSGID), T0 + 50, POLICY)
    assert step.entry is not None
    assert (step.entry.state, step.entry.msgid, step.entry.errcode) == (SENT, str(MSGID), 0)
    assert step.entry.intent is None and step.entry.due is None
    assert step.outcome is not None and step.outcome.reason == "sent"
    assert step.correction is None


def test_43101_fails_and_zeroes_credits() -> None:
    step = on_result(attempt(), PermanentError("no credit", 43101), T0, POLICY)
    assert step.entry is not None and (step.entry.state, step.entry.errcode) == (FAILED, 43101)
    assert step.outcome is not None and (step.outcome.reason, step.outcome.errcode) == (
        "failed",
        43101,
    )
    assert step.correction is not None and step.correction.action == "zero"


@pytest.mark.parametrize("errcode", [40003, 40037, 41030, 43107, 45168, 47003, 48001, None])
def test_other_permanent_refusals_restore_the_credit(errcode: int | None) -> None:
    step = on_result(attempt(), PermanentError("refused", errcode), T0, POLICY)
    assert step.entry is not None and step.entry.state == FAILED
    assert step.correction is not None and step.correction.action == "restore"
    assert step.correction.notification_id == "n1"


@pytest.mark.parametrize("errcode", [-1, 43108, 45011, 42001, None])
def test_retryable_refusals_retry_with_backoff_then_fail(errcode: int | None) -> None:
    entry = attempt()
    for n in range(1, POLICY.max_attempts):
        step = on_result(entry, RetryableError("busy", errcode), T0, POLICY, draw=0.5)
        assert step.entry is not None and step.entry.state == RETRY and step.outcome is None
        assert step.entry.due == T0 + 1000 * 2 ** (n - 1)
        assert step.entry.intent is not None  # kept: the timer resends it
        due = on_due(step.entry, step.entry.due, None, POLICY)
        assert due.send and due.entry is not None
        entry = begin_attempt(due.entry, T0)
    step = on_result(entry, RetryableError("busy", errcode), T0, POLICY)
    assert step.entry is not None and step.entry.state == FAILED
    assert step.entry.attempts == POLICY.max_attempts
    assert step.correction is not None and step.correction.action == "restore"


def test_quota_defers_to_the_pause_end_without_using_the_budget() -> None:
    step = on_result(attempt(), QuotaExceeded("quota", 45009), T0, POLICY, pause_until=T0 + 9)
    assert step.entry is not None and (step.entry.state, step.entry.due) == (RETRY, T0 + 9)
    assert step.entry.failures == 0 and step.result == "quota"
    default = on_result(attempt(), QuotaExceeded("quota", 45009), T0, POLICY)
    assert default.entry is not None and default.entry.due == T0 + POLICY.quota_pause_ms
    paused = on_due(step.entry, T0 + 9, T0 + 100, POLICY)
    assert not paused.send and paused.entry is not None and paused.entry.due == T0 + 100


def test_no_answer_is_in_doubt() -> None:
    step = on_result(attempt(), InDoubtError("timeout"), T0, POLICY)
    assert step.entry is not None and step.entry.state == IN_DOUBT
    assert step.outcome is not None and step.outcome.reason == "in_doubt"


def test_timer_reports_a_leftover_attempt_and_clears_stale_due_times() -> None:
    step = on_due(attempt(), T0 + 1, None, POLICY)
    assert step.entry is not None and step.entry.state == IN_DOUBT
    stale = replace(attempt(), state=SENT)
    cleared = on_due(stale, T0, None, POLICY)
    assert cleared.entry is not None and cleared.entry.due is None and cleared.outcome is None
    assert on_due(None, T0, None, POLICY).entry is None


# --- receipts ------------------------------------------------------------------------------------


def receipt(time_ms: int, error_code: int = 0) -> Receipt:
    return Receipt("wxa", "o1", "TPL", str(MSGID), error_code, time_ms)


def test_receipt_matches_the_oldest_attempt_not_after_it() -> None:
    candidates = [(T0, "a"), (T0 + 1000, "b")]
    assert match_receipt(candidates, receipt(T0 + 2000), POLICY) == "a"
    assert match_receipt(candidates, receipt(T0 - POLICY.receipt_skew_ms), POLICY) == "a"
    assert match_receipt(candidates, receipt(T0 - POLICY.receipt_skew_ms - 1), POLICY) is None
    assert match_receipt([], receipt(T0), POLICY) is None
    late = T0 + POLICY.receipt_window_ms + 500  # "a" is too old to be this receipt's send
    assert match_receipt(candidates, receipt(late), POLICY) == "b"
    assert match_receipt(candidates, receipt(late + 1000), POLICY) is None


def test_receipt_settles_in_doubt_as_sent_or_failed() -> None:
    doubt = on_result(attempt(), InDoubtError("x"), T0, POLICY).entry
    assert doubt is not None
    ok = on_receipt(doubt, receipt(T0), T0 + 5)
    assert ok.entry is not None and (ok.entry.state, ok.entry.msgid) == (SENT, str(MSGID))
    assert ok.outcome is not None and ok.outcome.reason == "reconciled_sent"
    bad = on_receipt(doubt, receipt(T0, error_code=10005), T0 + 5)
    assert bad.entry is not None and (bad.entry.state, bad.entry.errcode) == (FAILED, 10005)
    assert bad.outcome is not None and bad.outcome.reason == "reconciled_failed"
    assert bad.correction is None
    assert on_receipt(ok.entry, receipt(T0), T0).entry is None  # already final


# --- backoff and records -----------------------------------------------------------------------


@given(st.integers(1, 60), st.floats(0, 0.999999))
def test_backoff_is_bounded_by_the_cap_and_jitter(failures: int, draw: float) -> None:
    delay = backoff_ms(failures, POLICY, draw)
    nominal = min(POLICY.backoff_max_ms, POLICY.backoff_base_ms * 2 ** (failures - 1))
    assert nominal * (1 - POLICY.jitter) - 1 <= delay <= nominal * (1 + POLICY.jitter) + 1


def test_entry_round_trips_with_its_intent() -> None:
    for entry in (attempt(), replace(attempt(), intent=None, msgid=str(MSGID), state=SENT)):
        assert decode_entry(encode_entry(entry)) == entry


def test_delivery_record_mirrors_the_entry() -> None:
    sent = on_result(attempt(), SendResult(MSGID), T0 + 1, POLICY).entry
    assert sent is not None
    rec = delivery_of(sent)
    assert (rec.notification_id, rec.state, rec.msgid, rec.attempt, rec.at) == (
        "n1",
        SENT,
        str(MSGID),
        1,
        T0 + 1,
    )


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        DeliveryPolicy(max_attempts=0)


def test_evolve_is_dataclasses_replace() -> None:
    entry = begin_attempt(entry_for(intent(), T0), T0)
    changes = {"state": SENT, "msgid": "7", "errcode": 0, "due": None, "at": T0 + 1}
    assert evolve(entry, **changes) == replace(entry, **changes)  # type: ignore[arg-type]
    assert evolve(entry) == entry and evolve(entry) is not entry
    assert entry.state == ATTEMPT  # the original is untouched
    with pytest.raises(KeyError):
        evolve(entry, colour="red")
