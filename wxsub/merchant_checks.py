"""Small validators of the merchant config's TOML tables: each error names its key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wxsub.errors import ConfigError

__all__ = ["choice", "int_of", "only", "str_of", "table"]


def table(raw: Any, key: str) -> Mapping[str, Any]:
    if raw is None:
        raise ConfigError(key, "required table")
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table")
    return raw


def only(table: Mapping[str, Any], key: str, allowed: set[str]) -> None:
    for name in table:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}" if key else name, "unknown setting")


def str_of(table: Mapping[str, Any], key: str, name: str, *, required: bool = False) -> str:
    raw = table.get(name)
    if raw is None and not required:
        return ""
    if not isinstance(raw, str) or (required and not raw):
        raise ConfigError(f"{key}.{name}", "required string" if required else "must be a string")
    return raw


def int_of(table: Mapping[str, Any], key: str, name: str, default: int | None, minimum: int) -> int:
    raw = table.get(name, default)
    if raw is None:
        raise ConfigError(f"{key}.{name}", "required integer")
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < minimum:
        raise ConfigError(f"{key}.{name}", f"must be an integer >= {minimum}; got {raw!r}")
    return raw


def choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}; got {value!r}")
