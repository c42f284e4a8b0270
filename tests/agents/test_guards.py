"""Send-time guards (rules/guards.py): quiet hours and staleness on the wall clock of every send,
the first and each retry, and a paused kind ends the send."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from tests.agents.factory import APPID, BASE, TPL, TZ, config
from wxsub.agents.rules.delivery import DeliveryPolicy, LedgerState, StepResult, entry_for, on_due
from wxsub.agents.rules.guards import at_send
from wxsub.schemas.internal import Intent, OutcomeReason

POLICY = DeliveryPolicy()


def local_ms(h: int, m: int = 0, day: int = 1) -> int:
    return int(dt.datetime(2024, 5, day, h, m, tzinfo=TZ).timestamp() * 1000)


def intent(kind: str, occurred_at: int) -> Intent:
    tpl = TPL[kind]
    return Intent(
        "n1", APPID, "o1", tpl, kind, ("e1",), occurred_at, occurred_at, occurred_at,
        {"touser": "o1", "template_id": tpl, "data": {}}, 3,
    )  # fmt: skip


def test_backlog_crossing_quiet_start_is_deferred_at_send() -> None:
    cfg = config()  # quiet 22:00-08:00, Asia/Shanghai
    # decided at 21:59 (event time outside quiet hours), reaches deliver at 22:05
    entry = entry_for(intent("price_drop", local_ms(21, 59)), local_ms(22, 5))
    step = at_send(entry, cfg, local_ms(22, 5))
    assert step is not None and step.entry is not None and step.outcome is not None
    assert step.entry.state == LedgerState.RETRY
    assert step.entry.due == local_ms(8, 0, day=2)
    assert step.entry.intent is not None  # kept, to be sent at release
    assert step.outcome.reason == OutcomeReason.QUIET_HOURS_DEFERRED
    assert step.outcome.stage == "deliver" and step.outcome.config_version == 3
    assert step.result == StepResult.DEFERRED and step.correction is None
    # at release the timer picks it up and the guard lets it go
    due = on_due(step.entry, local_ms(8, 0, day=2), None, POLICY)
    assert due.send and due.entry is not None
    assert at_send(due.entry, cfg, local_ms(8, 0, day=2)) is None


def test_service_kinds_ignore_quiet_hours() -> None:
    entry = entry_for(intent("order_status", local_ms(23)), local_ms(23, 1))
    assert at_send(entry, config(), local_ms(23, 1)) is None


def test_retry_gone_stale_ends_with_credit_back() -> None:
    cfg = config()  # order_status stale_after_s = 1 day
    entry = entry_for(intent("order_status", local_ms(10)), local_ms(10))
    retry = replace(entry, state=LedgerState.RETRY, attempts=2, failures=2)
    assert at_send(retry, cfg, local_ms(10, day=2)) is None  # exactly 1 day: not stale
    step = at_send(retry, cfg, local_ms(10, 1, day=2))
    assert step is not None and step.entry is not None and step.outcome is not None
    assert step.entry.state == LedgerState.FAILED and step.entry.intent is None
    assert step.entry.due is None and step.entry.errcode is None
    assert step.outcome.reason == OutcomeReason.STALE and "at send" in step.outcome.detail
    assert step.correction is not None and step.correction.action == "restore"
    assert not step.send


def test_quiet_release_that_is_stale_by_then_ends_stale() -> None:
    promo = {**BASE["kinds"]["promotion"], "stale_after_s": 3600}
    cfg = config(kinds={**BASE["kinds"], "promotion": promo})
    entry = entry_for(intent("promotion", local_ms(22, 30)), local_ms(22, 30))
    deferred = at_send(entry, cfg, local_ms(22, 30))
    assert deferred is not None and deferred.entry is not None
    released = at_send(deferred.entry, cfg, local_ms(8, 0, day=2))
    assert released is not None and released.outcome is not None
    assert released.outcome.reason == OutcomeReason.STALE


def test_paused_kind_ends_before_anything_else() -> None:
    entry = entry_for(intent("order_status", local_ms(10)), local_ms(10))
    step = at_send(entry, config(), local_ms(10), paused="43107 from WeChat")
    assert step is not None and step.outcome is not None and step.entry is not None
    assert step.outcome.reason == OutcomeReason.PAUSED and "43107" in step.outcome.detail
    assert step.entry.state == LedgerState.FAILED
    assert step.correction is not None


def test_unconfigured_app_or_settled_entry_passes() -> None:
    entry = entry_for(intent("promotion", local_ms(23)), local_ms(23))
    assert at_send(entry, None, local_ms(23)) is None
    assert at_send(replace(entry, intent=None), config(), local_ms(23)) is None
