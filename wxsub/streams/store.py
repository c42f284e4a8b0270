"""Per-partition state stores whose local copy only ever holds committed state.

Each store of a stage has, per input partition, a RocksDB directory (rocksdict) and a partition
of a compacted changelog topic. Writes made while processing a batch stay in an in-memory
overlay; the runtime sends the overlay to the changelog inside the batch's Kafka transaction and
applies it to RocksDB (with the changelog offset as a checkpoint, in one WriteBatch) only after
the transaction committed. So after a crash the local copy is a prefix of the committed
changelog, and restoring = replaying the changelog (read_committed) from the checkpoint.

This is the point where we part from Faust's tables: Faust writes its RocksDB store when the
agent assigns the value, before the transaction commits, so a kill -9 leaves aborted writes in
the local store (a consumed credit, a dedupe mark) that the restarted worker trusts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

from rocksdict import Options, Rdict, ReadOptions, WriteBatch

__all__ = ["RESERVED_PREFIX", "CommittedView", "PartitionStore"]

#: keys the runtime keeps for itself in every store (the checkpoint); never a stage's
RESERVED_PREFIX = b"\x00wxsub:"
_CHECKPOINT = RESERVED_PREFIX + b"checkpoint"


class PartitionStore:
    """One store for one partition. Keys and values are bytes; ``None`` means deleted."""

    def __init__(self, name: str, partition: int, path: Path) -> None:
        self.name = name
        self.partition = partition
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(8 * 1024 * 1024)
        self._db = Rdict(str(path), options=opts)
        self._overlay: dict[bytes, bytes | None] = {}
        self.closed = False

    # --- reads and writes while processing ----------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if key in self._overlay:
            return self._overlay[key]
        value = self._db.get(key)
        return value if isinstance(value, bytes) else None

    def put(self, key: bytes, value: bytes) -> None:
        self._overlay[key] = value

    def delete(self, key: bytes) -> None:
        self._overlay[key] = None

    def scan(
        self, prefix: bytes, start_after: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Committed + pending entries whose key starts with ``prefix``, in key order.

        Pending writes are merged in; the caller must not write under ``prefix`` while iterating.
        Committed entries come from RocksDB's own ``items`` iterator bounded to the prefix (one
        call per entry where an ``iter()`` takes four: valid, key, value, next); without pending
        writes under ``prefix`` (a fan-out's watches) nothing else runs per entry
        (bench/RESULTS.md, "Session 8").
        """
        pending = sorted([(k, v) for k, v in self._overlay.items() if k.startswith(prefix)])
        if not pending:
            return self._committed(prefix, start_after)
        return self._merged(prefix, start_after, pending)

    def _committed(self, prefix: bytes, start_after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """RocksDB's entries under ``prefix`` after ``start_after``, in key order."""
        opts, items = self._range(prefix, start_after)
        yield from items
        del opts  # (kept alive until here: see _range)

    def _merged(
        self, prefix: bytes, start_after: bytes | None, pending: list[tuple[bytes, bytes | None]]
    ) -> Iterator[tuple[bytes, bytes]]:
        """RocksDB's entries under ``prefix`` after ``start_after`` with ``pending`` (the
        overlay's, sorted) merged in: a pending key replaces the committed one, None deletes."""
        if start_after is not None:
            pending = [p for p in pending if p[0] > start_after]
        opts, items = self._range(prefix, start_after)
        pi, n = 0, len(pending)
        for key, value in items:
            while pi < n and pending[pi][0] < key:
                p_key, p_value = pending[pi]
                pi += 1
                if p_value is not None:
                    yield p_key, p_value
            if pi < n and pending[pi][0] == key:
                p_value = pending[pi][1]
                pi += 1
                if p_value is not None:
                    yield key, p_value
                continue
            yield key, value
        for p_key, p_value in pending[pi:]:
            if p_value is not None:
                yield p_key, p_value
        del opts  # (kept alive until here: see _range)

    def _range(
        self, prefix: bytes, start_after: bytes | None
    ) -> tuple[ReadOptions, Iterator[tuple[bytes, bytes]]]:
        """RocksDB's items under ``prefix`` after ``start_after``, and the ``ReadOptions`` the
        caller must keep alive while it iterates: rocksdict's iterator points into the options'
        upper bound without holding them (0.3.29: with them freed it stopped at a wrong key)."""
        opts = ReadOptions()
        upper = _after_prefix(prefix)
        if upper is not None:
            opts.set_iterate_upper_bound(upper)
        # the first key after start_after is start_after + b"\0" (bytewise order)
        start = prefix if start_after is None else max(prefix, start_after + b"\0")
        items = self._db.items(from_key=start, read_opt=opts)  # raw mode: (bytes, bytes)
        return opts, cast(Iterator[tuple[bytes, bytes]], items)

    # --- transaction boundary -----------------------------------------------------------------

    def pending(self) -> dict[bytes, bytes | None]:
        return self._overlay

    def discard(self) -> None:
        """Forget the overlay (the transaction aborted)."""
        self._overlay = {}

    def apply(self, next_changelog_offset: int | None) -> None:
        """Write the overlay to RocksDB after its transaction committed."""
        if not self._overlay and next_changelog_offset is None:
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in self._overlay.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if next_changelog_offset is not None:
            batch.put(_CHECKPOINT, str(next_changelog_offset).encode())
        self._db.write(batch)
        self._overlay = {}

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Apply one committed changelog record (restore path; no overlay involved)."""
        if value is None:
            self._db.delete(key)
        else:
            self._db.put(key, value)

    def restore_many(self, records: list[tuple[bytes, bytes | None]]) -> None:
        """Apply committed changelog records in one WriteBatch (restore path)."""
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._db.write(batch)

    @property
    def checkpoint(self) -> int:
        """Changelog offset from which restoring must replay (0 when none was written)."""
        raw = self._db.get(_CHECKPOINT)
        return int(raw) if isinstance(raw, bytes) else 0

    def set_checkpoint(self, offset: int) -> None:
        self._db.put(_CHECKPOINT, str(offset).encode())

    def committed(self) -> CommittedView:
        """Reads of the committed state only (for queries, beside the stage)."""
        return CommittedView(self._db)

    def close(self) -> None:
        self.closed = True
        self._db.close()


def _after_prefix(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no such key,
    the prefix is empty or all 0xff)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


class CommittedView:
    """Reads of a store's committed state only (RocksDB, never the overlay): what a query may
    see while the stage's transactions run. The overlay reaches RocksDB in one WriteBatch after
    its commit, so a read sees a batch entirely or not at all."""

    def __init__(self, db: Rdict) -> None:
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return value if isinstance(value, bytes) else None

    def scan(self, prefix: bytes, limit: int = 1000) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` committed entries whose key starts with ``prefix``, in key order."""
        out: list[tuple[bytes, bytes]] = []
        it = self._db.iter()
        it.seek(prefix)
        while it.valid() and len(out) < limit:
            key = it.key()
            if not key.startswith(prefix):
                break
            out.append((key, it.value()))
            it.next()
        return out
