"""``wxsub worker``: run the pipeline's stages in this process."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from wxsub.logs import setup_logging
from wxsub.settings import load_settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run the stream worker (agents + /metrics, /health, /stats)",
        description="Run the wxsub worker: the orders, products, decide, deliver and stats stages, "
        "exactly once, plus a web server with /metrics and /health.",
    )
    p.add_argument(
        "--stages",
        default="orders,products,decide,deliver,stats",
        help="comma-separated stages to run here (default: all)",
    )
    p.add_argument("-l", "--log-level", default=None, help="log level (default: worker.log_level)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    setup_logging(args.log_level or settings.worker.log_level)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    asyncio.run(_main(settings, stages))
    return 0


async def _main(settings: Any, stages: list[str]) -> None:
    from wxsub.streams.worker import create_worker

    worker = create_worker(settings, stages)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)
