"""``wxsub gateway``: run the WeChat message-push endpoint until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
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
from wxsub.streams.connection import KafkaProbe

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
    try:
        asyncio.run(serve(settings))
    except ProduceError as exc:
        log.error("gateway cannot start", extra={"error": str(exc)})
        return 1
    return 0


async def serve(
    settings: Settings,
    registry: CollectorRegistry = REGISTRY,
    stop: asyncio.Event | None = None,
) -> None:
    """Start the producer and the HTTP server; run until ``stop`` is set (or a signal)."""
    stop = stop or _signal_event()
    producer = SubscriptionProducer.from_settings(settings)
    await producer.start()
    probe = KafkaProbe(settings.kafka)
    cards = producer.to_topic(settings.kafka.topic("card-events"))
    app = create_gateway_app(settings, producer, registry, probe=probe, card_sink=cards)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        gw = settings.gateway
        await web.TCPSite(runner, gw.host, gw.port).start()
        log.info(
            "gateway listening",
            extra={"host": gw.host, "port": gw.port, "path": PUSH_PATH, "apps": sorted(gw.apps)},
        )
        await stop.wait()
    finally:
        await runner.cleanup()
        await probe.close()
        await producer.stop()


def _signal_event() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event
