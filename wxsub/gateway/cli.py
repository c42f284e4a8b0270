"""``wxsub gateway``: run the WeChat message-push endpoint until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry

from wxsub.errors import ProduceError
from wxsub.gateway.app import PUSH_PATH, create_gateway_app
from wxsub.gateway.producer import SubscriptionProducer
from wxsub.logs import setup_logging
from wxsub.settings import Settings, load_settings
from wxsub.streams.connection import AccessDenied, KafkaProbe

__all__ = ["register", "serve"]

log = logging.getLogger("wxsub.gateway")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("gateway", help="run the WeChat message-push endpoint")
    parser.add_argument("--host", help="bind address (default: gateway.host)")
    parser.add_argument("--port", type=int, help="TCP port (default: gateway.port)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.with_overrides(gateway=overrides)
    setup_logging(settings.worker.log_level)
    asyncio.run(serve(settings))  # AccessDenied: one line, exit 2 (wxsub.cli)
    return 0


#: Waits between attempts to connect the producer while Kafka is unreachable: doubling from
#: the first to the second value, then staying there.
RETRY_S = (0.5, 30.0)


async def serve(
    settings: Settings,
    registry: CollectorRegistry = REGISTRY,
    stop: asyncio.Event | None = None,
    *,
    retry_s: tuple[float, float] = RETRY_S,
) -> None:
    """Listen at once and connect the producer in the background; run until ``stop`` is set
    (or a signal).

    While Kafka is unreachable pushes get 503 (WeChat retries them), ``/health/live`` 200 and
    ``/health/ready`` 503, and the producer's start is retried with bounded exponential backoff
    (``retry_s``). Kafka refusing our principal is not retried: AccessDenied is raised."""
    stop = stop or _signal_event()
    producer = SubscriptionProducer.from_settings(settings)
    probe = KafkaProbe(settings.kafka)
    cards = producer.to_topic(settings.kafka.topic("card-events"))
    ready = _Readiness(producer, probe)
    app = create_gateway_app(settings, producer, registry, probe=ready, card_sink=cards)
    runner = web.AppRunner(app, access_log=None)
    tasks: list[asyncio.Task[None]] = []
    try:
        await runner.setup()
        gw = settings.gateway
        await web.TCPSite(runner, gw.host, gw.port).start()
        log.info(
            "gateway listening",
            extra={"host": gw.host, "port": gw.port, "path": PUSH_PATH, "apps": sorted(gw.apps)},
        )
        connect = asyncio.create_task(_connect(producer, retry_s), name="kafka-connect")
        stopped = asyncio.create_task(_wait(stop), name="stop")
        tasks = [connect, stopped]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if connect.done():
            connect.result()  # AccessDenied ends the gateway here
            await stopped
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await runner.cleanup()
        await probe.close()
        await producer.stop()


async def _wait(stop: asyncio.Event) -> None:
    await stop.wait()


async def _connect(producer: SubscriptionProducer, retry_s: tuple[float, float]) -> None:
    """Start ``producer``, retrying while Kafka is unreachable; one log line per failure."""
    delay, longest = retry_s
    attempt = 0
    while True:
        attempt += 1
        try:
            await producer.start()
        except AccessDenied as exc:
            log.error("gateway stopped", extra={"error": str(exc)})
            raise
        except ProduceError as exc:
            log.warning(
                "Kafka unreachable; pushes answered 503, retrying",
                extra={"attempt": attempt, "retry_in_s": delay, "error": str(exc)},
            )
            await asyncio.sleep(delay)
            delay = min(longest, delay * 2)
            continue
        log.info("gateway connected to Kafka", extra={"attempts": attempt})
        return


class _Readiness:
    """Ready when the producer is connected and Kafka answers now."""

    def __init__(self, producer: SubscriptionProducer, probe: KafkaProbe) -> None:
        self._producer = producer
        self._probe = probe

    async def check(self) -> tuple[bool, str]:
        if not self._producer.connected:
            return False, "kafka: producer not connected yet (retrying)"
        return await self._probe.check()


def _signal_event() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event
