"""The deliver stage's WeChat calls: one wave's sends, concurrently, and what their answers lead
to; and the calls a partition left running after its commit (``InFlight``).

The stage (deliver.py) decides what to send and writes what the answers lead to; this module
only makes the calls (process-wide ``max_in_flight`` slots, the send's page with its ``wxref``),
turns each answer into its delivery step (``rules.on_result``, with the 45009 quota pause and
the end-to-end latency observed once), and keeps the calls started after a commit until the
partition's next turn writes their answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Iterable, Sequence

from wxsub.agents.base import StageEnv
from wxsub.agents.quota_pauses import QuotaPauses
from wxsub.agents.rules import attribution
from wxsub.agents.rules import delivery as rules
from wxsub.agents.rules.delivery import Entry, Step, StepResult
from wxsub.errors import InDoubtError, QuotaExceeded, WeChatError
from wxsub.streams.metering import labelled
from wxsub.streams.store import PartitionStore
from wxsub.wechat.client import SendResult, WeChatClient

__all__ = ["Answered", "Calls", "InFlight", "Pending", "waves"]

log = logging.getLogger(__name__)

Pending = tuple[Entry | None, Entry]  # (what the ledger holds, what to attempt)
Answer = SendResult | WeChatError
Answered = tuple[Entry, Step, str]  # (attempt, the step its answer leads to, errcode label)


class InFlight:
    """A partition's calls started after a commit, and (once awaited) the steps they lead to.

    ``store`` is the partition's ledger store when they started: a partition given up and
    taken back has a new store, and what was in flight before is its old owner's to settle
    (its attempts are found as leftovers)."""

    def __init__(self, store: PartitionStore, calls: list[tuple[Entry, asyncio.Task[Answer]]]):
        self.store = store
        self.calls = calls
        self.answered: list[Answered] | None = None  # kept if the writing turn aborts


class Calls:
    """Makes a wave's WeChat calls and keeps each partition's calls in flight."""

    def __init__(
        self, env: StageEnv, client: WeChatClient, policy: rules.DeliveryPolicy, pauses: QuotaPauses
    ) -> None:
        self.env = env
        self.client = client
        self.policy = policy
        self.pauses = pauses
        self._slots = asyncio.Semaphore(env.settings.worker.max_in_flight)
        self._rnd = random.Random()  # noqa: S311 (jitter, not a secret)
        self.in_flight: dict[int, InFlight] = {}  # partition -> calls started after a commit

    async def make(self, attempts: list[Entry]) -> list[Answered]:
        """Call WeChat for every attempt at once; the step each answer leads to."""
        return self.results(attempts, await _answers(self._call(a) for a in attempts))

    def start(self, partition: int, store: PartitionStore, attempts: list[Entry]) -> None:
        """Start the calls (after the commit that made their attempts durable)."""
        tasks = [(a, asyncio.ensure_future(self._call(a))) for a in attempts]
        self.in_flight[partition] = InFlight(store, tasks)

    async def answered_all(self, partition: int) -> None:
        """Return once every call ``partition`` has in flight has its answer (cancelling this
        leaves the calls running)."""
        flight = self.in_flight.get(partition)
        if flight is not None and flight.calls:
            await asyncio.wait([task for _, task in flight.calls])

    async def answered(self, flight: InFlight) -> list[Answered]:
        """The steps of a partition's calls in flight (awaited once, kept for a retried turn)."""
        if flight.answered is None:
            answers = await _answers(task for _, task in flight.calls)
            flight.answered = self.results([a for a, _ in flight.calls], answers)
        return flight.answered

    def results(self, attempts: list[Entry], answers: Sequence[Answer]) -> list[Answered]:
        """The step each answer leads to, and its errcode label (latency observed here, once;
        the send is counted by the stage, with the transaction that writes it)."""
        now = self.env.clock()
        e2e = self.env.metrics.e2e_latency
        out: list[Answered] = []
        for attempt, answer in zip(attempts, answers, strict=True):
            quota = isinstance(answer, QuotaExceeded)
            pause = self.pauses.on_quota(attempt.appid, now) if quota else None
            step = rules.on_result(
                attempt, answer, now, self.policy, draw=self._rnd.random(), pause_until=pause
            )
            errcode = 0 if isinstance(answer, SendResult) else answer.errcode
            if step.result == StepResult.SENT:
                seconds = max(0.0, (now - attempt.occurred_at) / 1000)
                labelled(e2e, attempt.kind).observe(seconds)
            out.append((attempt, step, "none" if errcode is None else str(errcode)))
        return out

    async def _call(self, attempt: Entry) -> Answer:
        assert attempt.intent is not None
        async with self._slots:
            started = time.perf_counter()
            try:
                body = attribution.with_ref(attempt.intent.body, attempt.notification_id)
                return await self.client.send(attempt.appid, body)
            except WeChatError as exc:
                return exc
            finally:
                latency = time.perf_counter() - started
                labelled(self.env.metrics.wechat_latency, "send").observe(latency)


def waves(pending: Sequence[Pending]) -> list[list[Pending]]:
    """Wave n holds the n-th pending send of every user (input order kept within a user)."""
    per_user: dict[str, list[Pending]] = {}
    for item in pending:
        per_user.setdefault(item[1].user, []).append(item)
    depth = max((len(items) for items in per_user.values()), default=0)
    return [[items[n] for items in per_user.values() if n < len(items)] for n in range(depth)]


async def _answers(calls: Iterable[Awaitable[Answer]]) -> list[Answer]:
    """Every call's answer; a call that raised instead is in doubt (see ``_unknown``)."""
    got = await asyncio.gather(*calls, return_exceptions=True)
    return [a if isinstance(a, Answer) else _unknown(a) for a in got]


def _unknown(exc: BaseException) -> InDoubtError:
    """A call that ended in an unexpected error (a bug, or cancelled at shut-down): the request
    may have left, so its attempt is in doubt."""
    log.error("WeChat call failed unexpectedly", exc_info=exc)
    return InDoubtError(f"call failed: {type(exc).__name__}")
