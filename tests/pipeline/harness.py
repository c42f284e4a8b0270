"""Run real worker processes against the session broker, publish an event log, read results."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from tests.fixtures.kafka_helpers import read_all
from wxsub.schemas.internal import Intent, Outcome, decode_internal
from wxsub.settings import KafkaSettings
from wxsub.streams.connection import client_kwargs, security_kwargs

__all__ = [
    "Deployment",
    "crc32_partition",
    "free_port",
    "misrouted_total",
    "progress",
    "workers_at_version",
]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Deployment:
    """One isolated wxsub deployment (own topic prefix, app id, state dirs) on a broker."""

    bootstrap: str
    workdir: Path
    merchants_toml: str
    stages: str = "orders,products,decide"
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    web_ports: dict[int, int] = field(default_factory=dict)  # worker index -> /metrics port
    # a secured cluster (tests/cluster): its KafkaSettings and the workers' WXSUB_KAFKA_* env
    secure: KafkaSettings | None = None
    secure_env: dict[str, str] = field(default_factory=dict)
    last_progress: dict[str, int] = field(default_factory=dict)  # harness.progress

    @property
    def kafka(self) -> KafkaSettings:
        if self.secure is not None:
            prefix = f"t{self.uid}."
            return replace(self.secure, topic_prefix=prefix, partitions=self.partitions)
        return KafkaSettings(
            bootstrap=self.bootstrap, topic_prefix=f"t{self.uid}.", partitions=self.partitions
        )

    def env(self, index: int) -> dict[str, str]:
        merchants = self.workdir / "merchants.toml"
        merchants.write_text(self.merchants_toml, encoding="utf-8")
        return {
            **os.environ,
            "WXSUB_KAFKA_BOOTSTRAP": self.bootstrap,
            "WXSUB_KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix,
            "WXSUB_KAFKA_PARTITIONS": str(self.partitions),
            "WXSUB_WORKER_APP_ID": f"app{self.uid}",
            "WXSUB_WORKER_MERCHANTS": str(merchants),
            "WXSUB_WORKER_STATE_DIR": str(self.workdir / f"state{index}"),
            "WXSUB_WORKER_WEB_PORT": str(self.web_ports.setdefault(index, free_port())),
            "WXSUB_WORKER_SESSION_TIMEOUT_MS": "6000",
            **self.secure_env,
            "WXSUB_WORKER_SWEEP_INTERVAL_S": "1",  # expiry runs all the time (docs/lifecycle.md)
            # an open with no kept send waits 3 s for it (125 s in production) before unknown_ref
            "WXSUB_WORKER_OPEN_GRACE_MS": "3000",
            **self.extra_env,
        }

    def start(self, index: int) -> None:
        while len(self.procs) <= index:
            self.procs.append(None)
        log = (self.workdir / f"worker{index}.log").open("ab")
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "wxsub", "worker", "--stages", self.stages, "-l", "info"],
            cwd=ROOT, env=self.env(index), stdout=log, stderr=log,
        )  # fmt: skip

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.procs[index] = None

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None:
                proc.terminate()
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def logs(self) -> str:
        return "\n".join(
            _interesting(p.read_text(errors="replace"))
            for p in sorted(self.workdir.glob("worker*.log"))
        )

    async def publish(
        self,
        entries: Iterable[tuple[str, str, bytes]],
        partitioner: Callable[[bytes, int], int] | None = None,
    ) -> int:
        """Produce (logical topic, key, raw) in order; returns how many. ``partitioner(key,
        partitions)`` picks each record's partition explicitly (default: the producer's,
        murmur2); :func:`crc32_partition` is librdkafka's default, as a Go or C shop's is."""
        producer = AIOKafkaProducer(
            **client_kwargs(self.kafka), enable_idempotence=True, acks="all", linger_ms=5
        )
        await producer.start()
        n = 0
        try:
            for topic, key, raw in entries:
                k = key.encode()
                part = partitioner(k, self.partitions) if partitioner else None
                await producer.send(self.kafka.topic(topic), key=k, value=raw, partition=part)
                n += 1
            await producer.flush()
        finally:
            await producer.stop()
        return n

    async def read(self, logical: str) -> list[bytes]:
        recs = await read_all(
            self.bootstrap,
            self.kafka.topic(logical),
            isolation="read_committed",
            security=security_kwargs(self.kafka),
        )
        return [r.value for r in recs]

    async def intents(self) -> list[Intent]:
        return [decode_internal(Intent, v) for v in await self.read("intents")]

    async def outcomes(self) -> list[Outcome]:
        return [decode_internal(Outcome, v) for v in await self.read("outcomes")]

    async def wait_for(self, logical: str, count: int, timeout: float) -> int:
        """Poll until ``logical`` holds ``count`` committed records (or time runs out)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            n = len(await self.read(logical))
            if n >= count or loop.time() > deadline:
                return n
            await asyncio.sleep(1.0)


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner for keyed records (``consistent_random``: CRC32)."""
    return zlib.crc32(key) % partitions


async def misrouted_total(dep: Deployment) -> float:
    """``wxsub_events_misrouted_total`` summed over the running workers' /metrics."""
    total = 0.0
    async with httpx.AsyncClient(timeout=10) as client:
        for index, port in dep.web_ports.items():
            if dep.procs[index] is None:
                continue
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for line in text.splitlines():
                if line.startswith("wxsub_events_misrouted_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def workers_at_version(dep: Deployment, version: int, timeout: float = 60) -> bool:
    """Wait until every running worker's /metrics shows ``wxsub_config_version`` ``version``
    (it decides with that config from then on); False at the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    want = f"wxsub_config_version {float(version)}"
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            behind = 0
            for index, port in dep.web_ports.items():
                if dep.procs[index] is None:
                    continue
                try:
                    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                except httpx.HTTPError:
                    text = ""
                behind += want not in text.splitlines()
            if not behind:
                return True
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.5)


def as_published(entries: Sequence[object]) -> list[tuple[str, str, bytes]]:
    return [(e.topic, e.key, e.raw) for e in entries]  # type: ignore[attr-defined]


def _interesting(log: str, limit: int = 4000) -> str:
    """The runtime's own lines (assignments, restores, failures), not the client's chatter."""
    keep = [ln for ln in log.splitlines() if '"logger":"wxsub' in ln or "Traceback" in ln]
    return "\n".join(keep)[-limit:]


async def progress(dep: Deployment) -> str:
    """Per stage group and input partition: committed offset vs log end (read_committed
    last stable offset), the lag, and the partitions that have not moved since the last call
    (``dep`` remembers them): which stage is behind and where. The end counts transaction
    markers and aborted records too: an idle partition shows a small lag after aborts."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    kw = client_kwargs(dep.kafka)
    admin = AIOKafkaAdminClient(request_timeout_ms=10_000, **kw)
    consumer = AIOKafkaConsumer(isolation_level="read_committed", **kw)
    await admin.start()
    await consumer.start()
    lines: list[str] = []
    try:
        app = dep.secure_env.get("WXSUB_WORKER_APP_ID", f"app{dep.uid}")
        groups = [f"{app}-{stage}" for stage in dep.stages.split(",")]
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            ends = await consumer.end_offsets(list(committed)) if committed else {}
            for tp in sorted(committed):
                pos = committed[tp].offset
                lag = ends[tp] - pos
                key = f"{group} {tp.topic}[{tp.partition}]"
                moved = dep.last_progress.get(key) != pos
                dep.last_progress[key] = pos
                if lag:
                    lines.append(
                        f"  {key}: committed {pos} end {ends[tp]} lag {lag}"
                        + ("" if moved else " unmoved")
                    )
            if not any(ln.startswith(f"  {group} ") for ln in lines):
                lines.append(f"  {group}: caught up")
    except Exception as exc:  # a diagnostic: say what failed, never fail the test with it
        lines.append(f"  progress unavailable: {exc!r}")
    finally:
        await consumer.stop()
        await admin.close()
    return "\n".join(lines)
