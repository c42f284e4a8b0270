"""Build and run the sandbox: ``create_app(state)``, :class:`Sandbox`, :func:`run_sandbox`.

In-process use (tests, demo, benchmarks)::

    async with run_sandbox(world, port=0) as sb:
        client = WeChatClient(api_base=sb.base_url, ...)
        sb.world.grant(appid, openid, template_id)
        sb.recorder.calls(endpoint="send", errcode=0)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from wxsub_sandbox.admin import AdminApi, admin_errors
from wxsub_sandbox.api import WeChatApi
from wxsub_sandbox.clock import Clock, system_clock
from wxsub_sandbox.faults import Faults
from wxsub_sandbox.recorder import Recorder
from wxsub_sandbox.state import SandboxState
from wxsub_sandbox.tokens import TokenService
from wxsub_sandbox.world import World, default_world, load_world

__all__ = ["Sandbox", "create_app", "run_sandbox"]

log = logging.getLogger(__name__)

WorldSource = World | str | Path | Mapping[str, Any] | None


def create_app(state: SandboxState) -> web.Application:
    """The aiohttp application serving the WeChat endpoints and ``/admin/``."""
    app = web.Application(middlewares=[admin_errors], client_max_size=4 * 1024 * 1024)
    WeChatApi(state).add_routes(app)
    AdminApi(state).add_routes(app)
    return app


class Sandbox:
    """A running sandbox: ``base_url`` for clients, ``world``/``recorder``/``faults`` in-process."""

    def __init__(
        self,
        world: WorldSource = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = system_clock,
        record_path: str | Path | None = None,
        max_records: int | None = None,
    ) -> None:
        if not isinstance(world, World):
            world = default_world() if world is None else load_world(world)
        self.state = SandboxState.create(world, clock, Recorder(record_path, max_records))
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def world(self) -> World:
        return self.state.world

    @property
    def recorder(self) -> Recorder:
        return self.state.recorder

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @property
    def clock(self) -> Clock:
        return self.state.clock

    @property
    def tokens(self) -> TokenService:
        return self.state.tokens

    async def start(self) -> None:
        runner = web.AppRunner(create_app(self.state), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            self.recorder.close()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        log.info("sandbox listening", extra={"base_url": self.base_url})

    async def stop(self) -> None:
        """Stop serving, let event callbacks finish, close the record file."""
        try:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            await self.world.drain_events()
        finally:
            self.recorder.close()


@asynccontextmanager
async def run_sandbox(
    world: WorldSource = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock = system_clock,
    record_path: str | Path | None = None,
    max_records: int | None = None,
) -> AsyncIterator[Sandbox]:
    """Run a sandbox for the duration of the block (stopped even on error).

    ``world``: a World, a TOML path, a dict of the same shape, or None for ``default_world()``.
    ``port=0`` picks a free port; ``clock`` may be a ManualClock to move time by hand.
    """
    sandbox = Sandbox(
        world, host=host, port=port, clock=clock, record_path=record_path, max_records=max_records
    )
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()
