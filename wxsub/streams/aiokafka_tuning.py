"""One aiokafka constant tuned for back-to-back transactions, pinned to the versions checked.

After ``EndTxn`` the coordinator still writes the transaction markers for a few milliseconds;
the next transaction's ``AddPartitionsToTxn`` meanwhile gets ``CONCURRENT_TRANSACTIONS``.
aiokafka (``aiokafka.producer.sender.BACKOFF_OVERRIDE``, the KAFKA-5477 workaround it copied
from the Java client) then sleeps a hard-coded 20 ms, whatever ``retry_backoff_ms`` says. Our
stages run one transaction after another on each partition's producer, so every transaction
paid it: ``bench/txn_probe.py`` measured the first send of a transaction at ~29 ms with it and
~8 ms with 2 ms (2026-11-27, Kafka 4.4, see bench/RESULTS.md).

The upstream fix this stands for: make the back-off for ``CONCURRENT_TRANSACTIONS`` on
``AddPartitionsToTxn`` short and exponential (or configurable) in aiokafka, or better, support
transaction protocol v2 (KIP-890), where the broker adds partitions implicitly and the
round trip disappears. Only versions whose sender we read are patched; on any other the
constant is left alone and a warning says so (a slower transaction start, nothing worse).
"""

from __future__ import annotations

import logging

import aiokafka
import aiokafka.producer.sender as _sender

__all__ = ["CONCURRENT_TXN_BACKOFF_S", "VERIFIED_VERSIONS", "apply"]

log = logging.getLogger(__name__)

#: aiokafka versions whose ``Sender`` was read and uses ``BACKOFF_OVERRIDE`` as described above.
VERIFIED_VERSIONS = frozenset({"0.14.0"})
#: Retry after this long when the previous transaction's markers are still being written.
CONCURRENT_TXN_BACKOFF_S = 0.002


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
    return True
