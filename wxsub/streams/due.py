"""A due-time index kept inside a partition store (timers' work lists)."""

from __future__ import annotations

from collections.abc import Iterator

from wxsub.streams.store import PartitionStore

__all__ = ["DueIndex"]


class DueIndex:
    """Entities with work due at a wall-clock time, kept sorted inside a partition store.

    Keys are ``PREFIX + 13-digit ms + "|" + entity key``, so a scan from the prefix yields them in
    due order and stops at the first one in the future.
    """

    PREFIX = b"\x01due|"

    def __init__(self, store: PartitionStore) -> None:
        self.store = store

    def _key(self, due_ms: int, entity: bytes) -> bytes:
        return self.PREFIX + b"%013d|" % due_ms + entity

    def set(self, entity: bytes, old_due: int | None, new_due: int | None) -> None:
        if old_due == new_due:
            return
        if old_due is not None:
            self.store.delete(self._key(old_due, entity))
        if new_due is not None:
            self.store.put(self._key(new_due, entity), b"")

    def due(self, now_ms: int, limit: int = 10_000) -> Iterator[tuple[int, bytes]]:
        """(due_ms, entity) whose time has come, oldest first (at most ``limit``)."""
        n = len(self.PREFIX)
        for i, (key, _) in enumerate(self.store.scan(self.PREFIX)):
            due = int(key[n : n + 13])
            if due > now_ms or i >= limit:
                return
            yield due, key[n + 14 :]

    def count(self) -> int:
        return sum(1 for _ in self.store.scan(self.PREFIX))
