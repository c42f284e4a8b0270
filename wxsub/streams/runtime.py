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
  to their changelog partitions -> input offsets via ``send_offsets_to_transaction`` -> every send's
  ack -> commit -> only then apply the overlays to local RocksDB (see store.py; the exact order
  is written out in transaction.py). Any failure aborts, drops the
  overlays, rewinds the partition to its committed offsets and gives it a new producer (a failed
  send can leave aiokafka's sequence numbers out of step: partition.py ``renew_producer``).
- Timers (``stage.on_timer``) run per partition in their own transactions.
- ``commit_interval_ms``: a partition's batches start about this far apart (held paused until
  then; pacing.py: a stage fed by another stage's commits may start up to half an interval
  early, one batch per interval on average), which bounds its transactions per second (each
  costs ~5-7 ms of broker and client CPU, whatever it carries: docs/design.md).
- A ``Settling`` stage (stage.py) may start work after a commit (``ctx.on_commit``) whose
  results a later transaction writes: an idle partition with such work gets a ``settle`` turn
  once the commit interval has passed (an ``Answering`` stage's: as soon as the work is done,
  when that is early in the interval: turns.py), and every partition is settled before a
  rebalance or shut-down gives it up.
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

Where each job lives (this module wires them together behind :class:`StageRunner`):

- poll.py: the consumer-group member, the poll loop and the rebalance callbacks;
- turns.py: per-partition pipelining (a turn per partition as a task, timers, settling);
- flow.py: pausing, resuming, rewinding and backing off a partition's inputs;
- partition.py: what is held per partition, opening (producer, stores, restore) and closing it;
- transaction.py: one transaction, and the commit order, step by step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from wxsub.streams import aiokafka_fetch, aiokafka_tuning
from wxsub.streams.connection import access_denied
from wxsub.streams.flow import InputFlow
from wxsub.streams.pacing import Pacer
from wxsub.streams.partition import PartitionOpener, RunState
from wxsub.streams.poll import PollLoop
from wxsub.streams.stage import Stage
from wxsub.streams.store import CommittedView
from wxsub.streams.transaction import Transactor
from wxsub.streams.turns import Turns

__all__ = ["StageRunner"]

log = logging.getLogger(__name__)

Guarantee = Literal["exactly_once", "at_least_once"]


class StageRunner:
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
        member_data: bytes = b"",
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.stage = stage
        self.spec = stage.spec
        self.bootstrap = bootstrap
        self._security = dict(security or {})
        self.group_id = f"{app_id}-{self.spec.name}"
        self.app_id = app_id
        self.state_dir = state_dir / self.spec.name
        self._linger_ms = linger_ms  # unused: producers hand over whole batches (partition.py)
        eos = guarantee == "exactly_once"
        aiokafka_fetch.apply()  # fewer Python calls per fetched record
        if eos:
            aiokafka_tuning.apply()  # back-to-back transactions: 2 ms, not 20 ms, between them
        interval = commit_interval_ms / 1000
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once partitions are assigned and restored
        self._state = RunState()
        opener = PartitionOpener(
            spec=self.spec,
            bootstrap=bootstrap,
            app_id=app_id,
            state_dir=self.state_dir,
            changelog_topic=changelog_topic,
            eos=eos,
            security=security,
        )
        self._txn = Transactor(
            self._state,
            stage=self.spec.name,
            group_id=self.group_id,
            eos=eos,
            renew=opener.renew_producer,
        )
        pacer = Pacer(self.spec.pacing, interval)
        flow = InputFlow(self._state, pacer)
        turns = Turns(stage, self._state, flow, self._txn, pacer, on_commit=on_commit)
        self._poll = PollLoop(
            self.spec,
            self._state,
            opener,
            turns,
            flow,
            bootstrap=bootstrap,
            group_id=self.group_id,
            max_batch=max_batch,
            poll_timeout_ms=poll_timeout_ms,
            session_timeout_ms=session_timeout_ms,
            ready=self.ready,
            stopping=self._stopping,
            member_data=member_data,
            security=security,
        )

    @property
    def committed_batches(self) -> int:
        """Transactions committed with something in them (batches, timers, settle turns)."""
        return self._txn.committed_batches

    async def run(self) -> None:
        """Process until ``stop()``; a fenced or broken runner restarts itself after a pause."""
        while not self._stopping.is_set():
            try:
                await self._poll.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                denied = access_denied(exc, self._security, self._resource(exc))
                if denied is not None:  # retrying cannot help: say so once and stop
                    log.error(
                        "stage stopped", extra={"stage": self.spec.name, "error": str(denied)}
                    )
                    with contextlib.suppress(Exception):
                        await self._poll.teardown()
                    raise denied from None
                log.exception("stage failed; restarting", extra={"stage": self.spec.name})
                await self._poll.teardown()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 2.0)
        await self._poll.teardown()

    async def stop(self) -> None:
        self._stopping.set()

    def committed_store(self, partition: int, name: str) -> CommittedView | None:
        """A read-only view of store ``name`` of ``partition`` as of its last commit, while this
        runner has the partition open and restored (else None). Reads never see a batch's
        uncommitted writes (store.py); read it without awaiting in between, as the partition
        may be closed at any ``await``."""
        unit = self._state.units.get(partition)
        if unit is None or name not in unit.stores:
            return None
        return unit.stores[name].committed()

    def _resource(self, exc: BaseException) -> str:
        """The Kafka resource a denial of this stage's clients is about, for the message."""
        text = f"{exc} {exc.__cause__ or ''}"
        if "Group" in text or "Group" in type(exc).__name__:
            return f"Group:{self.group_id}"
        if "TransactionalId" in text or "TransactionalId" in type(exc).__name__:
            return f"TransactionalId:{self.app_id}-{self.spec.name}-<partition> (prefix)"
        inputs = ", ".join(self.spec.inputs)
        return f"Topic:{inputs} (read) or this stage's output/changelog topics (write)"

    def lag(self) -> int:
        """Records behind the input's high watermark, over this runner's partitions (from the
        last fetch; 0 when unknown)."""
        consumer = self._state.consumer
        if consumer is None:
            return 0
        behind = 0
        for unit in self._state.units.values():
            for tp, position in unit.positions.items():
                high = consumer.highwater(tp)
                if high is not None and high > position:
                    behind += high - position
        return behind
