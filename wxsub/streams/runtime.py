"""An exactly-once stage runtime on aiokafka: consume -> process -> produce, atomically.

Why not Faust's ``processing_guarantee="exactly_once"``: see docs/design.md ("The stream
runtime"). In short, Faust writes table stores before the transaction commits, and its per-event
hot path costs ~650 µs per hop on our machine; this runtime processes a batch per partition per
transaction.

How one stage runs (Kafka's "EOS v1" scheme, the one aiokafka's v0 transaction APIs support):
- One consumer-group member per worker, isolation ``read_committed``, no auto-commit, the range
  assignor, so partition ``p`` of every (co-partitioned) input topic goes to one member.
- Per assigned partition number ``p``: one transactional producer with the id
  ``{app}-{stage}-{p}``. Starting it (InitProducerId) fences any zombie that held ``p`` and aborts
  its open transaction, so a kill -9'd worker's half-done batch disappears.
- Per batch of ``p``: begin -> ``stage.process`` (sends go into the transaction) -> store overlays
  to their changelog partitions -> input offsets via ``send_offsets_to_transaction`` -> commit ->
  only then apply the overlays to local RocksDB (see store.py). Any failure aborts, drops the
  overlays and rewinds the partition to its committed offsets.
- Timers (``stage.on_timer``) run per partition in their own transactions.
- ``commit_interval_ms``: a partition's batches start at least this far apart (held paused
  until then), which bounds its transactions per second (each costs ~5-7 ms of broker and
  client CPU, whatever it carries: docs/design.md).
- A ``Settling`` stage (stage.py) may start work after a commit (``ctx.on_commit``) whose
  results a later transaction writes: an idle partition with such work gets a ``settle`` turn
  once the commit interval has passed, and every partition is settled before a rebalance or
  shut-down gives it up.
- Partitions are pipelined: each batch of ``p`` (then its timer, when due) runs as its own task
  while ``p``'s input partitions are paused, and ``p`` is resumed as soon as its own commit is
  done, so it fetches its next batch without waiting for the slowest partition (a
  transaction's round trips, ~100-300 ms on a loaded machine, vary a lot between partitions).
  The poll loop only fetches and hands out batches; a rebalance and shut-down first wait for
  every task in flight.

``processing_guarantee="at_least_once"`` keeps this code path with plain idempotent producers:
a batch's sends and changelog records are awaited (acked), then its input offsets are committed
with ``consumer.commit``, then the overlays are applied. A crash between the acks and the offset
commit replays the batch (duplicates downstream, never a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import ProducerFenced

from wxsub.streams import aiokafka_tuning
from wxsub.streams.outbox import Outbox
from wxsub.streams.restore import restore_all, restore_consumer
from wxsub.streams.stage import PartitionContext, Settling, Stage
from wxsub.streams.store import PartitionStore

__all__ = ["StageRunner"]

log = logging.getLogger(__name__)

Guarantee = Literal["exactly_once", "at_least_once"]


@dataclass
class _Unit:
    """Everything owned for one partition number: its producer and its stores."""

    partition: int
    producer: AIOKafkaProducer
    stores: dict[str, PartitionStore]
    changelogs: dict[str, str]
    last_timer: float = 0.0
    # next offset per input partition as of our last commit: a fresher truth than a committed
    # offset fetch, which can lag until the coordinator has written the transaction markers
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    backoff_until: float = 0.0  # monotonic time before which a failed partition is not retried
    paused: set[TopicPartition] = field(default_factory=set)  # backed off after a failure
    busy: asyncio.Task[None] | None = None  # the batch or timer in flight
    started: float = 0.0  # monotonic time the last batch (a turn with records) started
    held: set[TopicPartition] = field(default_factory=set)  # paused while ``busy`` runs


class StageRunner(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs one stage in this process until stopped; restartable after fatal errors."""

    def __init__(
        self,
        stage: Stage,
        *,
        bootstrap: str,
        app_id: str,
        state_dir: Path,
        changelog_topic: Callable[[str, str], str],
        linger_ms: int = 10,
        max_batch: int = 2000,
        commit_interval_ms: int = 0,
        poll_timeout_ms: int = 50,
        session_timeout_ms: int = 10000,
        on_commit: Callable[[int, int], None] | None = None,
        guarantee: Guarantee = "exactly_once",
    ) -> None:
        self.stage = stage
        self.spec = stage.spec
        self.bootstrap = bootstrap
        self.group_id = f"{app_id}-{self.spec.name}"
        self.app_id = app_id
        self.state_dir = state_dir / self.spec.name
        self._changelog_topic = changelog_topic
        self._linger_ms = linger_ms
        self._max_batch = max_batch
        self._interval = commit_interval_ms / 1000
        self._settling = stage if isinstance(stage, Settling) else None
        self._poll_timeout_ms = poll_timeout_ms
        self._session_timeout_ms = session_timeout_ms
        self._on_commit = on_commit
        self._eos = guarantee == "exactly_once"
        if self._eos:
            aiokafka_tuning.apply()  # back-to-back transactions: 2 ms, not 20 ms, between them
        self._units: dict[int, _Unit] = {}
        # assigned partitions not yet ready to process (paused until ``_open_pending``)
        self._pending: set[TopicPartition] = set()
        # held by the poll loop while it hands out work and by the rebalance callbacks, which
        # also wait for the work in flight: no batch starts or runs across a rebalance
        self._lock = asyncio.Lock()
        self._failure: Exception | None = None  # a task's fatal error, raised by the loop
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once partitions are assigned and restored
        self.committed_batches = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Process until ``stop()``; a fenced or broken runner restarts itself after a pause."""
        while not self._stopping.is_set():
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stage failed; restarting", extra={"stage": self.spec.name})
                await self._teardown()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 2.0)
        await self._teardown()

    async def stop(self) -> None:
        self._stopping.set()

    def lag(self) -> int:
        """Records behind the input's high watermark, over this runner's partitions (from the
        last fetch; 0 when unknown)."""
        consumer = self._consumer
        if consumer is None:
            return 0
        behind = 0
        for unit in self._units.values():
            for tp, position in unit.positions.items():
                high = consumer.highwater(tp)
                if high is not None and high > position:
                    behind += high - position
        return behind

    async def _run_once(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=f"{self.group_id}-consumer",
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(500, self._session_timeout_ms // 4),
            rebalance_timeout_ms=120_000,
            max_poll_interval_ms=300_000,
            fetch_max_wait_ms=self._poll_timeout_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer = consumer
        consumer.subscribe(list(self.spec.inputs), listener=self)
        await consumer.start()
        try:
            while not self._stopping.is_set():
                self._raise_failure()
                if self._pending:
                    async with self._lock:
                        await self._open_pending()
                batch = await consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
                )
                async with self._lock:
                    self._raise_failure()
                    self._resume_due()
                    self._dispatch(batch)
                    self._start_timers()
        except asyncio.CancelledError:
            self._cancel_in_flight()
            raise
        finally:
            async with self._lock:
                await self._drain()  # at_least_once commits through the consumer
                self._consumer = None
                await consumer.stop()

    async def _teardown(self) -> None:
        async with self._lock:
            await self._drain()
            if self._failure is None:
                await self._settle_all()
            for p in list(self._units):
                await self._close_unit(p)
            self._failure = None
            self._pending = set()
            self.ready.clear()

    # --- rebalancing --------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Eager rebalancing revokes everything; keep units until we know the new assignment so a
        # partition that stays with us keeps its producer and stores. Every batch in flight
        # commits (or aborts) before we return (aiokafka still heartbeats during this callback).
        async with self._lock:
            self.ready.clear()
            await self._drain()
            await self._settle_all()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Record the assignment and pause what is not ready; no round trips here.

        aiokafka starts the heartbeat task only after this callback returns (the group
        coordinator's ``ensure_active_group``), so time spent here counts against the session
        timeout: opening producers and restoring stores here got the member expired at every
        start-up. As in Kafka Streams, new partitions stay paused until ``_open_pending`` (the
        poll loop) has opened their units and positioned them.
        """
        async with self._lock:
            consumer = self._consumer
            assert consumer is not None
            await self._drain()  # nothing can have started since the revoke; to be sure
            wanted = {tp.partition for tp in assigned}
            for p, kept in list(self._units.items()):
                if p not in wanted:
                    await self._close_unit(p)
                # the new assignment is unpaused
                kept.paused, kept.held, kept.backoff_until = set(), set(), 0.0
            pending = set()
            for tp in assigned:
                unit = self._units.get(tp.partition)
                position = unit.positions.get(tp) if unit is not None else None
                if unit is None or position is None:
                    pending.add(tp)
                    continue
                consumer.seek(tp, position)  # kept: resume where our last commit left it
            self._pending = pending
            if pending:
                consumer.pause(*pending)
            else:
                self.ready.set()

    async def _open_pending(self) -> None:
        """Open units for the partitions assigned last, position them, then resume them."""
        consumer = self._consumer
        assert consumer is not None
        t0 = time.monotonic()
        pending, self._pending = self._pending & consumer.assignment(), set()
        await self._open_units(sorted({tp.partition for tp in pending} - set(self._units)))
        # A new partition resumes at its committed offset, read after our producer's
        # InitProducerId, which returns only once the previous owner's transaction is complete
        # (markers written), so the fetch is not stale and a zombie's open transaction is aborted.
        tps = sorted(pending)
        positions = await asyncio.gather(*(self._position(tp) for tp in tps))
        for tp, position in zip(tps, positions, strict=True):
            if position is not None:
                self._units[tp.partition].positions[tp] = position
                consumer.seek(tp, position)
        consumer.resume(*tps)
        unknown = [tp for tp, position in zip(tps, positions, strict=True) if position is None]
        if unknown:
            await consumer.seek_to_beginning(*unknown)
        self.ready.set()
        log.info(
            "partitions assigned",
            extra={"stage": self.spec.name, "partitions": sorted(self._units),
                   "opened_s": round(time.monotonic() - t0, 3)},
        )  # fmt: skip

    async def _position(self, tp: TopicPartition) -> int | None:
        position = self._units[tp.partition].positions.get(tp)
        if position is None:
            consumer = self._consumer
            assert consumer is not None
            position = await consumer.committed(tp)
        return position

    async def _open_units(self, partitions: list[int]) -> None:
        """Open units for ``partitions``: producers start concurrently (one InitProducerId
        round trip each), then every store restores through one changelog consumer."""
        if not partitions:
            return
        started = await asyncio.gather(
            *(self._start_producer(p) for p in partitions), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        producers = [r for r in started if isinstance(r, AIOKafkaProducer)]
        if failed:
            for producer in producers:
                with contextlib.suppress(Exception):
                    await producer.stop()
            raise failed[0]
        units = [
            self._new_unit(p, producer) for p, producer in zip(partitions, producers, strict=True)
        ]
        try:
            await self._restore(units)
        except BaseException:
            for unit in units:
                for store in unit.stores.values():
                    store.close()
                with contextlib.suppress(Exception):
                    await unit.producer.stop()
            raise
        for unit in units:
            self._units[unit.partition] = unit

    async def _start_producer(self, p: int) -> AIOKafkaProducer:
        if self._eos:
            txn: dict[str, Any] = {
                "transactional_id": f"{self.app_id}-{self.spec.name}-{p}",
                "transaction_timeout_ms": 60_000,
            }
        else:
            txn = {"enable_idempotence": True}
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.group_id}-{p}",
            acks="all",
            # stages hand over whole record batches at commit (outbox.py): lingering on top
            # of that only delays every transaction
            linger_ms=0,
            max_batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            **txn,
        )
        await producer.start()  # EOS: InitProducerId fences the previous owner of p
        return producer

    def _new_unit(self, p: int, producer: AIOKafkaProducer) -> _Unit:
        stores = {
            name: PartitionStore(name, p, self.state_dir / f"{name}-{p}")
            for name in self.spec.stores
        }
        changelogs = {name: self._changelog_topic(self.spec.name, name) for name in stores}
        return _Unit(p, producer, stores, changelogs)

    async def _restore(self, units: list[_Unit]) -> None:
        stores = {
            TopicPartition(u.changelogs[name], u.partition): store
            for u in units
            for name, store in u.stores.items()
        }
        if not stores:
            return
        restorer = await restore_consumer(self.bootstrap)
        try:
            await restore_all(restorer, stores)
        finally:
            await restorer.stop()

    async def _close_unit(self, p: int) -> None:
        unit = self._units.pop(p, None)
        if unit is None:
            return
        for store in unit.stores.values():
            store.discard()
            store.close()
        with contextlib.suppress(Exception):
            await unit.producer.stop()

    # --- processing ---------------------------------------------------------------------------

    def _dispatch(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Start a turn for every idle partition number that has records."""
        by_partition: dict[int, dict[TopicPartition, list[ConsumerRecord]]] = {}
        for tp, records in batch.items():
            if records and tp not in self._pending:
                by_partition.setdefault(tp.partition, {})[tp] = records
        for p, tps in by_partition.items():
            unit = self._units.get(p)
            if unit is None:
                continue
            if unit.busy is None and not unit.paused:
                self._start(unit, tps)
                continue
            # a unit in a timer-only turn (nothing paused up front), or a co-partitioned input
            # of a backed-off one: read them again once the unit is free
            self._rewind(tps)
            if unit.busy is not None:
                self._hold(unit, set(tps) - unit.paused)
            else:
                self._consumer_pause(set(tps) - unit.paused)
                unit.paused |= set(tps)

    def _start_timers(self) -> None:
        """Give every idle partition whose timer is due, or whose work in flight waits to be
        settled, a turn of its own (no records)."""
        for unit in self._units.values():
            if unit.busy is None and (self._timer_due(unit) or self._settle_due(unit)):
                self._start(unit, None)

    def _timer_due(self, unit: _Unit) -> bool:
        interval = self.spec.timer_interval_s
        return interval > 0 and time.monotonic() - unit.last_timer >= interval

    def _settle_due(self, unit: _Unit) -> bool:
        """Unsettled work and no batch for ``commit_interval_ms``: a batch would settle it."""
        stage = self._settling
        if stage is None or not stage.unsettled(unit.partition):
            return False
        return time.monotonic() >= unit.started + self._interval

    async def _settle_all(self) -> None:
        """Settle every partition's work in flight before the partitions may move (rebalance,
        shut-down); a partition that fails to is left to its next owner's in-doubt handling."""
        stage = self._settling
        if stage is None:
            return
        for unit in list(self._units.values()):
            if stage.unsettled(unit.partition):
                with contextlib.suppress(Exception):  # _transact logged it
                    await self._transact(unit, stage.settle)

    def _start(self, unit: _Unit, tps: dict[TopicPartition, list[ConsumerRecord]] | None) -> None:
        """Start a turn of ``unit``; with records, its input partitions stay paused until it
        is done. A timer-only turn pauses nothing up front (most find nothing due and end at
        once): records that arrive meanwhile are read again afterwards (``_dispatch``)."""
        consumer = self._consumer
        assert consumer is not None
        if tps:
            inputs = {TopicPartition(t, unit.partition) for t in self.spec.inputs}
            self._hold(unit, (inputs & consumer.assignment()) - self._pending - unit.paused)
            unit.started = time.monotonic()
        unit.busy = asyncio.create_task(self._turn(unit, tps))

    async def _turn(
        self, unit: _Unit, tps: dict[TopicPartition, list[ConsumerRecord]] | None
    ) -> None:
        """A batch's transaction, then the timer's if it is due (a busy partition would
        otherwise never be idle at a timer check under load)."""
        try:
            if tps:
                await self._process_partition(unit, tps)
            if self._timer_due(unit):
                unit.last_timer = time.monotonic()
                await self._run_timer(unit)
            elif not tps and self._settling is not None and self._settle_due(unit):
                await self._transact(unit, self._settling.settle)
        except Exception as exc:  # fenced, or an abort failed: the runner restarts
            if self._failure is None:
                self._failure = exc
        finally:
            unit.busy = None
            self._release(unit)

    def _hold(self, unit: _Unit, tps: set[TopicPartition]) -> None:
        tps -= unit.held
        self._consumer_pause(tps)
        unit.held |= tps

    def _consumer_pause(self, tps: set[TopicPartition]) -> None:
        if tps and self._consumer is not None:
            self._consumer.pause(*tps)

    def _release(self, unit: _Unit) -> None:
        """Resume a unit's held partitions, except those backed off after a failure, once
        ``commit_interval_ms`` has passed since its last batch started."""
        consumer = self._consumer
        if consumer is None or self._failure is not None:
            return
        if self._units.get(unit.partition) is not unit:
            return
        wait = unit.started + self._interval - time.monotonic()
        if wait > 0 and unit.held:
            asyncio.get_running_loop().call_later(wait, self._release_later, unit)
            return
        held, unit.held = unit.held - unit.paused, set()
        resume = held & consumer.assignment()
        if resume:
            consumer.resume(*resume)

    def _release_later(self, unit: _Unit) -> None:
        if unit.busy is None:  # else the turn in flight releases it when done
            self._release(unit)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _drain(self) -> None:
        """Wait for every batch and timer in flight (their errors are the loop's to raise)."""
        busy = [u.busy for u in self._units.values() if u.busy is not None]
        if busy:
            await asyncio.wait(busy)

    def _cancel_in_flight(self) -> None:
        for unit in self._units.values():
            if unit.busy is not None:
                unit.busy.cancel()

    async def _process_partition(
        self, unit: _Unit, tps: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        p = unit.partition
        # A batch fetched before a rebalance, or after aiokafka applied its own (possibly stale)
        # committed-offset reset, may start below what we committed: that part is already done.
        # Partitions we no longer own have no unit and are skipped by ``_dispatch``.
        tps = {tp: _after(recs, unit.positions.get(tp)) for tp, recs in tps.items()}
        tps = {tp: recs for tp, recs in tps.items() if recs}
        if not tps:
            return
        records = [r for recs in tps.values() for r in recs]
        if len(tps) > 1:  # several co-partitioned inputs: interleave by broker append time
            records.sort(key=lambda r: r.timestamp)
        offsets = {tp: recs[-1].offset + 1 for tp, recs in tps.items()}

        async def body(ctx: PartitionContext) -> None:
            await self.stage.process(ctx, records)
            await ctx.begin()
            ctx.offsets = offsets

        if await self._transact(unit, body):
            unit.positions.update(offsets)
            if self._on_commit is not None:
                self._on_commit(p, len(records))
            return
        # back off this partition only (paused for a second); the others and the timers go on
        self._rewind(tps)
        unit.backoff_until = time.monotonic() + 1.0
        unit.paused = set(tps)  # held already: ``_release`` leaves them paused

    def _resume_due(self) -> None:
        consumer = self._consumer
        now = time.monotonic()
        for unit in self._units.values():
            if unit.paused and unit.backoff_until <= now:
                if unit.busy is not None:  # a timer: resumed with the rest when it is done
                    unit.held |= unit.paused
                elif consumer is not None:
                    consumer.resume(*(unit.paused & consumer.assignment()))
                unit.paused = set()

    def _rewind(self, tps: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        consumer = self._consumer
        if consumer is not None:
            for tp, recs in tps.items():
                consumer.seek(tp, recs[0].offset)

    async def _run_timer(self, unit: _Unit) -> None:
        async def body(ctx: PartitionContext) -> None:
            await self.stage.on_timer(ctx, int(time.time() * 1000))

        await self._transact(unit, body)

    async def _transact(
        self, unit: _Unit, body: Callable[[PartitionContext], Awaitable[None]]
    ) -> bool:
        """Run ``body`` in one transaction of ``unit``; True when it committed (or was empty).

        ``body`` may call ``ctx.commit()`` to commit what it did so far and go on in a new
        transaction (the deliver stage makes its ``attempt`` records durable that way).
        """
        ctx = PartitionContext(unit.partition, unit.stores, unit.producer, transactional=self._eos)
        ctx.committer = lambda: self._commit(unit, ctx)
        try:
            await body(ctx)
            await self._commit(unit, ctx)
        except ProducerFenced:
            # another worker owns this partition now: we are the zombie
            for store in unit.stores.values():
                store.discard()
            raise
        except Exception as exc:
            log.exception(
                "transaction failed; aborting and rewinding",
                extra={"stage": self.spec.name, "partition": unit.partition, "error": repr(exc)},
            )
            for store in unit.stores.values():
                store.discard()
            ctx.outbox.reset()
            ctx.committed.clear()
            if ctx.in_txn and self._eos:
                try:
                    await unit.producer.abort_transaction()
                except Exception:
                    raise RuntimeError("abort failed; restarting the stage") from exc
            return False
        return True

    async def _commit(self, unit: _Unit, ctx: PartitionContext) -> None:
        """Changelog the store overlays, commit, then apply the overlays locally."""
        changelog: dict[str, Outbox] = {}
        for name, store in unit.stores.items():
            pending = store.pending()
            if not pending:
                continue
            await ctx.begin()
            box = changelog[name] = Outbox(unit.producer)
            topic = unit.changelogs[name]
            for key, value in pending.items():
                box.append(topic, key, value, None, unit.partition)
            await box.flush()
        if not ctx.in_txn:
            _run_callbacks(ctx)
            return
        await ctx.outbox.flush()
        offsets, ctx.offsets = ctx.offsets, {}
        # A send that failed must fail the transaction: commit_transaction alone does not
        # check that every batch was written, so wait for every ack first. The offsets go into
        # the transaction meanwhile (their round trips overlap the produce requests').
        futs: list[Awaitable[Any]] = [f for f, _ in ctx.outbox.submitted]
        futs += [f for box in changelog.values() for f, _ in box.submitted]
        if self._eos and offsets:
            futs.append(unit.producer.send_offsets_to_transaction(offsets, self.group_id))
        await asyncio.gather(*futs)
        if self._eos:
            await unit.producer.commit_transaction()
        elif offsets:
            consumer = self._consumer
            if consumer is None:
                raise RuntimeError("consumer gone before the offset commit")
            await consumer.commit(offsets)
        ctx.in_txn = False
        ctx.outbox.reset()
        for name, store in unit.stores.items():
            box_ = changelog.get(name)
            next_offset = None
            if box_ is not None and box_.submitted:
                next_offset = max(f.result().offset + n for f, n in box_.submitted)
            store.apply(next_offset)
        self.committed_batches += 1
        _run_callbacks(ctx)


def _run_callbacks(ctx: PartitionContext) -> None:
    callbacks, ctx.committed = ctx.committed, []
    for callback in callbacks:
        callback()


def _after(records: list[ConsumerRecord], position: int | None) -> list[ConsumerRecord]:
    if position is None or not records or records[0].offset >= position:
        return records
    return [r for r in records if r.offset >= position]
