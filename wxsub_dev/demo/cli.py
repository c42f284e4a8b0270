"""``wxsub demo``: run the local demo (see :mod:`wxsub_dev.demo`)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from wxsub.logs import setup_logging

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run everything locally with a simulated shop (Kafka, sandbox, gateway, workers)",
        description="Start local Kafka, the WeChat sandbox, the gateway and two workers, play a "
        "simulated shop, show live progress and end with a summary that reconciles every "
        "event. Ctrl-C stops everything.",
    )
    p.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (default 30)")
    p.add_argument("--rate", type=float, default=40.0, help="shop events per second (default 40)")
    p.add_argument("--users", type=int, default=60, help="simulated buyers (default 60)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--workdir", default=".wxsub_dev/demo", help="logs, config and state go here")
    p.add_argument("--bootstrap", help="use this Kafka instead of starting a local one")
    p.add_argument("--keep", action="store_true", help="keep running after the summary")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from wxsub_dev.demo.run import DemoOptions, run_demo

    setup_logging("warning")
    opts = DemoOptions(
        duration_s=args.duration,
        rate=args.rate,
        users=args.users,
        workers=args.workers,
        workdir=Path(args.workdir),
        bootstrap=args.bootstrap,
        keep=args.keep,
    )
    acc = asyncio.run(run_demo(opts))
    if acc is None:
        return 130
    return 0 if acc.reconciles else 1
