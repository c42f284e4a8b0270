"""Reading a TOML config file: the one loader of the settings, the merchant config and the
sandbox's world."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from wxsub.errors import ConfigError

__all__ = ["read_toml"]


def read_toml(path: str | os.PathLike[str], key: str) -> dict[str, Any]:
    """The parsed file; a ConfigError under ``key`` naming the file when it is missing or not
    valid UTF-8 TOML (the decoder's message gives the line and column)."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(key, f"file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"{path} is not valid TOML: {exc}") from None
