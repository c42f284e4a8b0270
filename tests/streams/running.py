"""A StageRunner running in this process for the length of a block (the runtime's tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.fixtures.kafka_helpers import unique_name
from wxsub.streams.runtime import StageRunner
from wxsub.streams.stage import Stage

__all__ = ["running"]


@contextlib.asynccontextmanager
async def running(
    bootstrap: str, tmp_path: Path, stage: Stage, *, wait_ready: bool = False, **runner_kw: Any
) -> AsyncIterator[tuple[StageRunner, asyncio.Task[None]]]:
    """``stage`` run by a StageRunner (a fresh app id, a 6 s session); stopped at the end,
    however the block ends. ``runner_kw`` go to StageRunner (changelog_topic has a default)."""
    runner_kw.setdefault(
        "changelog_topic", lambda s, n: f"{stage.spec.inputs[0]}-{s}-{n}-changelog"
    )
    runner = StageRunner(
        stage,
        bootstrap=bootstrap,
        app_id=unique_name(stage.spec.name),
        state_dir=tmp_path,
        session_timeout_ms=6000,
        **runner_kw,
    )
    task = asyncio.create_task(runner.run())
    try:
        if wait_ready:
            async with asyncio.timeout(60):
                await runner.ready.wait()
        yield runner, task
    finally:
        await runner.stop()
        await asyncio.wait_for(task, 60)
