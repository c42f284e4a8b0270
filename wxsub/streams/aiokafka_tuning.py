"""Three aiokafka back-offs tuned for back-to-back transactions, pinned to the versions checked.

After ``EndTxn`` the coordinator still writes the transaction markers for a few milliseconds;
the next transaction's ``AddPartitionsToTxn`` meanwhile gets ``CONCURRENT_TRANSACTIONS``.
aiokafka (``aiokafka.producer.sender.BACKOFF_OVERRIDE``, the KAFKA-5477 workaround it copied
from the Java client) then sleeps a hard-coded 20 ms, whatever ``retry_backoff_ms`` says. Our
stages run one transaction after another on each partition's producer, so every transaction
paid it: ``bench/txn_probe.py`` measured the first send of a transaction at ~29 ms with it and
~8 ms with 2 ms (2026-11-27, Kafka 4.4, see bench/RESULTS.md).

The same race costs more further into a transaction. Since Kafka 3.6 (KIP-890 part 1) the
brokers verify a transactional write with the transaction coordinator, and when that
verification meets the previous transaction still completing, the verification's
``CONCURRENT_TRANSACTIONS`` reaches old clients mapped to an error they know (KAFKA-15987):

- a Produce request's partition: ``NOT_ENOUGH_REPLICAS``. aiokafka's
  ``SendProduceReqHandler`` re-enqueues the batch after ``retry_backoff_ms`` (100 ms). The
  patched handler waits ``VERIFY_RETRY_S`` instead when that is the answer's only error,
  doubled at each retry of the batch up to ``retry_backoff_ms`` (a real shortage of in-sync
  replicas, the error's other cause, is back to the shipped pace after a few tries);
- a ``TxnOffsetCommit``: ``COORDINATOR_NOT_AVAILABLE``. aiokafka's ``TxnOffsetCommitHandler``
  forgets the group coordinator and sleeps ``retry_backoff_ms``. The patched handler still
  forgets it (the next try finds it again: one loopback round trip) and retries after
  ``VERIFY_RETRY_S``. A coordinator that is really gone costs no storm: finding it again fails
  first, and that lookup backs off ``retry_backoff_ms`` as before.

On the latency benchmark's broker (Kafka 4.4, 1 k events/s) ~5% of the transactions met one of
them, and their turns took 115-150 ms instead of 10-40: every hop's p99 carried it
(bench/RESULTS.md, session 9). aiokafka also logged each such produce retry as a WARNING
(~15 a second there): they go to DEBUG (``VerifyRetryLog``); other produce errors stay warnings.

The upstream fix this stands for: make these back-offs short and exponential (or
configurable) in aiokafka, or better, support transaction protocol v2 (KIP-890 part 2),
where the broker adds partitions implicitly and the round trip disappears. Only versions
whose sender we read are patched; on any other the constants are left alone and a warning
says so (slower transactions, nothing worse).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiokafka
import aiokafka.producer.sender as _sender
from aiokafka.errors import CoordinatorNotAvailableError, NoError, NotEnoughReplicasError

__all__ = [
    "CONCURRENT_TXN_BACKOFF_S", "VERIFIED_VERSIONS", "VERIFY_RETRY_S", "VerifyRetryLog", "apply",
]  # fmt: skip

log = logging.getLogger(__name__)

#: aiokafka versions whose ``Sender`` was read and uses ``BACKOFF_OVERRIDE`` as described above.
VERIFIED_VERSIONS = frozenset({"0.14.0"})
#: Retry after this long when the previous transaction's markers are still being written.
CONCURRENT_TXN_BACKOFF_S = 0.002
#: Retry a write whose transaction verification met the previous transaction after this long.
VERIFY_RETRY_S = 0.005

#: the answers retried after it: every partition's error one of these
_OFFSETS_RETRY_CODES = frozenset({NoError.errno, CoordinatorNotAvailableError.errno})
_PRODUCE_RETRY_CODES = frozenset({NoError.errno, NotEnoughReplicasError.errno})


def apply(version: str | None = None) -> bool:
    """Shorten the back-off; True when the running aiokafka is patched (idempotent)."""
    version = aiokafka.__version__ if version is None else version
    if version not in VERIFIED_VERSIONS or not isinstance(
        getattr(_sender, "BACKOFF_OVERRIDE", None), float
    ):
        log.warning(
            "aiokafka %s not verified for the transaction back-off tuning; left as shipped",
            version,
        )
        return False
    _sender.BACKOFF_OVERRIDE = CONCURRENT_TXN_BACKOFF_S
    offsets = _sender.TxnOffsetCommitHandler
    if not getattr(offsets.handle_response, "wxsub_tuned", False):
        offsets.handle_response = _offsets_retried_soon(offsets.handle_response)
    produce = _sender.SendProduceReqHandler
    if not getattr(produce.handle_response, "wxsub_tuned", False):
        produce.handle_response = _produce_retried_soon(produce.handle_response)
    sender_log = logging.getLogger(_sender.__name__)
    if not any(isinstance(f, VerifyRetryLog) for f in sender_log.filters):
        sender_log.addFilter(VerifyRetryLog())
    return True


class VerifyRetryLog(logging.Filter):
    """aiokafka's sender logs every retried produce as a WARNING; one retried for
    ``NOT_ENOUGH_REPLICAS`` (the transaction verification's race, see above) becomes DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            record.levelno == logging.WARNING
            and isinstance(record.msg, str)
            and record.msg.startswith("Got error produce response on topic-partition")
            and isinstance(args, tuple)
            and len(args) == 2
            and args[1] is NotEnoughReplicasError
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _offsets_retried_soon(handle: Callable[[Any, Any], float | None]) -> Any:
    """``TxnOffsetCommitHandler.handle_response``, retrying an answer whose only error is
    ``COORDINATOR_NOT_AVAILABLE`` after ``VERIFY_RETRY_S`` instead of ``retry_backoff_ms``."""

    def handle_response(self: Any, resp: Any) -> float | None:
        backoff = handle(self, resp)
        if backoff is None:
            return None
        codes = {code for _, partitions in resp.errors for _, code in partitions}
        return VERIFY_RETRY_S if codes <= _OFFSETS_RETRY_CODES else backoff

    handle_response.wxsub_tuned = True  # type: ignore[attr-defined]
    return handle_response


def _produce_retried_soon(handle: Callable[[Any, Any], None]) -> Any:
    """``SendProduceReqHandler.handle_response``: when the batches it re-enqueues all failed
    with ``NOT_ENOUGH_REPLICAS``, its ``do`` sleeps ``VERIFY_RETRY_S`` times 2 per earlier
    retry of those batches, at most ``retry_backoff_ms``, instead of ``retry_backoff_ms``."""

    def handle_response(self: Any, response: Any) -> None:
        handle(self, response)
        if not self._to_reenqueue:
            return
        codes = {info[1] for _, partitions in response.topics for info in partitions}
        if codes <= _PRODUCE_RETRY_CODES:
            # a batch's retry_count counts its sends: 1 after the first
            sends = max(batch.retry_count for batch in self._to_reenqueue)
            retry = VERIFY_RETRY_S * 2 ** max(0, sends - 1)
            self._default_backoff = min(self._default_backoff, retry)

    handle_response.wxsub_tuned = True  # type: ignore[attr-defined]
    return handle_response
