"""Two small sections of the merchant config: product alerts and feedback pause thresholds.

```toml
[apps.wx1.alerts]
restock_limit = true     # a restock tells at most ceil(new_stock * restock_factor) watchers
restock_factor = 1.0     # > 0 and <= 1000 (default 1.0: never more watchers than units)
price_collapse_s = 0     # > 0: a watcher's successive price drops of one SKU within this many
                         # seconds (wall clock) collapse into one message (the latest drop)

[apps.wx1.pauses]
reject_rate = 0.05       # pause a template's kinds when rejects after sends reach this share
min_sends = 50           # ... of at least this many sends (a stats row)
```

A kind's ``class`` (``service`` | ``marketing``; default: promotion marketing, the rest
service) is validated here too (:func:`parse_class`, :func:`check_classes`).

Both sections are optional, every key has a safe default, and every mistake is a ConfigError
naming its key (``apps.wx1.alerts.restock_factor``). docs/policies.md explains the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wxsub.errors import ConfigError

__all__ = [
    "CLASSES",
    "AlertConfig",
    "PauseThresholds",
    "check_classes",
    "parse_alerts",
    "parse_class",
    "parse_pause_thresholds",
]

#: message classes: service (what the user is waiting for) and marketing (opt-in, own caps and
#: quiet hours)
CLASSES = ("service", "marketing")
_ALWAYS_MARKETING = frozenset({"promotion"})

_MAX_FACTOR = 1000.0
_MAX_COLLAPSE_S = 86400


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """How watched-item alerts are limited (the products and decide stages)."""

    restock_limit: bool = True
    restock_factor: float = 1.0
    price_collapse_s: int = 0

    def restock_watchers(self, new_stock: int) -> int | None:
        """How many watchers a restock to ``new_stock`` units may tell (None: every one)."""
        if not self.restock_limit:
            return None
        scaled = new_stock * self.restock_factor
        whole = int(scaled)
        return whole + (1 if scaled > whole else 0)  # ceil without float surprises on ints


@dataclass(frozen=True, slots=True)
class PauseThresholds:
    """Feedback pause thresholds (safe defaults: 5% of at least 50 sends of a partition's day)."""

    reject_rate: float = 0.05
    min_sends: int = 50

    def __post_init__(self) -> None:
        if not 0 < self.reject_rate <= 1 or self.min_sends < 1:
            raise ValueError("0 < reject_rate <= 1 and min_sends >= 1")


DEFAULT_ALERTS = AlertConfig()
DEFAULT_PAUSE_THRESHOLDS = PauseThresholds()


def parse_alerts(key: str, raw: Any) -> AlertConfig:
    """``[apps.<appid>.alerts]`` (None: the defaults)."""
    if raw is None:
        return DEFAULT_ALERTS
    table = _table(key, raw, {"restock_limit", "restock_factor", "price_collapse_s"})
    limit = table.get("restock_limit", True)
    if not isinstance(limit, bool):
        raise ConfigError(f"{key}.restock_limit", f"must be true or false; got {limit!r}")
    factor = _number(f"{key}.restock_factor", table.get("restock_factor", 1.0))
    if not 0 < factor <= _MAX_FACTOR:
        raise ConfigError(f"{key}.restock_factor", f"must be > 0 and <= 1000; got {factor!r}")
    collapse = table.get("price_collapse_s", 0)
    if (
        not isinstance(collapse, int)
        or isinstance(collapse, bool)
        or not 0 <= collapse <= _MAX_COLLAPSE_S
    ):
        raise ConfigError(
            f"{key}.price_collapse_s", f"must be an integer 0..{_MAX_COLLAPSE_S}; got {collapse!r}"
        )
    return AlertConfig(limit, factor, collapse)


def parse_pause_thresholds(key: str, raw: Any) -> PauseThresholds:
    """``[apps.<appid>.pauses]`` (None: the defaults)."""
    if raw is None:
        return DEFAULT_PAUSE_THRESHOLDS
    table = _table(key, raw, {"reject_rate", "min_sends"})
    rate = _number(f"{key}.reject_rate", table.get("reject_rate", 0.05))
    if not 0.001 <= rate <= 1:
        raise ConfigError(f"{key}.reject_rate", f"must be >= 0.001 and <= 1; got {rate!r}")
    sends = table.get("min_sends", 50)
    if not isinstance(sends, int) or isinstance(sends, bool) or sends < 10:
        # fewer than 10 sends: one unlucky reject pauses a whole kind
        raise ConfigError(f"{key}.min_sends", f"must be an integer >= 10; got {sends!r}")
    return PauseThresholds(rate, sends)


def parse_class(key: str, kind: str, raw: Any) -> str:
    """A kind's ``class`` ("" when not given: the default by kind)."""
    if raw is None:
        return ""
    if raw not in CLASSES:
        raise ConfigError(key, f"must be one of {', '.join(CLASSES)}; got {raw!r}")
    if kind in _ALWAYS_MARKETING and raw != "marketing":
        raise ConfigError(key, f"{kind} is marketing: it cannot be declared {raw}")
    return str(raw)


def check_classes(templates: list[tuple[str, str, str]]) -> None:
    """Refuse marketing through a template declared as service: ``templates`` lists (kind key,
    template id, class) for every kind and variant of an app; a template used by kinds of both
    classes is an error at the marketing kind's ``class``."""
    service = {tpl: key for key, tpl, cls in templates if cls == "service"}
    for key, tpl, cls in templates:
        if cls == "marketing" and tpl in service:
            raise ConfigError(
                f"{key}.class",
                f"marketing through template {tpl}, which {service[tpl]} declares service",
            )


def _table(key: str, raw: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table")
    for name in raw:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}", "unknown setting")
    return raw


def _number(key: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(key, f"must be a number; got {raw!r}")
    return float(raw)
