"""Durable production of subscription records: idempotent aiokafka producer, acks=all.

The gateway answers WeChat ``success`` only after :meth:`SubscriptionProducer.produce` returns,
i.e. after every record of the push is confirmed by all in-sync replicas. Any aiokafka error
(or no confirmation within the timeout) becomes :class:`ProduceError` here, at the boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from wxsub.errors import ProduceError
from wxsub.settings import Settings
from wxsub.streams.connection import access_denied, bootstrap_error, security_kwargs

__all__ = ["RecordSink", "SubscriptionProducer"]


class RecordSink(Protocol):
    """Where the gateway puts ``(key, value)`` records; returns once they are durable."""

    async def produce(self, records: Sequence[tuple[bytes, bytes]]) -> None: ...


class SubscriptionProducer:
    """An idempotent, acks=all producer to the subscriptions topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        timeout_s: float = 4.0,
        linger_s: float = 0.0,
        client_id: str = "wxsub-gateway",
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._bootstrap = bootstrap
        self._security: Mapping[str, Any] = security or {}
        self._kwargs: dict[str, Any] = dict(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=int(linger_s * 1000),
            request_timeout_ms=max(1000, int(timeout_s * 1000)),
            **self._security,
        )
        self._producer: AIOKafkaProducer | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SubscriptionProducer:
        return cls(
            settings.kafka.bootstrap,
            settings.kafka.topic("subscriptions"),
            timeout_s=settings.gateway.produce_timeout_s,
            linger_s=settings.kafka.producer_linger_s,
            security=security_kwargs(settings.kafka),
        )

    @property
    def connected(self) -> bool:
        """True once :meth:`start` has succeeded (until :meth:`stop`)."""
        return self._producer is not None

    async def start(self) -> None:
        """Connect (bootstrap and get an idempotent producer id), or raise.

        :class:`~wxsub.streams.connection.AccessDenied` when Kafka refuses our principal
        (retrying cannot help), :class:`ProduceError` for anything else (Kafka unreachable):
        call ``start`` again later; until then :meth:`produce` raises ProduceError."""
        producer = AIOKafkaProducer(**self._kwargs)
        try:
            await producer.start()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            if not isinstance(exc, KafkaError):
                raise
            cause: BaseException = exc
            if isinstance(exc, KafkaConnectionError) and self._security:
                cause = await bootstrap_error(self._bootstrap, self._security) or exc
            denied = access_denied(cause, self._security, "Cluster")
            if denied is not None:
                raise denied from None
            raise ProduceError(f"cannot connect to Kafka: {type(cause).__name__}") from exc
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def to_topic(self, topic: str) -> RecordSink:
        """A sink writing to ``topic`` through this same producer (e.g. ``card-events``)."""
        return _TopicSink(self, topic)

    async def produce(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Send all records and wait for every confirmation, or raise ProduceError."""
        await self.produce_to(self.topic, records)

    async def produce_to(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """:meth:`produce` to another topic."""
        producer = self._producer
        if producer is None:
            raise ProduceError("not connected to Kafka yet")
        try:
            async with asyncio.timeout(self._timeout_s):
                pending = [
                    await producer.send(topic, value=value, key=key) for key, value in records
                ]
                await asyncio.gather(*pending)
        except TimeoutError as exc:
            raise ProduceError(f"no acks=all confirmation within {self._timeout_s}s") from exc
        except KafkaError as exc:
            raise ProduceError(f"Kafka refused the write: {type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class _TopicSink:
    owner: SubscriptionProducer
    topic: str

    async def produce(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        await self.owner.produce_to(self.topic, records)
