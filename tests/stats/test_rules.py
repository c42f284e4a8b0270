"""The stats rules on outcomes made by the real rule functions (so a format change shows here)."""

from __future__ import annotations

import datetime as dt

from tests.agents.factory import APPID, HOUR, OPENID, T0, TPL, cand, config, sub
from wxsub.agents.rules import decide as dec
from wxsub.agents.rules import delivery
from wxsub.agents.rules.stats import (
    FEEDBACK_WINDOW_MS,
    NO_TEMPLATE,
    RowKey,
    StatsRecord,
    add_rows,
    day_of,
    decode_record,
    encode_record,
    row_key,
    split_row,
    update,
)
from wxsub.agents.rules.subscriptions import UserState, apply_subscription
from wxsub.errors import PermanentError
from wxsub.schemas.internal import Outcome
from wxsub.wechat.client import SendResult

CFG = config()
DAY = "2024-05-01"  # T0 is 10:00 in Shanghai
WEEK = FEEDBACK_WINDOW_MS


def sub_outcome(event: str, status: str | None, t: int = T0) -> Outcome:
    _, out = apply_subscription(
        UserState(), sub(TPL["order_status"], event=event, status=status, t=t), CFG, t
    )
    return out


def send_outcomes(t: int = T0) -> tuple[Outcome, Outcome]:
    """(sent, failed 40003) outcomes of two deliveries of an order-status intent."""
    state = UserState(credits={TPL["order_status"]: 2})
    decision = dec.decide(state, cand(), CFG, t)
    (intent,) = decision.intents
    attempt = delivery.begin_attempt(delivery.entry_for(intent, t), t)
    policy = delivery.DeliveryPolicy()
    sent = delivery.on_result(attempt, SendResult(123), t, policy).outcome
    failed = delivery.on_result(attempt, PermanentError("bad openid", 40003), t, policy).outcome
    assert sent is not None and failed is not None
    return sent, failed


def test_a_popup_accept_grants_a_credit_and_a_duplicate_does_not() -> None:
    out = sub_outcome("popup", "accept")
    upd = update(out, CFG, None, WEEK)
    assert upd.key == RowKey(APPID, TPL["order_status"], DAY)
    assert upd.counters == ("granted",)
    state, _ = apply_subscription(UserState(), sub(TPL["order_status"]), CFG, T0)
    _, dup = apply_subscription(state, sub(TPL["order_status"]), CFG, T0)
    assert dup.reason == "duplicate"
    assert update(dup, CFG, None, WEEK).counters == ()


def test_sends_count_ok_and_failed_by_errcode_and_remember_the_send() -> None:
    sent, failed = send_outcomes()
    ok = update(sent, CFG, None, WEEK)
    assert ok.counters == ("sent",) and ok.last_send == T0
    bad = update(failed, CFG, None, WEEK)
    assert bad.counters == ("failed:40003",) and bad.last_send is None


def test_a_reject_after_a_send_is_feedback_once_and_only_inside_the_window() -> None:
    for event in ("popup", "change"):
        out = sub_outcome(event, "reject", t=T0 + HOUR)
        assert update(out, CFG, None, WEEK).counters == ("rejects",)
        fb = update(out, CFG, T0, WEEK)
        assert fb.counters == ("rejects", "feedback") and fb.forget_send
        late = sub_outcome(event, "reject", t=T0 + WEEK + 1)
        assert update(late, CFG, T0, WEEK).counters == ("rejects",)


def test_suppressions_by_reason_deferrals_apart_and_template_from_the_config() -> None:
    muted = UserState(credits={TPL["order_status"]: 1}, muted_templates=(TPL["order_status"],))
    (out,) = dec.decide(muted, cand(), CFG, T0).outcomes
    assert update(out, CFG, None, WEEK).counters == ("suppressed:muted",)
    orphan = Outcome("l1", "logistics", "orphan", "orders", appid=APPID, at=T0)
    assert row_key(orphan, CFG) == RowKey(APPID, TPL["logistics"], DAY)
    unknown = Outcome("x", "order_status", "no_template", "decide", appid="wxother", at=T0)
    assert row_key(unknown, None) == RowKey("wxother", NO_TEMPLATE, "2024-05-01")
    deferred = Outcome("p", "promotion", "quiet_hours_deferred", "decide", appid=APPID, at=T0)
    assert update(deferred, CFG, None, WEEK).counters == ("deferred",)
    watch = Outcome("w", "watch", "applied", "products", appid=APPID, openid=OPENID, at=T0)
    assert update(watch, CFG, None, WEEK).key is None


def test_in_doubt_and_reconciliation() -> None:
    sent, _ = send_outcomes()
    doubt = Outcome(**{**_fields(sent), "reason": "in_doubt"})
    assert update(doubt, CFG, None, WEEK).counters == ("in_doubt",)
    settled = Outcome(**{**_fields(sent), "reason": "reconciled_sent"})
    assert update(settled, CFG, None, WEEK).counters == ("sent", "reconciled")
    refused = Outcome(**{**_fields(sent), "reason": "reconciled_failed", "errcode": 43101})
    assert update(refused, CFG, None, WEEK).counters == ("failed:43101", "reconciled")


def test_the_day_is_the_merchants_local_day() -> None:
    late_evening_utc = int(dt.datetime(2024, 5, 1, 20, 0, tzinfo=dt.UTC).timestamp() * 1000)
    assert day_of(late_evening_utc, CFG.timezone) == "2024-05-02"
    assert day_of(late_evening_utc, None) == "2024-05-01"


def test_rows_add_up_and_split_into_groups() -> None:
    row = add_rows([{"sent": 2, "failed:40003": 1}, {"sent": 1, "suppressed:capped": 4}])
    assert row == {"sent": 3, "failed:40003": 1, "suppressed:capped": 4}
    doc = split_row(row)
    assert doc["sent"] == 3 and doc["granted"] == 0
    assert doc["failed"] == {"40003": 1} and doc["suppressed"] == {"capped": 4}


def test_the_topic_record_round_trips() -> None:
    rec = StatsRecord(RowKey(APPID, "TPL", DAY), 3, {"sent": 5}, T0)
    assert rec.topic_key == f"{APPID}|TPL|{DAY}|3".encode()
    assert decode_record(encode_record(rec)) == rec
    assert RowKey.decode(rec.key.encode()) == rec.key


def _fields(o: Outcome) -> dict[str, object]:
    return {name: getattr(o, name) for name in o.__slots__}
