"""The deliver stage's ``ledger`` store: one entry per notification id, and its indexes.

The stage reads an entry, asks ``wxsub.agents.rules.delivery`` what to do, and writes the entry
the rules returned through :class:`Ledger`, which keeps the indexes in step with it
(``docs/delivery.md``, "The ledger" and "Reconciliation from receipts"). :class:`DueBacklog`
is the gauge of its due index.
"""

from __future__ import annotations

import time

from wxsub.agents.rules import delivery as rules
from wxsub.agents.rules.delivery import Entry, LedgerState
from wxsub.schemas.internal import user_key
from wxsub.streams.due import DueIndex
from wxsub.streams.metrics import WorkerMetrics
from wxsub.streams.store import PartitionStore

__all__ = ["DueBacklog", "Ledger"]

_COUNT_RATE = 10_000  # due entries per second of gauge staleness (see DueBacklog.recount)


class Ledger:
    """The ``ledger`` store: entries by notification id, plus three indexes kept in step.

    ``n|nid`` -> entry; the DueIndex (retries, and attempts so a leftover is found by the
    timer); ``u|appid:openid|template|attempt_at|nid`` for attempt/in-doubt entries (receipt
    matching, oldest first); ``m|msgid`` -> nid for sent entries (a receipt of a known send).
    An entry in a final state is forgotten with its index entries after ``retention.delivery_s``
    (:meth:`forget`).
    """

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.due = DueIndex(store)

    def get(self, nid: str) -> Entry | None:
        raw = self.store.get(b"n|" + nid.encode())
        return rules.decode_entry(raw) if raw is not None else None

    def write(self, old: Entry | None, new: Entry) -> None:
        self.store.put(b"n|" + new.notification_id.encode(), rules.encode_entry(new))
        nid = new.notification_id.encode()
        self.due.set(nid, old.due if old else None, new.due)
        old_key, new_key = _user_index(old), _user_index(new)
        if old_key != new_key:
            if old_key is not None:
                self.store.delete(old_key)
            if new_key is not None:
                self.store.put(new_key, b"")
        if new.state == LedgerState.SENT and new.msgid and (old is None or old.msgid != new.msgid):
            self.store.put(b"m|" + new.msgid.encode(), nid)

    def forget(self, entry: Entry) -> None:
        """Delete an entry and its index entries (expiry: ``rules.retention.entry_expired``)."""
        nid = entry.notification_id.encode()
        self.store.delete(b"n|" + nid)
        self.due.set(nid, entry.due, None)
        user = _user_index(entry)
        if user is not None:
            self.store.delete(user)
        if entry.msgid:
            self.store.delete(b"m|" + entry.msgid.encode())

    def open_attempts(self, appid: str, openid: str, template_id: str) -> list[tuple[int, str]]:
        """(attempt_at, nid) of the user's attempt/in-doubt entries for a template, oldest first."""
        prefix = _user_prefix(appid, openid, template_id)
        out = []
        for key, _ in self.store.scan(prefix):
            at, _, nid = key[len(prefix) :].partition(b"|")
            out.append((int(at), nid.decode()))
        return out

    def known_msgid(self, msgid: str) -> bool:
        return self.store.get(b"m|" + msgid.encode()) is not None


class DueBacklog:
    """``wxsub_deferred_backlog{stage="deliver"}``: the due entries of this worker's ledgers."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._gauge = metrics.deferred
        # partition -> (monotonic time counted, due entries)
        self._counts: dict[int, tuple[float, int]] = {}

    def recount(self, partition: int, ledger: Ledger) -> None:
        """Recount a partition's due entries for the gauge, less often the more there are.

        Counting scans the index; after a count of n it is repeated no sooner than n / 10 000
        seconds (every timer run below 10 000), so a large backlog costs at most ~1% of a core.
        """
        counted_at, n = self._counts.get(partition, (0.0, 0))
        now = time.monotonic()
        if now - counted_at < n / _COUNT_RATE:
            return
        self._counts[partition] = (now, ledger.due.count())
        total = sum(n for _, n in self._counts.values())
        self._gauge.labels(rules.STAGE).set(total)


def _user_prefix(appid: str, openid: str, template_id: str) -> bytes:
    return f"u|{user_key(appid, openid)}|{template_id}|".encode()


def _user_index(entry: Entry | None) -> bytes | None:
    if entry is None or entry.state not in (LedgerState.ATTEMPT, LedgerState.IN_DOUBT):
        return None
    prefix = _user_prefix(entry.appid, entry.openid, entry.template_id)
    return prefix + b"%013d|" % entry.attempt_at + entry.notification_id.encode()
