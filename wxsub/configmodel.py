"""What the settings and the merchant config are validated with: pydantic v2, and one translation
of its errors into :class:`~wxsub.errors.ConfigError` naming the key.

A validator that knows a more precise key than the value it validates raises :class:`Bad` with
the rest of the key (``Bad("data.thing3", "not a keyword of the template")``); the translation
appends it to pydantic's location. Messages keep the wording of the hand-written loaders they
replaced (``must be >= 1; got 0``, ``unknown setting``). An input value is quoted only when it is
a scalar and its key is not a secret's, and the ValidationError itself (which holds the inputs)
is never chained, printed or logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from wxsub.errors import ConfigError

__all__ = ["SECRET_KEYS", "STRICT", "Bad", "Int", "Number", "config_error", "validate"]

#: the pydantic config of every config model: an unknown key is an error
STRICT = ConfigDict(extra="forbid")
#: keys whose value is never quoted in an error
SECRET_KEYS = frozenset({"secret", "token", "aes_key", "sasl_password", "ssl_key_password"})


class Bad(ValueError):
    """A validator's error about ``sub`` (a dotted key below the validated value; "" = itself)."""

    def __init__(self, sub: str, message: str, inner: ValidationError | None = None) -> None:
        super().__init__(message)
        self.sub = sub
        self.message = message
        self.inner = inner  # a nested validation's errors (keys relative to ``sub``)


def _no_bool(kind: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, bool):  # TOML true is not 1
            raise ValueError(f"must be {kind}; got {value!r}")
        return value

    return BeforeValidator(check)


#: an integer (from TOML, or a string from the environment), never a boolean
Int = Annotated[int, _no_bool("an integer")]
#: a number (int or float), never a boolean
Number = Annotated[float, _no_bool("a number")]


def validate(tp: Any, data: Any, *, context: Mapping[str, Any] | None = None,
             env_keys: Mapping[str, str] | None = None, prefix: str = "") -> Any:  # fmt: skip
    """``data`` validated as ``tp``; ConfigError naming the key (and the environment variable
    it came from, per ``env_keys``: dotted key -> variable) when it is not valid."""
    try:
        return _adapter(tp).validate_python(data, context=dict(context or {}))
    except ValidationError as exc:
        raise config_error(exc, prefix, env_keys or {}) from None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(tp)
    if adapter is None:
        adapter = _ADAPTERS[tp] = TypeAdapter(tp)
    return adapter


def config_error(exc: ValidationError, prefix: str = "",
                 env_keys: Mapping[str, str] | None = None) -> ConfigError:  # fmt: skip
    """The first error of ``exc`` as a ConfigError (key: ``prefix`` + pydantic's location)."""
    err = exc.errors(include_url=False)[0]
    loc = [*(prefix.split(".") if prefix else []), *(str(p) for p in err["loc"])]
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, Bad):
        loc += [p for p in cause.sub.split(".") if p]
        if cause.inner is not None:
            return config_error(cause.inner, ".".join(loc), env_keys)
        message = cause.message
    else:
        message = _message(err["type"], ctx, cause, err.get("msg", ""), len(loc) == 1)
        value = err.get("input")
        if err["type"] in _QUOTED and isinstance(value, str | int | float) and not _secret(loc):
            message += f"; got {value!r}"
    key = ".".join(loc)
    env_name = (env_keys or {}).get(key)
    return ConfigError(f"{key} (env {env_name})" if env_name else key, message)


def _secret(loc: Iterable[str]) -> bool:
    return any(part in SECRET_KEYS for part in loc)


_TYPES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "string_too_short": "required: must not be empty",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "list_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dataclass_type": "must be a table",
    "dataclass_exact_type": "must be a table",
    "path_type": "must be a path",
    "missing": "required",
    "missing_argument": "required",
    "extra_forbidden": "unknown setting",
    "unexpected_keyword_argument": "unknown setting",
}
#: a bound's error type -> (operator, its ctx key)
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}  # fmt: skip
_QUOTED = frozenset(
    {"int_type", "int_parsing", "int_from_float", "float_type", "float_parsing", "string_type",
     "bool_type", "bool_parsing", "literal_error", "path_type", *_BOUNDS}
)  # fmt: skip


def _message(kind: str, ctx: Mapping[str, Any], cause: Any, msg: str, top: bool) -> str:
    if kind in ("extra_forbidden", "unexpected_keyword_argument") and top:
        return "unknown section"
    if kind in _TYPES:
        return _TYPES[kind]
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return f"must be {op} {ctx.get(name)}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {choices}"
    if cause is not None:  # value_error / assertion_error from a validator
        return str(cause)
    return msg
