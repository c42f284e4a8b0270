"""Message classes: service (order, logistics, watched-item alerts) vs marketing (promotion)."""

from __future__ import annotations

import copy

import pytest

from tests.agents.factory import BASE, TPL, config
from wxsub.errors import ConfigError


def test_default_class_by_kind() -> None:
    cfg = config()
    classes = {name: kc.message_class for name, kc in cfg.kinds.items()}
    assert classes == {
        "order_status": "service",
        "logistics": "service",
        "price_drop": "service",
        "restock": "service",
        "promotion": "marketing",
    }
    assert [n for n, kc in cfg.kinds.items() if kc.marketing] == ["promotion"]


def test_a_kind_may_be_declared_marketing_and_variants_inherit() -> None:
    kinds = copy.deepcopy(BASE["kinds"])
    kinds["price_drop"]["class"] = "marketing"  # a shop whose drops read like ads
    assert config(kinds=kinds).kinds["price_drop"].marketing


@pytest.mark.parametrize(
    ("change", "key"),
    [
        # a promotion is marketing, whatever it is called
        ({"promotion": {"class": "service"}}, "apps.wxapp.kinds.promotion.class"),
        ({"restock": {"class": "ads"}}, "apps.wxapp.kinds.restock.class"),
        # marketing through the order template (declared service by order_status)
        ({"promotion": {"template_id": TPL["order_status"], "data": {
            "character_string1": "{promotion_id}", "phrase2": "{title}", "amount3": "{discount}",
            "thing4": "{title}", "time5": "{starts_at}"}}},
         "apps.wxapp.kinds.promotion.class"),
    ],
)  # fmt: skip
def test_validation_refuses_marketing_through_a_service_template(
    change: dict[str, dict[str, object]], key: str
) -> None:
    kinds = copy.deepcopy(BASE["kinds"])
    for kind, fields in change.items():
        kinds[kind].update(fields)
    with pytest.raises(ConfigError) as err:
        config(kinds=kinds)
    assert err.value.key == key
