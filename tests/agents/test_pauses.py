"""Auto-pause rules (rules/pauses.py): which errcodes pause, feedback crossing the threshold,
the table of pauses in force, and the record's round trip."""

from __future__ import annotations

import pytest

from tests.agents.factory import APPID, TPL, config
from wxsub.agents.rules.pauses import (
    PauseRecord,
    Thresholds,
    decode_pause,
    encode_pause,
    feedback_trips,
    kinds_of_template,
    on_errcode,
    paused_table,
)
from wxsub.agents.rules.stats import update
from wxsub.schemas.internal import Outcome

T = Thresholds(reject_rate=0.1, min_sends=20)


@pytest.mark.parametrize(("errcode", "paused"), [(43107, True), (45168, True), (43101, False),
                                                 (None, False), (0, False)])  # fmt: skip
def test_errcodes_that_pause(errcode: int | None, paused: bool) -> None:
    rec = on_errcode(APPID, "promotion", errcode, 5)
    assert (rec is not None) == paused
    if rec is not None:
        assert rec.paused and rec.source == "wechat" and rec.errcode == errcode
        assert decode_pause(encode_pause(rec)) == rec
        assert rec.key == f"{APPID}|promotion".encode()


def test_feedback_pauses_only_when_the_row_crosses() -> None:
    cfg = config()
    tpl = TPL["price_drop"]
    trips = feedback_trips({"sent": 20, "feedback": 1}, {"sent": 20, "feedback": 2}, APPID, tpl,
                           cfg, T, 9)  # fmt: skip
    assert [(p.kind, p.source, p.paused) for p in trips] == [("price_drop", "feedback", True)]
    assert "2 rejects after 20 sends" in trips[0].reason
    # already over (lifted by an operator): no new pause until another row crosses
    assert feedback_trips({"sent": 20, "feedback": 2}, {"sent": 20, "feedback": 3}, APPID, tpl,
                          cfg, T, 9) == ()  # fmt: skip
    # too few sends to judge
    assert feedback_trips({"sent": 5}, {"sent": 5, "feedback": 5}, APPID, tpl, cfg, T, 9) == ()
    # a template no kind uses, an unknown app
    assert feedback_trips({"sent": 20}, {"sent": 20, "feedback": 5}, APPID, "X", cfg, T, 9) == ()
    assert feedback_trips({"sent": 20}, {"sent": 20, "feedback": 5}, APPID, tpl, None, T, 9) == ()


def test_kinds_of_template_include_by_status_variants() -> None:
    cfg = config()
    assert kinds_of_template(cfg, TPL["order_status"]) == ("order_status",)


def test_latest_record_decides_and_lifts_end_pauses() -> None:
    a = PauseRecord(APPID, "promotion", True, "43107", "wechat", 1, 43107)
    b = PauseRecord(APPID, "promotion", False, "lifted", "operator", 2)
    c = PauseRecord(APPID, "restock", True, "feedback", "feedback", 3)
    assert paused_table([a, b, c]) == {(APPID, "restock"): c}
    assert paused_table([b, a]) == {(APPID, "promotion"): a}


def test_thresholds_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Thresholds(reject_rate=0)
    with pytest.raises(ValueError):
        Thresholds(min_sends=0)


def test_stats_count_send_time_guards() -> None:
    def o(reason: str) -> Outcome:
        return Outcome("e1", "promotion", reason, "deliver", APPID, "o1", TPL["promotion"],
                       "n1", None, "", 1_714_528_800_000)  # fmt: skip

    cfg = config()
    assert update(o("stale"), cfg, None, 1).counters == ("suppressed:stale",)
    assert update(o("paused"), cfg, None, 1).counters == ("suppressed:paused",)
    assert update(o("quiet_hours_deferred"), cfg, None, 1).counters == ("deferred",)
