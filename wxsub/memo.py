"""The one memo mechanism: a plain dict, read with ``dict.get`` where it is used, filled on a
miss through :func:`remember`, which keeps it bounded.

A memo keyed by ``id(obj)`` (frozen configs, which cannot be hashed) keeps ``obj`` in the value
and checks ``hit[0] is obj`` (or the like) on a hit, so a reused id never returns another
object's entry. Every memo is either bounded through :func:`remember` or keyed by a finite set
(record classes, schema kinds, topics), said where it is defined.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["remember"]

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """``memo[key] = value``, emptying ``memo`` first when it holds ``limit`` entries (the keys
    in use come back on their next miss; no LRU bookkeeping on the hit path). Returns ``value``.
    """
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
