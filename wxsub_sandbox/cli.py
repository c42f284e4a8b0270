"""``wxsub sandbox``: run the WeChat API sandbox in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from typing import Any

from wxsub.logs import setup_logging
from wxsub_sandbox.server import run_sandbox

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help="run the WeChat API sandbox (tokens, subscribe/send, admin API)",
        description="Serve a fake WeChat API on HTTP until Ctrl-C. Point wechat.api_base at "
        "the printed base URL; drive it with /admin/ (users, accepts, faults, calls).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port (default 8089, 0 = any)")
    parser.add_argument("--world", help="world TOML file (default: a small built-in world)")
    parser.add_argument("--record", help="append every call received to this JSONL file")
    parser.set_defaults(func=_run)


# Every call leaves a record (with its data dict) in memory, so the heap only grows; with the
# default first-generation threshold (700) the collector ran ~20 times a second under load and
# its full passes over the records cost 0.03-0.1 ms per call (bench/sender.py), 10-25% of the
# sandbox's CPU. Fewer young collections: ~0.01 ms per call. This process only.
_GC_THRESHOLD = (10_000, 10, 10)


def _run(args: argparse.Namespace) -> int:
    setup_logging("info")
    gc.set_threshold(*_GC_THRESHOLD)
    asyncio.run(_serve(args))
    return 0


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_sandbox(
        args.world, host=args.host, port=args.port, record_path=args.record
    ) as sandbox:
        print(sandbox.base_url, flush=True)
        await stop.wait()
