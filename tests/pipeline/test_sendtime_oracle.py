"""The oracle past decide (``tests/pipeline/sendtime.py``) and its pauses (``oracle.py``), checked
by hand: send-time quiet hours and staleness with bounds on the send times, the refusal of
bounds that leave a verdict open, the stale split, open verdicts, the stats rows."""

from __future__ import annotations

import hashlib
import tomllib
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.pipeline.configs import APP_MAIN, TZ_NAME, app_doc
from tests.pipeline.eventlog import Knobs, generate
from tests.pipeline.oracle import at_version, expected
from tests.pipeline.sendtime import (
    Ambiguous,
    Open,
    SendTimes,
    deliveries,
    judge_opens,
    quiet_window,
    stale_split,
    stats_rows,
)
from wxsub.agents.rules.attribution import ref_of
from wxsub.merchants import Merchants, parse_merchants
from wxsub.schemas.internal import Intent, Outcome

NOW = 1_717_245_296_789  # 2024-06-01 12:34:56.789 UTC
S = 1000
MIN = 60 * S
END = (NOW // S + 45) * S  # the quiet window: NOW .. END
TIMES = SendTimes(first_from=NOW, first_by=END - 10 * S, release_by=END + 60 * S)


def merchants(promo_stale_s: int) -> Merchants:
    doc: dict[str, Any] = app_doc(0, 30, caps=1000)
    doc["quiet_hours"] = quiet_window(NOW, END, ZoneInfo(TZ_NAME))
    doc["kinds"]["promotion"]["stale_after_s"] = promo_stale_s
    return parse_merchants({"apps": {APP_MAIN: doc}})


def nid_of(n: int) -> str:
    return hashlib.blake2b(b"%d" % n, digest_size=16).hexdigest()


def intent(n: int, kind: str, occurred_at: int) -> Intent:
    tpl = {"promotion": "TPL_PROMO", "order_status": "TPL_ORDER"}[kind]
    nid = nid_of(n)
    body = {"touser": f"u{n}", "template_id": tpl, "page": "pages/x", "data": {}}
    return Intent(nid, APP_MAIN, f"u{n}", tpl, kind, (f"e{n}",), occurred_at, occurred_at,
                  occurred_at, body)  # fmt: skip


def test_service_goes_at_once_and_marketing_waits_for_the_window_end() -> None:
    m = merchants(promo_stale_s=3600)
    backlog = [intent(1, "order_status", NOW - 5 * MIN), intent(2, "promotion", NOW - 5 * MIN),
               intent(3, "promotion", NOW - 2 * 3600 * S)]  # fmt: skip
    got = deliveries(backlog, m, TIMES)
    assert got.paths == {
        nid_of(1): ("sent",),
        nid_of(2): ("quiet_hours_deferred", "sent"),
        nid_of(3): ("stale",),  # stale at its first attempt: never deferred
    }
    assert set(got.sent) == {nid_of(1), nid_of(2)}
    released = [o for o in got.outcomes if o.notification_id == nid_of(2)][-1]
    assert released.at == END and released.stage == "deliver"


def test_a_deferred_send_past_its_staleness_at_release_ends_stale() -> None:
    m = merchants(promo_stale_s=3600)
    # fresh until END - 5 s: fresh at every first attempt (by END - 10 s), stale at the release
    late = intent(4, "promotion", END - 5 * S - 3600 * S)
    assert deliveries([late], m, TIMES).paths == {nid_of(4): ("quiet_hours_deferred", "stale")}


def test_bounds_that_leave_a_verdict_open_are_refused() -> None:
    m = merchants(promo_stale_s=3600)
    # turns stale between first_from and first_by: stale, or deferred, depending on when
    with pytest.raises(Ambiguous):
        deliveries([intent(5, "promotion", NOW + 5 * S - 3600 * S)], m, TIMES)
    # turns stale between the release and release_by
    with pytest.raises(Ambiguous):
        deliveries([intent(6, "promotion", END + 30 * S - 3600 * S)], m, TIMES)
    # the window outlasts release_by
    short = SendTimes(NOW, END - 10 * S, END - S)
    with pytest.raises(Ambiguous):
        deliveries([intent(7, "promotion", NOW - MIN)], m, short)


def test_the_stale_split_makes_one_deferred_send_stale_and_keeps_one_fresh() -> None:
    stamps = [NOW - 130 * MIN, NOW - 90 * MIN, NOW - 40 * MIN, NOW - 4 * 3600 * S]
    limit = stale_split(stamps, TIMES, END)
    got = deliveries([intent(n, "promotion", t) for n, t in enumerate(stamps)],
                     merchants(limit), TIMES)  # fmt: skip
    assert Counter(got.paths.values()) == {
        ("stale",): 2,
        ("quiet_hours_deferred", "stale"): 1,
        ("quiet_hours_deferred", "sent"): 1,
    }
    with pytest.raises(ValueError, match="no stale_after_s"):
        stale_split([NOW - MIN], TIMES, END)  # nothing left to send fresh


def test_opens_are_judged_per_user_ref() -> None:
    a, b = intent(1, "order_status", NOW), intent(2, "promotion", NOW)
    sent = {a.notification_id: a, b.notification_id: b}
    ra, rb = ref_of(a.notification_id), ref_of(b.notification_id)
    opens = [Open("o1", APP_MAIN, "u1", ra), Open("o2", APP_MAIN, "u1", ra),
             Open("o3", APP_MAIN, "u2", ra), Open("o4", APP_MAIN, "u2", "AAAAAAAAAAAA"),
             Open("o5", APP_MAIN, "u2", rb)]  # fmt: skip
    got = [(o.event_id, o.reason, o.template_id) for o in judge_opens(sent, opens)]
    assert got == [("o1", "opened", "TPL_ORDER"), ("o2", "duplicate", "TPL_ORDER"),
                   ("o3", "unknown_ref", "-"), ("o4", "unknown_ref", "-"),
                   ("o5", "opened", "TPL_PROMO")]  # fmt: skip


def test_stats_rows_count_grants_sends_deferrals_and_opens() -> None:
    m = merchants(promo_stale_s=3600)
    a, b = intent(1, "order_status", NOW - MIN), intent(2, "promotion", NOW - MIN)
    got = deliveries([a, b], m, TIMES)
    grant = Outcome("s1", "subscription", "applied", "decide", APP_MAIN, "u1", "TPL_ORDER",
                    detail="popup accept", at=NOW - 3600 * S)  # fmt: skip
    opens = judge_opens(got.sent, [Open("o1", APP_MAIN, "u1", ref_of(a.notification_id)),
                                   Open("o2", APP_MAIN, "u1", ref_of(a.notification_id)),
                                   Open("o3", APP_MAIN, "u9", "AAAAAAAAAAAA")])  # fmt: skip
    rows = stats_rows([grant, *got.outcomes], opens, m)
    assert rows == {
        (APP_MAIN, "TPL_ORDER"): {"granted": 1, "sent": 1, "opened": 1, "open:duplicate": 1},
        (APP_MAIN, "TPL_PROMO"): {"deferred": 1, "sent": 1},
        (APP_MAIN, "-"): {"open:unknown_ref": 1},
    }


def test_a_pause_ends_exactly_its_phase_candidates_of_its_kind() -> None:
    log = generate(Knobs(now_ms=NOW, seed=7, users=30, orders=60, skus=8, stores=2))
    v1 = at_version(parse_merchants(tomllib.loads(log.merchants_toml)), 1)
    v2 = at_version(parse_merchants(tomllib.loads(log.changed_toml)), 2)
    free = expected(log.entries, v1, NOW, changes={2: v2})
    why = "operator: test"
    paused = expected(log.entries, v1, NOW, changes={2: v2},
                      pauses={1: {(APP_MAIN, "logistics"): why}, 2: {}})  # fmt: skip
    ended = [o for o in paused.all_outcomes if o.reason == "paused"]
    assert ended and {(o.appid, o.kind, o.config_version) for o in ended} == {
        (APP_MAIN, "logistics", 1)
    }
    assert all(o.detail == f"kind paused: {why}" for o in ended)
    # what the pause ended was an intent (or collapsed into one) without it; nothing else moved
    gone = {n: i for n, i in free.intents.items() if n not in paused.intents}
    assert gone and {(i.appid, i.kind, i.config_version) for i in gone.values()} == {
        (APP_MAIN, "logistics", 1)
    }
    assert {n: i for n, i in paused.intents.items() if n not in free.intents} == {}
    # phase 2 sends logistics again, and no credit was spent on the paused ones
    assert [i for i in paused.intents.values() if i.kind == "logistics" and i.config_version == 2]
    later = {n: i.body for n, i in free.intents.items() if i.config_version == 2}
    assert {n: i.body for n, i in paused.intents.items() if i.config_version == 2} == later


def test_intents_decided_while_deliver_runs_are_bounded_by_the_release() -> None:
    m = merchants(promo_stale_s=3600)
    service = intent(8, "order_status", NOW - MIN)
    assert deliveries([], m, TIMES, later=[service]).paths == {nid_of(8): ("sent",)}
    # a promotion decided during the window: deferred, or sent after it, depending on when
    with pytest.raises(Ambiguous):
        deliveries([], m, TIMES, later=[intent(9, "promotion", NOW - MIN)])
