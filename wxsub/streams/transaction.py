"""One transaction of one partition: begin, the stage's body, commit; or abort.

A failure aborts the transaction and drops the store overlays, the outbox and the on-commit
callbacks; the caller (turns.py) rewinds the partition's inputs and backs it off. A fenced
producer (another worker owns the partition now) is raised: the runner restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import ProducerFenced

from wxsub.streams.outbox import Outbox
from wxsub.streams.partition import PartitionUnit, RunState
from wxsub.streams.stage import PartitionContext

__all__ = ["Transactor"]

log = logging.getLogger(__name__)

Body = Callable[[PartitionContext], Awaitable[None]]


class Transactor:
    """Runs a body in one transaction of a partition and commits it (see :meth:`commit`)."""

    def __init__(
        self,
        state: RunState,
        *,
        stage: str,
        group_id: str,
        eos: bool,
        renew: Callable[[PartitionUnit], Awaitable[None]] | None = None,
    ) -> None:
        self._state = state  # for the consumer: at_least_once commits offsets through it
        # replaces a unit's producer after a failed transaction (PartitionOpener.renew_producer)
        self._renew = renew
        self._stage = stage
        self._group_id = group_id
        self._eos = eos
        self.committed_batches = 0

    async def transact(self, unit: PartitionUnit, body: Body) -> bool:
        """Run ``body`` in one transaction of ``unit``; True when it committed (or was empty).

        ``body`` may call ``ctx.commit()`` to commit what it did so far and go on in a new
        transaction (the deliver stage makes its ``attempt`` records durable that way).
        """
        ctx = PartitionContext(unit.partition, unit.stores, unit.producer, transactional=self._eos)
        ctx.committer = lambda: self.commit(unit, ctx)
        try:
            await body(ctx)
            await self.commit(unit, ctx)
        except ProducerFenced:
            # another worker owns this partition now: we are the zombie
            for store in unit.stores.values():
                store.discard()
            raise
        except Exception as exc:
            log.exception(
                "transaction failed; aborting and rewinding",
                extra={"stage": self._stage, "partition": unit.partition, "error": repr(exc)},
            )
            for store in unit.stores.values():
                store.discard()
            ctx.outbox.reset()
            ctx.committed.clear()
            if ctx.in_txn:
                await self._recover(unit, exc)
            return False
        return True

    async def _recover(self, unit: PartitionUnit, exc: Exception) -> None:
        """After a failed transaction that sent something: abort it, then give the partition a
        new producer (a failed send can leave aiokafka's sequence numbers out of step for good:
        PartitionOpener.renew_producer). If either fails, raised: the runner restarts (and
        reads the committed offsets again)."""
        if self._eos:
            try:
                await unit.producer.abort_transaction()
            except Exception:
                raise RuntimeError("abort failed; restarting the stage") from exc
        if self._renew is None:
            return
        try:
            await self._renew(unit)
        except Exception as err:
            raise RuntimeError("no new producer; restarting the stage") from err
        log.info(
            "partition has a new producer",
            extra={"stage": self._stage, "partition": unit.partition, "after": repr(exc)},
        )

    async def commit(self, unit: PartitionUnit, ctx: PartitionContext) -> None:
        """Changelog the store overlays, commit, then apply the overlays locally.

        The order, from the transaction's start (``transact``; the body's own steps in 1):

        1. begin: the first ``ctx.send`` (or ``ctx.begin``) begins the transaction; the body
           (``stage.process``, ``on_timer`` or ``settle``) appends its records to the outbox;
           a batch's body then begins (if nothing was sent) and sets ``ctx.offsets``.
        2. Store overlays to their changelog partition ``p`` (beginning the transaction if
           needed), each store's records submitted (``send_batch``) at once.
        3. Nothing begun (no send, no overlay, no offsets: an idle timer or settle turn): run
           the on-commit callbacks and stop here.
        4. The stage's outbox is submitted (``send_batch`` per topic-partition).
        5. Input offsets via ``send_offsets_to_transaction(offsets, group_id)``, concurrently
           with 6 (their round trips overlap the produce requests').
        6. Await every send future (the outbox's and the changelogs'): ``commit_transaction``
           alone does not check that every batch was written (docs/design.md, "Races"), so a
           failed send must fail here and abort.
        7. ``commit_transaction``.
        8. Apply each store's overlay to RocksDB in one WriteBatch with the next changelog
           offset as its checkpoint (store.py): the local copy only holds committed state.
        9. Count the batch (``committed_batches``), run the on-commit callbacks
           (``ctx.on_commit``). The caller then moves the partition's position past the batch
           (turns.py) and calls the runner's ``on_commit``.

        at_least_once (plain idempotent producer): 1-4 as above with no Kafka transaction
        (``begin`` only marks the context), no 5, 6 awaits the acks, 7 is
        ``consumer.commit(offsets)`` (when there are offsets), then 8-9. A crash between 6 and
        7 replays the batch: duplicates downstream, never a loss.
        """
        changelog: dict[str, Outbox] = {}
        for name, store in unit.stores.items():
            pending = store.pending()
            if not pending:
                continue
            await ctx.begin()
            box = changelog[name] = Outbox(unit.producer)
            box.extend(unit.changelogs[name], unit.partition, pending.items())
            await box.flush()
        if not ctx.in_txn:
            _run_callbacks(ctx)
            return
        await ctx.outbox.flush()
        offsets, ctx.offsets = ctx.offsets, {}
        futs: list[Awaitable[Any]] = [f for f, _ in ctx.outbox.submitted]
        futs += [f for box in changelog.values() for f, _ in box.submitted]
        if self._eos and offsets:
            futs.append(unit.producer.send_offsets_to_transaction(offsets, self._group_id))
        await asyncio.gather(*futs)
        if self._eos:
            await unit.producer.commit_transaction()
        elif offsets:
            consumer = self._state.consumer
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
