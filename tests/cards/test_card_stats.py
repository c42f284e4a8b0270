"""Card results in ``wxsub stats``: order events a service card took are counted as
``card:<result>`` (not as suppressions), split into the row's ``card`` group, shown in the table."""

from __future__ import annotations

from tests.agents.factory import APPID, T0, TPL, config
from wxsub.agents.rules.stats import add_rows, split_row, update
from wxsub.schemas.internal import Outcome
from wxsub.stats import StatsTable, format_table


def test_card_reasons_are_card_results_not_suppressions() -> None:
    cfg = config()
    rows = []
    for reason in ("card_update", "card_update", "card_replaced", "card_illegal", "card_ended"):
        o = Outcome("e", "order_status", reason, "orders", appid=APPID, at=T0)
        upd = update(o, cfg, None, 7 * 86_400_000)
        assert upd.key is not None and upd.key.template == TPL["order_status"]
        rows.append(dict.fromkeys(upd.counters, 1))
    plain = Outcome("x", "order_status", "no_rule", "orders", appid=APPID, at=T0)
    rows.append(dict.fromkeys(update(plain, cfg, None, 0).counters, 1))
    doc = split_row(add_rows(rows))
    assert doc["card"] == {"ended": 1, "illegal": 1, "replaced": 1, "update": 2}
    assert doc["suppressed"] == {"no_rule": 1}


def test_the_table_has_a_card_column_and_breakdown() -> None:
    from wxsub.agents.rules.stats import RowKey

    key = RowKey(APPID, TPL["order_status"], "2024-05-01")
    table = StatsTable({key: {"sent": 1, "card:update": 3, "card:ended": 1}})
    text = format_table(table)
    head, _, row, *_ = text.splitlines()
    assert head.split()[-4:] == ["card", "rejects", "feedback", "open%"]
    assert row.split()[-4:] == ["4", "0", "0", "0.0"]
    assert "card ended=1, card update=3" in text
