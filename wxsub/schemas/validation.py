"""Loading the JSON Schema files and turning the first violation into an :class:`InputError`.

Validators are compiled once per kind (jsonschema-rs, draft 2020-12) on first use, not at import.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from typing import Any

import jsonschema_rs
import orjson

from wxsub.errors import InputError, InputReason

__all__ = ["MAX_MESSAGE_CHARS", "load_schema", "pointer", "schema_error", "validator"]

#: error messages echo the offending value; keep them short (they go to stderr, DLQ headers)
MAX_MESSAGE_CHARS = 300


@functools.cache  # keyed by schema kind: a finite set
def load_schema(kind: str) -> dict[str, Any]:
    """The parsed ``json/<kind>.schema.json`` shipped with the package."""
    path = resources.files("wxsub.schemas").joinpath("json", f"{kind}.schema.json")
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc


@functools.cache  # keyed by schema kind: a finite set
def validator(kind: str) -> jsonschema_rs.Validator:
    """The compiled validator of ``kind`` (formats are annotations; times are checked on decode)."""
    return jsonschema_rs.validator_for(load_schema(kind), validate_formats=False)


def pointer(path: Sequence[str | int]) -> str:
    """RFC 6901 JSON pointer of an instance path (``["items", 0]`` -> ``/items/0``)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def schema_error(kind: str, doc: Any) -> InputError | None:
    """The first violation of ``kind``'s schema as an InputError(reason="schema"), or None."""
    for err in validator(kind).iter_errors(doc):
        path = list(err.instance_path)
        message = err.message
        if isinstance(err.kind, jsonschema_rs.ValidationErrorKind.Required):
            # point at the missing member itself: more useful than its parent object
            path.append(err.kind.property)
        elif isinstance(err.kind, jsonschema_rs.ValidationErrorKind.FalseSchema):
            message = f"{path[-1] if path else 'this'} is not allowed here"
        return InputError(InputReason.SCHEMA, shorten(message), pointer(path))
    return None


def shorten(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"
