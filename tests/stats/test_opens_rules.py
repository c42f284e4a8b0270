"""Open attribution rules: the ref on a sent page, the join verdicts, the funnel labels."""

from __future__ import annotations

import re

from tests.agents.factory import APPID, T0, TPL
from tests.stats.test_rules import CFG, WEEK, send_outcomes, sub_outcome
from wxsub.agents.rules import attribution as att
from wxsub.agents.rules.stats import app_label, funnel, split_row, update
from wxsub.schemas.internal import Outcome, notification_id

NID = notification_id(APPID, "o1", "TPL", "ev-1")


def test_the_ref_is_short_deterministic_and_url_safe() -> None:
    ref = att.ref_of(NID)
    assert re.fullmatch(r"[A-Za-z0-9_-]{12}", ref)
    assert att.ref_of(NID) == ref
    assert att.ref_of(notification_id(APPID, "o1", "TPL", "ev-2")) != ref
    assert re.fullmatch(r"[A-Za-z0-9_-]{12}", att.ref_of("not-hex"))
    refs = {att.ref_of(notification_id(APPID, f"o{i}", "TPL", "ev")) for i in range(20_000)}
    assert len(refs) == 20_000


def test_the_ref_is_appended_to_the_page_only() -> None:
    ref = att.ref_of(NID)
    body = {"touser": "o1", "page": "pages/order/detail?id=7", "data": {}}
    assert att.with_ref(body, NID)["page"] == f"pages/order/detail?id=7&wxref={ref}"
    assert att.with_ref({"page": "pages/index"}, NID)["page"] == f"pages/index?wxref={ref}"
    assert "page" not in att.with_ref({"touser": "o1"}, NID)
    assert body["page"] == "pages/order/detail?id=7"  # not changed in place


def test_open_verdicts() -> None:
    kept = att.SentRef("TPL", "order_status", T0)
    assert att.judge_open(None, T0) == "unknown_ref"
    assert att.judge_open(kept, T0 + 1000) == "opened"
    assert att.judge_open(att.SentRef("TPL", "order_status", T0, T0 + 5), T0 + 9) == "duplicate"
    assert att.judge_open(kept, T0 + att.OPEN_WINDOW_MS) == "opened"
    assert att.judge_open(kept, T0 + att.OPEN_WINDOW_MS + 1) == "unknown_ref"
    assert att.decode_ref(att.encode_ref(kept)) == kept


def test_a_refs_window_is_the_one_at_its_send() -> None:
    hour = att.window_ms(3600)
    short = att.SentRef("TPL", "order_status", T0, window_ms=hour)
    assert short.until == T0 + 3_600_000
    assert att.judge_open(short, T0 + hour) == "opened"
    assert att.judge_open(short, T0 + hour + 1) == "unknown_ref"
    assert att.decode_ref(att.encode_ref(short)) == short
    # a ref kept before windows were per app (4 fields) has the default window
    legacy = att.decode_ref(b'["TPL", "order_status", %d, 0]' % T0)
    assert legacy == att.SentRef("TPL", "order_status", T0, 0, att.OPEN_WINDOW_MS)


def test_an_open_is_held_within_its_grace_and_the_users_bound() -> None:
    grace = 125_000
    assert att.hold_until(T0, T0, grace, 0) == T0 + grace
    assert att.hold_until(T0 - 5_000, T0, grace, 0) == T0 + grace - 5_000  # from event time
    assert att.hold_until(T0 + 60_000, T0, grace, 0) == T0 + grace  # a future event time: now
    assert att.hold_until(T0 - grace, T0, grace, 0) is None  # too old: unknown_ref at once
    assert att.hold_until(T0, T0, 0, 0) is None  # no grace
    assert att.hold_until(T0, T0, grace, att.MAX_HELD_PER_USER - 1) == T0 + grace
    assert att.hold_until(T0, T0, grace, att.MAX_HELD_PER_USER) is None


def test_held_opens_are_judged_when_their_send_arrives() -> None:
    opens = (att.HeldOpen("o1", T0 + 10), att.HeldOpen("o2", T0 + 20))
    held = att.Held(T0 + 125_000, APPID, "o1", "REF", opens)
    assert att.decode_held(att.encode_held(held)) == held
    kept = att.SentRef("TPL", "order_status", T0 + 50)  # the send's time after the opens'
    after, verdicts = att.judge_held(kept, opens)
    assert verdicts == ["opened", "duplicate"]
    assert after == att.SentRef("TPL", "order_status", T0 + 50, T0 + 10)
    opened = att.SentRef("TPL", "order_status", T0, T0 + 1)
    assert att.judge_held(opened, opens) == (opened, ["duplicate", "duplicate"])
    old = att.SentRef("TPL", "order_status", T0 - att.OPEN_WINDOW_MS - 100)
    assert att.judge_held(old, opens[:1]) == (old, ["unknown_ref"])


def test_funnel_labels_of_sends_grants_rejects_and_suppressions() -> None:
    sent, _ = send_outcomes()
    (step,) = funnel(sent, update(sent, CFG, None, WEEK), CFG)
    assert step == (False, (APPID, TPL["order_status"], "order_status", "sent"))
    accept = sub_outcome("popup", "accept")
    (step,) = funnel(accept, update(accept, CFG, None, WEEK), CFG)
    assert step == (False, (APPID, TPL["order_status"], "order_status", "granted"))
    reject = sub_outcome("change", "reject", T0 + 1000)
    steps = funnel(reject, update(reject, CFG, T0, WEEK), CFG)
    assert steps == [(False, (APPID, TPL["order_status"], "order_status", "rejected_after_send"))]
    capped = Outcome(
        "e", "order_status", "capped", "decide", APPID, "o1", TPL["order_status"], at=T0
    )
    (step,) = funnel(capped, update(capped, CFG, None, WEEK), CFG)
    assert step == (True, (APPID, TPL["order_status"], "order_status", "capped"))


def test_unknown_apps_are_one_label_and_rows_show_opens() -> None:
    assert app_label("wxwhatever", None) == "other"
    assert app_label(APPID, CFG) == APPID
    doc = split_row({"sent": 3, "opened": 2, "open:duplicate": 1})
    assert (doc["opened"], doc["open"]) == (2, {"duplicate": 1})


def test_the_table_shows_the_open_rate_per_row_and_in_total() -> None:
    from wxsub.agents.rules.stats import RowKey
    from wxsub.stats import StatsTable, format_table

    a = RowKey("wxA", "TPL1", "2024-05-01")
    b = RowKey("wxA", "TPL2", "2024-05-01")
    text = format_table(StatsTable({a: {"sent": 4, "opened": 1}, b: {"granted": 2}}))
    head, _, row_a, row_b, total = text.splitlines()[:5]
    assert head.split()[-1] == "open%"
    assert row_a.split()[-1] == "25.0"
    assert row_b.split()[-1] == "-"  # nothing sent: no rate
    assert total.split()[-1] == "25.0"
