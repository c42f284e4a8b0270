"""The demo's moving parts: Kafka, the WeChat sandbox (+ its push to the gateway), the gateway
and the workers as ``wxsub`` subprocesses, each logging to a file in the work directory.

:class:`Stack` is an async context manager: everything it started is stopped on exit, in
reverse order, even after an error or Ctrl-C (SIGTERM to the subprocesses, SIGKILL after a
grace period, then Kafka).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from wxsub.errors import SetupError
from wxsub.settings import KafkaSettings, Settings, load_settings
from wxsub.streams.topics import ensure_topics
from wxsub_dev.demo.shop import APPID, SECRET, Shop, merchants_toml, world_doc
from wxsub_dev.local_kafka import LocalKafka
from wxsub_sandbox.push import EventPusher
from wxsub_sandbox.server import Sandbox

__all__ = ["Stack", "free_port"]

_PUSH_TOKEN = "demo-push-token"  # noqa: S105 (the demo gateway's own, not a real secret)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str


@dataclass
class Stack:
    """Everything the demo runs. ``bootstrap``: an existing broker (else a LocalKafka)."""

    workdir: Path
    shop: Shop
    workers: int = 2
    partitions: int = 4
    bootstrap: str | None = None
    uid: str = field(default_factory=lambda: os.urandom(3).hex())
    kafka: KafkaSettings = field(init=False)
    settings: Settings = field(init=False)
    sandbox: Sandbox = field(init=False)
    procs: list[_Proc] = field(default_factory=list, init=False)
    _local: LocalKafka | None = field(default=None, init=False)
    _pusher: EventPusher | None = field(default=None, init=False)
    _logs: list[IO[bytes]] = field(default_factory=list, init=False)

    @property
    def config_path(self) -> Path:
        return self.workdir / "wxsub.toml"

    @property
    def worker_urls(self) -> list[str]:
        return [p.url for p in self.procs if p.name.startswith("worker")]

    @property
    def gateway_url(self) -> str:
        return next(p.url for p in self.procs if p.name == "gateway")

    # --- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Stack:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.bootstrap is None:
            self._local = LocalKafka()  # a temporary data dir, removed when it stops
            await asyncio.to_thread(self._local.start)
            self.bootstrap = self._local.bootstrap
        self.sandbox = Sandbox(world_doc(self.shop.openids), port=0)
        self.sandbox.state.cards.visible_after_s = 0  # no minute's wait for new payments
        await self.sandbox.start()
        self.settings = self._write_config()
        self.kafka = self.settings.kafka
        await ensure_topics(self.kafka, self.settings.worker.app_id)
        self._spawn("gateway", ["gateway"], self.settings.gateway.port)
        for i in range(self.workers):
            self._spawn(f"worker{i + 1}", ["worker", "-l", "warning"], free_port(), index=i)
        self._pusher = EventPusher.from_settings(self.settings, self.gateway_url)
        self._pusher.attach(self.sandbox.world)
        await self._wait_healthy(timeout=90)

    async def stop(self) -> None:
        if self._pusher is not None:
            with contextlib.suppress(Exception):
                await self.sandbox.world.drain_events()
            self.sandbox.world.on_event.remove(self._pusher)
            await self._pusher.close()
            self._pusher = None
        await asyncio.to_thread(self._stop_procs)
        if hasattr(self, "sandbox"):
            await self.sandbox.stop()
        if self._local is not None:
            await asyncio.to_thread(self._local.stop)
            self._local = None
        for f in self._logs:
            f.close()
        self._logs.clear()

    def _stop_procs(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in reversed(self.procs):
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        self.procs.clear()

    # --- pieces ---------------------------------------------------------------------------------

    def _write_config(self) -> Settings:
        merchants = self.workdir / "merchants.toml"
        merchants.write_text(merchants_toml(dt.datetime.now(dt.UTC)), encoding="utf-8")
        aes_key = base64.b64encode(os.urandom(32)).decode()[:43]
        self.config_path.write_text(
            f"""# written by `wxsub demo` for this run
[kafka]
bootstrap = "{self.bootstrap}"
topic_prefix = "demo{self.uid}."
partitions = {self.partitions}

[worker]
app_id = "demo{self.uid}"
merchants = "{merchants}"
session_timeout_ms = 6000
log_level = "warning"
# an open whose send is unknown ends after this grace (default 125 s): short for a short run
open_grace_ms = 3000

[wechat]
api_base = "{self.sandbox.base_url}"
[wechat.apps.{APPID}]
secret = "{SECRET}"

[gateway]
port = {free_port()}
[gateway.apps.{APPID}]
token = "{_PUSH_TOKEN}"
aes_key = "{aes_key}"
mode = "safe"
original_id = "gh_demoshop0001"
""",
            encoding="utf-8",
        )
        return load_settings(self.config_path, env={})

    def _spawn(self, name: str, args: list[str], port: int, index: int = 0) -> None:
        env = {**os.environ, "WXSUB_CONFIG": str(self.config_path)}
        env = {k: v for k, v in env.items() if not k.startswith("WXSUB_") or k == "WXSUB_CONFIG"}
        if name.startswith("worker"):
            env["WXSUB_WORKER_WEB_PORT"] = str(port)
            env["WXSUB_WORKER_STATE_DIR"] = str(self.workdir / f"state-{name}")
        log = self.workdir / f"{name}.log"
        out = log.open("ab")
        self._logs.append(out)
        popen = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [sys.executable, "-m", "wxsub", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children
        )  # fmt: skip
        self.procs.append(_Proc(name, popen, log, f"http://127.0.0.1:{port}"))

    async def _wait_healthy(self, timeout: float) -> None:
        """Until the gateway and every worker answer /health with 200 (stages assigned)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            pending = list(self.procs)
            while pending:
                for p in list(pending):
                    if p.popen.poll() is not None:
                        raise SetupError(f"{p.name} exited at start-up:\n{_tail(p.log)}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(p.url + "/health")).status_code == 200:
                            pending.remove(p)
                if time.monotonic() > deadline:
                    names = ", ".join(p.name for p in pending)
                    raise SetupError(f"not healthy after {timeout:.0f} s: {names}")
                await asyncio.sleep(0.3)

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                raise SetupError(f"{p.name} exited:\n{_tail(p.log)}")

    def describe(self) -> dict[str, Any]:
        return {
            "kafka": self.bootstrap,
            "sandbox": self.sandbox.base_url,
            "gateway": self.gateway_url,
            "workers": self.worker_urls,
            "config": str(self.config_path),
            "logs": str(self.workdir),
        }


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
