"""aiokafka's fetched-record path with fewer Python calls per record, pinned to the versions read.

Every input record of every stage comes out of ``PartitionRecords``: ``FetchResult.getall``
iterates it, its ``__next__`` resumes the ``_unpack_records`` generator, which calls
``_consumer_record`` for each record, which builds the ``ConsumerRecord``. Three Python frames
per record around the one that matters. For a consumer without deserializers (every consumer
here) the patched generator builds the same ``ConsumerRecord`` (same fields, same values) in its
own loop, and iterating ``PartitionRecords`` gives that generator itself: 12.9 k -> 9.9 k
instructions per record over real record batches (bench/RESULTS.md, session 9). Everything per
batch is aiokafka's code as shipped: the CRC check, the aborted transactions of
``read_committed``, control batches, the positions.

Only versions whose fetcher was read are patched (:data:`FETCH_VERSIONS`); on any other the
fetcher is left as shipped. A consumer with a key or value deserializer takes aiokafka's own
per-record path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import aiokafka
import aiokafka.errors as errors
from aiokafka.consumer import fetcher as _fetcher
from aiokafka.structs import ConsumerRecord

__all__ = ["FETCH_VERSIONS", "SHIPPED", "apply"]

log = logging.getLogger(__name__)

#: aiokafka versions whose ``PartitionRecords`` was read: ``_unpack_records`` below is its
#: generator with the per-record part inlined for a consumer without deserializers
FETCH_VERSIONS = frozenset({"0.14.0"})
#: aiokafka's own ``_unpack_records`` and ``__iter__`` (tests compare against them)
SHIPPED = (_fetcher.PartitionRecords._unpack_records, _fetcher.PartitionRecords.__iter__)  # noqa: SLF001


def apply(version: str | None = None) -> bool:
    """Patch ``PartitionRecords``; True when the running aiokafka is patched (idempotent)."""
    version = aiokafka.__version__ if version is None else version
    records = _fetcher.PartitionRecords
    if version not in FETCH_VERSIONS or not hasattr(records, "_unpack_records"):
        log.warning("aiokafka %s not verified for the fetch path; left as shipped", version)
        return False
    if getattr(records._unpack_records, "wxsub_tuned", False):  # noqa: SLF001
        return True
    records._unpack_records = _unpack_records  # noqa: SLF001
    records.__iter__ = _iter
    return True


def _iter(self: Any) -> Any:
    """The records' generator itself (aiokafka's ``__next__`` only wraps it); ``self`` once
    it is done, as before."""
    records = self._records_iterator
    return self if records is None else records


def _unpack_records(self: Any) -> Iterator[ConsumerRecord[Any, Any]]:
    """aiokafka 0.14.0's ``PartitionRecords._unpack_records``; the records of a data batch
    built here, not by ``_consumer_record``, when there are no deserializers."""
    tp = self._tp
    topic, partition = tp.topic, tp.partition
    records = self._records
    plain = self._key_deserializer is None and self._value_deserializer is None
    record_of = ConsumerRecord
    while records.has_next():
        next_batch = records.next_batch()
        if self._check_crcs and not next_batch.validate_crc():
            # This iterator will be closed after the exception, so we don't
            # try to drain other batches here. They will be refetched.
            raise errors.CorruptRecordException(f"Invalid CRC - {tp}")

        if self._isolation_level == _fetcher.READ_COMMITTED and next_batch.producer_id is not None:
            self._consume_aborted_up_to(next_batch.base_offset)
            if next_batch.is_control_batch and self._contains_abort_marker(next_batch):
                self._aborted_producers.discard(next_batch.producer_id)
            if next_batch.is_transactional and next_batch.producer_id in self._aborted_producers:
                self.next_fetch_offset = next_batch.next_offset
                continue

        # control batches are skipped whatever the isolation level
        if next_batch.is_control_batch:
            self.next_fetch_offset = next_batch.next_offset
            continue

        if not plain:
            for record in next_batch:
                if record.offset < self.next_fetch_offset:
                    continue  # a compacted or compressed batch's earlier records
                consumer_record = self._consumer_record(tp, record)
                self.next_fetch_offset = record.offset + 1
                yield consumer_record
        else:
            for record in next_batch:
                offset = record.offset
                if offset < self.next_fetch_offset:
                    continue
                key, value = record.key, record.value
                # ConsumerRecord(topic, partition, offset, timestamp, timestamp_type, key,
                # value, checksum, serialized_key_size, serialized_value_size, headers)
                consumer_record = record_of(
                    topic, partition, offset, record.timestamp, record.timestamp_type, key,
                    value, record.checksum, -1 if key is None else len(key),
                    -1 if value is None else len(value), tuple(record.headers),
                )  # fmt: skip
                self.next_fetch_offset = offset + 1
                yield consumer_record

        # the next fetch starts after the batch's last offset, even if compaction removed
        # its last records
        self.next_fetch_offset = next_batch.next_offset


_unpack_records.wxsub_tuned = True  # type: ignore[attr-defined]
