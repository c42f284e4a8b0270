"""A deliver worker process for crash tests: ``python -m tests.deliver.worker CONFIG_JSON``.

CONFIG_JSON: {"bootstrap", "prefix", "partitions", "app_id", "max_in_flight", "api_base",
"state_dir", "policy": {DeliveryPolicy fields}} and optionally "sweep_interval_s" (the ledger's
expiry sweep) and "clock_offset_ms" (the stage's clock runs this far ahead of the wall clock, so
the sweep finds entries past ``retention.delivery_s``). SIGTERM stops it cleanly; the tests kill
-9 it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from tests.deliver.harness import build_stage, make_runner
from tests.fixtures.sandbox import APPID, SECRET
from wxsub.agents.base import wall_ms
from wxsub.agents.rules.delivery import DeliveryPolicy
from wxsub.settings import AppCredentials, Secret, Settings


def settings_of(cfg: dict[str, Any]) -> Settings:
    base = Settings().with_overrides(
        kafka={
            "bootstrap": cfg["bootstrap"],
            "topic_prefix": cfg["prefix"],
            "partitions": cfg["partitions"],
        },
        worker={
            "app_id": cfg["app_id"],
            "max_in_flight": cfg["max_in_flight"],
            "sweep_interval_s": cfg.get("sweep_interval_s", 600.0),
        },
        wechat={"api_base": cfg["api_base"], "read_timeout_s": 5.0, "connect_timeout_s": 2.0},
    )
    apps = {APPID: AppCredentials(APPID, Secret(SECRET))}
    return replace(base, wechat=replace(base.wechat, apps=apps))


async def main(cfg: dict[str, Any]) -> None:
    settings = settings_of(cfg)
    offset = int(cfg.get("clock_offset_ms", 0))
    stage, client, _ = build_stage(
        settings, DeliveryPolicy(**cfg["policy"]), clock=lambda: wall_ms() + offset
    )
    runner = make_runner(settings, stage, Path(cfg["state_dir"]))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(runner.stop()))
    try:
        await runner.run()
    finally:
        await client.aclose()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO if os.environ.get("DBG") else logging.WARNING,
        format="%(asctime)s %(process)d %(name)s %(message)s",
    )
    asyncio.run(main(orjson.loads(sys.argv[1])))
