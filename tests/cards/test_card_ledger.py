"""The card stage's decisions (wxsub/agents/rules/card_ledger.py), pure: the queue in seq order,
one call at a time after a durable attempt, answers, in-doubt settled by getUserNotify, 85437
"not visible yet", refusals, -1004, and the windows that bound every entry."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from wxsub.agents.rules import card_ledger as L
from wxsub.agents.rules.card_ledger import CardEntry
from wxsub.agents.rules.cards import ACTIVATE_WINDOW_MS, UPDATE_WINDOW_MS, CardOp
from wxsub.errors import InDoubtError, PermanentError, RetryableError
from wxsub.wechat.cards import CodeNotVisible

PAID_S = 1_717_000_000
NOW = PAID_S * 1000 + 120_000


def op(seq: int, status: int) -> CardOp:
    content: dict[str, Any] = {"cur_status": status, "wxa_path_query": "p"}
    return CardOp("wx1", "o1", "order1", "4200", 2001, seq, status, content, f"e{seq}", NOW,
                  1005, PAID_S)  # fmt: skip


def queued(*ops: CardOp) -> CardEntry:
    entry: CardEntry | None = None
    for o in ops:
        entry = L.enqueue(entry, o, NOW).entry
    assert entry is not None
    return entry


def call(entry: CardEntry, answer: Any, now: int = NOW) -> L.Change:
    assert L.sendable(entry, now)
    return L.on_answer(L.begin(entry, now), answer, now)


def test_queue_in_seq_order_duplicates_and_after_the_end() -> None:
    entry = queued(op(1, 1), op(2, 4))
    assert [o.seq for o in entry.queue] == [1, 2] and entry.last_seq == 2 and entry.due == NOW
    # one order key, one partition, one producer: ops arrive in seq order; a lower seq is a
    # redelivery
    assert L.enqueue(queued(op(2, 4)), op(1, 1), NOW).result == "duplicate"
    assert L.enqueue(entry, op(2, 4), NOW).result == "duplicate"
    assert L.enqueue(entry, op(1, 1), NOW).result == "duplicate"
    done = replace(entry, phase="done", queue=())
    dropped = L.enqueue(done, op(3, 6), NOW)
    assert (dropped.result, dropped.reason) == ("dropped", "done") and not dropped.entry.queue  # type: ignore[union-attr]


def test_one_call_at_a_time_after_an_attempt() -> None:
    entry = queued(op(1, 1), op(2, 4))
    attempt = L.begin(entry, NOW)
    assert attempt.phase == "attempt" and attempt.attempts == 1 and attempt.due == NOW
    assert not L.sendable(attempt, NOW)  # nothing more while one is in flight
    assert L.check_json(attempt) == {"pay_amount": 1005, "pay_time": PAID_S}  # activation only


def test_activation_then_update_then_terminal() -> None:
    entry = queued(op(1, 1), op(2, 4), op(3, 8))
    ch = call(entry, None)
    assert ch.result == "activated" and ch.entry is not None
    e = ch.entry
    assert (e.confirmed, e.activated_at, e.phase, len(e.queue)) == (1, NOW, "idle", 2)
    assert L.check_json(e) is None  # updates carry no check_json
    ch = call(e, None)
    assert ch.result == "updated" and ch.entry is not None and ch.entry.confirmed == 4
    ch = call(ch.entry, None)
    assert ch.entry is not None and ch.entry.phase == "done" and ch.entry.confirmed == 8
    assert ch.entry.due == NOW + UPDATE_WINDOW_MS  # deleted at the end of its window


def test_lost_answer_is_in_doubt_and_settled_by_get_user_notify() -> None:
    entry = queued(op(1, 1))
    ch = call(entry, InDoubtError("timeout"))
    assert ch.result == "in_doubt" and ch.entry is not None
    doubt = ch.entry
    assert doubt.phase == "in_doubt" and doubt.due == NOW + L.RECONCILE_AFTER_MS
    applied = L.on_info(doubt, dict(op(1, 1).content), 0, NOW)
    assert applied.result == "reconciled" and applied.entry is not None
    assert applied.entry.confirmed == 1 and not applied.entry.queue
    resend = L.on_info(doubt, None, 0, NOW)  # WeChat has nothing: not applied, sent again
    assert resend.result == "resent" and resend.entry is not None
    assert resend.entry.phase == "retry" and L.sendable(resend.entry, NOW)
    other = L.on_info(doubt, {"cur_status": 7}, 0, NOW)  # another content: not applied
    assert other.result == "resent"
    refused = L.on_info(doubt, None, 10, NOW)  # code_state 10: the user refused the code
    assert refused.result == "refused" and refused.tell is not None


def test_a_crash_leftover_is_in_doubt_now() -> None:
    attempt = L.begin(queued(op(1, 1)), NOW)
    ch = L.on_leftover(attempt, NOW + 5)
    assert (ch.result, ch.reason) == ("in_doubt", "leftover")
    assert ch.entry is not None and ch.entry.phase == "in_doubt" and ch.entry.due == NOW + 5


def test_not_visible_yet_retries_after_a_minute_then_falls_back() -> None:
    entry = queued(op(1, 1))
    ch = call(entry, RetryableError("invalid notify_code", 85437))
    assert ch.result == "not_visible" and ch.entry is not None
    assert ch.entry.phase == "retry" and ch.entry.due == NOW + L.NOT_VISIBLE_RETRY_MS
    late = PAID_S * 1000 + ACTIVATE_WINDOW_MS - 30_000
    ch = call(entry, RetryableError("invalid notify_code", 85437), late)
    assert (ch.result, ch.reason) == ("fallback", "activation window")
    assert ch.tell is not None and ch.tell.result == "fallback"


def test_not_visible_retries_are_bounded_by_the_window_not_the_attempt_cap() -> None:
    """85437 every minute for 30 minutes (far past MAX_ATTEMPTS): still retried; a transient
    error in between keeps its own budget; at 24 h after payment: fallback, the documented
    reason."""
    entry = queued(op(1, 1))
    now = NOW
    for _ in range(3 * L.MAX_ATTEMPTS):
        assert entry.due is not None and entry.due <= now
        ch = call(entry, CodeNotVisible("invalid notify_code", 85437), now)
        assert (ch.result, ch.tell) == ("not_visible", None) and ch.entry is not None
        entry = ch.entry
        assert entry.phase == "retry" and entry.due == now + L.NOT_VISIBLE_RETRY_MS
        assert entry.attempts == 0  # not counted
        now = entry.due
    ch = call(entry, RetryableError("busy", -1), now)
    assert (ch.result, ch.reason) == ("retry", "-1") and ch.entry is not None
    assert ch.entry.attempts == 1
    end = PAID_S * 1000 + ACTIVATE_WINDOW_MS
    ch = call(ch.entry, CodeNotVisible("invalid notify_code", 85437), end - 61_000)
    assert ch.result == "not_visible" and ch.entry is not None  # one more minute fits
    ch = call(ch.entry, CodeNotVisible("invalid notify_code", 85437), end - 1_000)
    assert (ch.result, ch.reason) == ("fallback", "activation window")
    assert ch.tell is not None and (ch.tell.result, ch.tell.detail) == (
        "fallback", "activation window",
    )  # fmt: skip
    assert ch.entry is not None and ch.entry.phase == "fallback" and ch.entry.due == end


def test_not_visible_after_activation_is_an_ordinary_bounded_retry() -> None:
    live = call(queued(op(1, 1), op(2, 4)), None).entry
    assert live is not None
    tired = replace(live, attempts=L.MAX_ATTEMPTS - 1)
    ch = call(tired, CodeNotVisible("invalid notify_code", 85437))
    assert (ch.result, ch.reason) == ("failed", "85437")  # this update dropped, the card goes on


def test_transient_errors_back_off_and_give_up() -> None:
    entry = queued(op(1, 1))
    ch = call(entry, RetryableError("busy", -1))
    assert (ch.result, ch.reason) == ("retry", "-1") and ch.entry is not None
    assert ch.entry.due == NOW + 2_000
    tired = replace(entry, attempts=L.MAX_ATTEMPTS - 1)
    ch = call(tired, RetryableError("busy", -1))
    assert ch.result == "fallback" and ch.tell is not None  # activation never made it


@pytest.mark.parametrize("errcode", [85433, 85439, 85440, 40003])
def test_refusals_activation_falls_back_update_is_dropped(errcode: int) -> None:
    entry = queued(op(1, 1), op(2, 4), op(3, 6))
    ch = call(entry, PermanentError("no", errcode))
    assert (ch.result, ch.reason) == ("fallback", str(errcode))
    assert ch.tell is not None and (ch.tell.order_id, ch.tell.code) == ("order1", "4200")
    assert ch.entry is not None and ch.entry.phase == "fallback" and not ch.entry.queue
    live = call(entry, None).entry
    assert live is not None
    ch = call(live, PermanentError("no", errcode))
    assert (ch.result, ch.reason, ch.tell) == ("failed", str(errcode), None)
    assert ch.entry is not None and [o.seq for o in ch.entry.queue] == [3]  # the next goes on
    assert L.sendable(ch.entry, NOW)


def test_failure_events() -> None:
    live = call(queued(op(1, 1), op(2, 4)), None).entry
    assert live is not None
    for fail_ret in (-1005, -10002, -10001, -1003):
        assert L.on_failure_event(live, fail_ret).entry is live  # counted, card goes on
    ch = L.on_failure_event(live, -1004)
    assert ch.result == "refused" and ch.tell is not None and ch.tell.result == "refused"
    assert ch.entry is not None and ch.entry.phase == "refused" and not ch.entry.queue
    assert L.on_failure_event(ch.entry, -1004).result == ""  # once
    assert L.enqueue(ch.entry, op(3, 6), NOW).result == "dropped"  # no update after -1004


def test_windows_bound_every_entry() -> None:
    never = queued(op(1, 1))
    end = PAID_S * 1000 + ACTIVATE_WINDOW_MS
    assert L.on_window(never, end - 1) is None
    ch = L.on_window(never, end)
    assert ch is not None and (ch.result, ch.reason) == ("fallback", "activation window")
    assert ch.entry is not None
    gone = L.on_window(ch.entry, ch.entry.due or 0)
    assert gone is not None and gone.entry is None  # an ended entry is deleted at its due
    live = call(queued(op(1, 1), op(2, 4)), None).entry
    assert live is not None
    ch = L.on_window(live, NOW + UPDATE_WINDOW_MS)
    assert ch is not None and ch.result == "expired" and ch.entry is not None
    assert ch.entry.phase == "done" and not ch.entry.queue


def test_entries_round_trip() -> None:
    import orjson

    from wxsub.schemas.internal import encode_internal

    entry = queued(op(1, 1), op(2, 4))
    assert L.decode_entry(orjson.loads(encode_internal(entry))) == entry
