"""Two aiokafka back-offs tuned for back-to-back transactions, pinned to the versions checked.

After ``EndTxn`` the coordinator still writes the transaction markers for a few milliseconds;
the next transaction's ``AddPartitionsToTxn`` meanwhile gets ``CONCURRENT_TRANSACTIONS``.
aiokafka (``aiokafka.producer.sender.BACKOFF_OVERRIDE``, the KAFKA-5477 workaround it copied
from the Java client) then sleeps a hard-coded 20 ms, whatever ``retry_backoff_ms`` says. Our
stages run one transaction after another on each partition's producer, so every transaction
paid it: ``bench/txn_probe.py`` measured the first send of a transaction at ~29 ms with it and
~8 ms with 2 ms (2026-11-27, Kafka 4.4, see bench/RESULTS.md).

The same race costs more at the other end of a transaction. Since Kafka 3.6 (KIP-890 part 1)
the group coordinator verifies a ``TxnOffsetCommit`` with the transaction coordinator, and when
that verification meets the previous transaction still completing it answers
``COORDINATOR_NOT_AVAILABLE`` (the verification's ``CONCURRENT_TRANSACTIONS``, mapped to an
error old clients know: KAFKA-15987). aiokafka's ``TxnOffsetCommitHandler`` then forgets the
group coordinator and sleeps ``retry_backoff_ms`` (100 ms) before it asks again. On the latency
benchmark's broker ~3% of the transactions met it, and their turns took 115-140 ms instead of
10-40: every hop's p99 carried it (bench/RESULTS.md, session 9). The patched handler still
forgets the coordinator (the next try finds it again: one loopback round trip) and retries
after ``TXN_OFFSET_RETRY_S`` instead. A coordinator that is really gone costs no storm: finding
it again fails first, and that lookup backs off ``retry_backoff_ms`` as before.

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
from aiokafka.errors import CoordinatorNotAvailableError, NoError

__all__ = ["CONCURRENT_TXN_BACKOFF_S", "TXN_OFFSET_RETRY_S", "VERIFIED_VERSIONS", "apply"]

log = logging.getLogger(__name__)

#: aiokafka versions whose ``Sender`` was read and uses ``BACKOFF_OVERRIDE`` as described above.
VERIFIED_VERSIONS = frozenset({"0.14.0"})
#: Retry after this long when the previous transaction's markers are still being written.
CONCURRENT_TXN_BACKOFF_S = 0.002
#: Retry a ``TxnOffsetCommit`` answered ``COORDINATOR_NOT_AVAILABLE`` after this long.
TXN_OFFSET_RETRY_S = 0.005

#: the answers retried after it: every partition's error one of these
_SHORT_RETRY_CODES = frozenset({NoError.errno, CoordinatorNotAvailableError.errno})


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
    handler = _sender.TxnOffsetCommitHandler
    if not getattr(handler.handle_response, "wxsub_tuned", False):
        handler.handle_response = _short_not_available(handler.handle_response)
    return True


def _short_not_available(handle: Callable[[Any, Any], float | None]) -> Any:
    """``TxnOffsetCommitHandler.handle_response``, retrying an answer whose only error is
    ``COORDINATOR_NOT_AVAILABLE`` after ``TXN_OFFSET_RETRY_S`` instead of ``retry_backoff_ms``."""

    def handle_response(self: Any, resp: Any) -> float | None:
        backoff = handle(self, resp)
        if backoff is None:
            return None
        codes = {code for _, partitions in resp.errors for _, code in partitions}
        return TXN_OFFSET_RETRY_S if codes <= _SHORT_RETRY_CODES else backoff

    handle_response.wxsub_tuned = True  # type: ignore[attr-defined]
    return handle_response
