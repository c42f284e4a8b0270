"""The products stage's stock-limited restock fan-out, over the serving queue of
:mod:`wxsub.agents.rules.stock` (kept beside the watches in the ``watches`` store).

A limited restock is a job like any fan-out (``products.py``), with ``left`` (how many watchers it
may still tell) and ``phase``: ``index`` (once per target: queue the restock watches stored
before the queue existed) then ``queue`` (tell the first ``left`` watchers in serving order, each
moved behind those told fewer times). Chunks are at most ``chunk`` store entries, each in its own
transaction, continued by the timer.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import orjson

from wxsub.agents.rules import stock
from wxsub.agents.rules.watches import Fanout, WatchState, watch_prefix
from wxsub.streams.store import PartitionStore

__all__ = ["end_job", "forget_watch", "on_watch", "save_job", "start", "step", "stop"]


def on_watch(
    store: PartitionStore, key: bytes, existing: WatchState | None, new: WatchState | None
) -> None:
    """Keep the queue in step with a restock watch written (``new``) or deleted (None)."""
    watch = new or existing
    if watch is None or watch.kind != stock.KIND:
        return
    if new is None:
        forget_watch(store, key, watch.appid, watch.target_type, watch.target_id)
        return
    pointer = stock.pointer_key(key.decode()).encode()
    if store.get(pointer) is None:  # a new watcher joins the back of never-told watchers
        prefix = watch_prefix(new.appid, new.target_type, new.target_id)
        _enqueue(store, pointer, key, prefix, 0, new.occurred_at, new.openid, "")


def forget_watch(
    store: PartitionStore, key: bytes, appid: str, target_type: str, target_id: str
) -> None:
    """Drop a deleted watch's queue entry (a hook for whatever deletes watches)."""
    pointer = stock.pointer_key(key.decode()).encode()
    qkey = store.get(pointer)
    if qkey is None:
        return
    store.delete(qkey)
    store.delete(pointer)
    prefix = watch_prefix(appid, target_type, target_id)
    if next(iter(store.scan(stock.queue_prefix(prefix).encode())), None) is None:
        store.delete(stock.indexed_key(prefix).encode())  # empty: nothing left to serve


def start(
    store: PartitionStore, job: dict[str, Any], event_id: str, prefix: str, limit: int
) -> dict[str, Any] | None:
    """The job of a limited restock (queue first if the target was never indexed), or None when
    the same restock event was served already (a duplicate must not tell the next watchers)."""
    marker = stock.indexed_key(prefix).encode()
    raw = store.get(marker)
    doc: dict[str, Any] = orjson.loads(raw) if raw else {"indexed": False, "recent": []}
    if event_id in doc["recent"]:
        return None
    doc["recent"] = [*doc["recent"], event_id][-stock.RECENT :]
    store.put(marker, orjson.dumps(doc))
    return {**job, "left": limit, "phase": "queue" if doc["indexed"] else "index"}


def stop(store: PartitionStore, prefix: str, job_prefix: bytes) -> dict[str, Any] | None:
    """Stop the target's running restock job (a stock-out); returns it (None: none ran)."""
    pointer = stock.job_key(prefix).encode()
    job_id = store.get(pointer)
    if job_id is None:
        return None
    store.delete(pointer)
    raw = store.get(job_prefix + job_id)
    store.delete(job_prefix + job_id)  # the timer finds no job and moves on
    doc: dict[str, Any] | None = orjson.loads(raw) if raw else None
    return doc


def save_job(
    store: PartitionStore, job_prefix: bytes, job_id: bytes, prefix: str, job: dict[str, Any]
) -> None:
    """Keep a running job for the timer, findable by its target (for a stock-out)."""
    store.put(job_prefix + job_id, orjson.dumps(job))
    store.put(stock.job_key(prefix).encode(), job_id)


def end_job(store: PartitionStore, job_prefix: bytes, job_id: bytes, prefix: str) -> None:
    store.delete(job_prefix + job_id)
    store.delete(stock.job_key(prefix).encode())


def step(
    store: PartitionStore, fan: Fanout, prefix: str, job: dict[str, Any], chunk: int
) -> tuple[list[Any], dict[str, Any] | None]:
    """One chunk: the watch documents to tell now, and the job to continue (None: done)."""
    if job["phase"] == "index":
        job = _index(store, prefix, job, chunk)
        if job["phase"] == "index":  # more watches to queue: the next chunk
            return [], job
        # queued in this chunk: tell now, as an indexed SKU would (a stock-out right behind
        # the restock must not find the restock still waiting for the timer)
    qprefix = stock.queue_prefix(prefix).encode()
    cursor = job["cursor"].encode("utf-8", "surrogateescape") if job["cursor"] else None
    entries = list(islice(store.scan(qprefix, start_after=cursor), chunk))
    docs: list[Any] = []
    left, last = job["left"], None
    for qkey, value in entries:
        if left <= 0:
            break
        last = qkey
        wkey, told_by = orjson.loads(value)
        if told_by == fan.ev.event_id:  # moved back by this very restock
            continue
        raw = store.get(wkey.encode())
        if raw is None:  # the watch is gone (retention): drop its entry
            store.delete(qkey)
            store.delete(stock.pointer_key(wkey).encode())
            continue
        doc = orjson.loads(raw)
        if not fan.matches(doc):
            continue
        docs.append(doc)
        left -= 1
        served, watched_at, openid = stock.parse_queue_key(qkey.decode(), prefix)
        store.delete(qkey)
        pointer = stock.pointer_key(wkey).encode()
        _enqueue(store, pointer, wkey.encode(), prefix, served + 1, watched_at, openid,
                 fan.ev.event_id)  # fmt: skip
    if left <= 0 or last is None or len(entries) < chunk:
        return docs, None
    return docs, {**job, "left": left, "cursor": last.decode("utf-8", "surrogateescape")}


def _index(store: PartitionStore, prefix: str, job: dict[str, Any], chunk: int) -> dict[str, Any]:
    """Queue the target's restock watches that have no entry yet (watches stored before)."""
    cursor = job["cursor"].encode("utf-8", "surrogateescape") if job["cursor"] else None
    entries = list(islice(store.scan(prefix.encode(), start_after=cursor), chunk))
    for key, value in entries:
        doc = orjson.loads(value)
        pointer = stock.pointer_key(key.decode()).encode()
        if doc["kind"] == stock.KIND and store.get(pointer) is None:
            _enqueue(store, pointer, key, prefix, 0, doc["occurred_at"], doc["openid"], "")
    if len(entries) == chunk:
        return {**job, "cursor": entries[-1][0].decode("utf-8", "surrogateescape")}
    marker = stock.indexed_key(prefix).encode()
    raw = store.get(marker)
    doc = orjson.loads(raw) if raw else {"recent": []}
    store.put(marker, orjson.dumps({**doc, "indexed": True}))
    return {**job, "phase": "queue", "cursor": None}


def _enqueue(
    store: PartitionStore,
    pointer: bytes,
    wkey: bytes,
    prefix: str,
    served: int,
    watched_at: int,
    openid: str,
    told_by: str,
) -> None:
    qkey = stock.queue_key(prefix, served, watched_at, openid).encode()
    store.put(qkey, orjson.dumps([wkey.decode(), told_by]))
    store.put(pointer, qkey)
