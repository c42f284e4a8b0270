"""``record``: a frozen dataclass to the type checker, a plain slots dataclass at run time.

A frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__``;
measured here, that is 7x slower than a plain slots dataclass (9.2 vs 1.3 µs for ten fields),
and the pipeline builds about a dozen records per event. ``dataclass_transform`` with
``frozen_default=True`` makes mypy treat every ``@record`` class as frozen, so assigning to a
field is a type error (mypy runs strict on the package in CI): records stay immutable, checked
statically instead of on every construction. ``unsafe_hash=True`` keeps them hashable by value,
as frozen dataclasses are.

``from_doc`` rebuilds a record from its decoded JSON object. ``cls(**doc)`` matches every key
of a decoded dict against the parameter names by string comparison (orjson's keys are not the
interned names): for an eleven-field record that is 16 k instructions, against 7 k for passing
the values by position once the keys are checked to be the fields, in order (callgrind).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, dataclass_transform

__all__ = ["field_names", "from_doc", "record"]

T = TypeVar("T")
_NAMES: dict[type, tuple[str, ...]] = {}  # keyed by record class: a finite set
# per record class, the last decoded key tuple found equal to its field names (from_doc)
_MATCHED: dict[type, tuple[str, ...]] = {}


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Decorate a class as an immutable record (see the module docstring)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


def field_names(cls: type) -> tuple[str, ...]:
    """A record class's field names, in order (cached)."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def from_doc(cls: type[T], doc: Mapping[str, Any]) -> T:
    """``cls(**doc)``, by position when ``doc`` holds the fields in order (as written by
    ``encode_internal``), or the first of them in order (the rest take their defaults:
    ``internal.short_form``); otherwise by keyword, with the same errors.

    The keys are compared with the last key tuple that matched first: orjson hands out the
    same key strings for the same keys (its key cache), so that comparison is one pointer
    test per key where a comparison with the field names compares the characters (a third of
    the check's cost; 7 k instructions per event for the pipeline's Candidate and OrderState,
    bench/RESULTS.md "Session 7: CPU per event"). Equal strings match either way: the
    shortcut is only faster, never different."""
    keys = tuple(doc)
    if keys == _MATCHED.get(cls):
        return cls(*doc.values())
    names = _NAMES.get(cls) or field_names(cls)
    if keys == names[: len(keys)]:  # the fields in order, or the first of them (short form)
        _MATCHED[cls] = keys
        return cls(*doc.values())
    return cls(**doc)
