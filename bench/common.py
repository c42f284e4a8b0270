"""What the benchmarks share: a broker, worker processes, /proc readings, a workload, output.

Every benchmark measures against real processes: a real Apache Kafka broker (``LocalKafka``
unless ``--bootstrap``/``$WXSUB_KAFKA_BOOTSTRAP`` names one), ``wxsub worker`` subprocesses (their
CPU read from ``/proc/<pid>/stat``), and the WeChat sandbox in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from wxsub.agents.rules.subscriptions import UserState, encode_user
from wxsub.schemas import encode
from wxsub.schemas.internal import user_key
from wxsub.schemas.records import OrderItem, OrderStatus, OrderStatusChanged
from wxsub.settings import KafkaSettings, load_settings
from wxsub.streams import reading
from wxsub.streams.connection import client_kwargs, security_kwargs
from wxsub.streams.topics import changelog_name, ensure_topics
from wxsub_dev.local_kafka import LocalKafka

__all__ = [
    "APPID",
    "ORDER_TID",
    "PRICE_TID",
    "RESTOCK_TID",
    "ROOT",
    "SECRET",
    "Deployment",
    "Worker",
    "client",
    "free_port",
    "kafka_settings",
    "machine",
    "merchants_toml",
    "order_event",
    "order_events",
    "proc_cpu_s",
    "proc_rss_mib",
    "produce",
    "ratio",
    "read_topic",
    "seed_users",
]

ROOT = Path(__file__).resolve().parents[1]
APPID, SECRET = "wxbench00000000001", "bench-secret-0001"
ORDER_TID = "BENCH_ORDER_STATUS_00000000000000000000001"
PRICE_TID = "BENCH_PRICE_DROP_000000000000000000000002"
ORDER_CONTENT = "订单号:{{character_string1.DATA}}\\n状态:{{phrase2.DATA}}\\n金额:{{amount3.DATA}}"
PRICE_CONTENT = "商品:{{thing1.DATA}}\\n原价:{{amount2.DATA}}\\n现价:{{amount3.DATA}}"
RESTOCK_TID = "BENCH_RESTOCK_0000000000000000000000000003"


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPU ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- /proc ------------------------------------------------------------------------------------


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """``bootstrap`` if given, else a LocalKafka for the length of the block."""
    if bootstrap:
        yield bootstrap
        return
    with LocalKafka() as kafka:
        yield kafka.bootstrap


def kafka_settings(bootstrap: str) -> KafkaSettings:
    """The Kafka settings every benchmark connects to ``bootstrap`` with: ``[kafka]`` of
    ``$WXSUB_CONFIG`` and the ``WXSUB_KAFKA_*`` environment (``security_protocol``, SASL, TLS,
    replication: docs/operations.md), as any wxsub process reads them. The worker and baseline
    subprocesses inherit the same environment, so they connect the same way."""
    return replace(load_settings().kafka, bootstrap=bootstrap)


def client(bootstrap: str) -> dict[str, Any]:
    """aiokafka keyword arguments for ``bootstrap`` (``bootstrap_servers`` included):
    ``client_kwargs(kafka_settings(bootstrap))``. Holds a revealed password: never print it."""
    return client_kwargs(kafka_settings(bootstrap))


def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listener_pid(port: int) -> int | None:
    """The pid of the local process listening on TCP ``port`` (e.g. the broker), if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                return int(pid)
        except OSError:
            continue
    return None


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- workload ---------------------------------------------------------------------------------


def merchants_toml(collapse_window_s: int = 0) -> str:
    """One app, order status and price drop kinds, no quiet hours, caps out of the way."""
    return f"""
[apps.{APPID}]
timezone = "Asia/Shanghai"
collapse_window_s = {collapse_window_s}
[apps.{APPID}.caps.transactional]
max = 1000000
window_s = 86400
[apps.{APPID}.caps.marketing]
max = 1000000
window_s = 86400
[apps.{APPID}.kinds.order_status]
template_id = "{ORDER_TID}"
content = "{ORDER_CONTENT}"
page = "pages/order/detail?id={{order_id}}"
notify_on = ["paid", "shipped", "delivered"]
stale_after_s = 172800
[apps.{APPID}.kinds.order_status.data]
character_string1 = "{{order_id}}"
phrase2 = "{{status_text}}"
amount3 = "{{amount}}"
[apps.{APPID}.kinds.price_drop]
template_id = "{PRICE_TID}"
content = "{PRICE_CONTENT}"
page = "pages/sku/detail?id={{sku_id}}"
stale_after_s = 172800
[apps.{APPID}.kinds.price_drop.data]
thing1 = "{{title}}"
amount2 = "{{old_price}}"
amount3 = "{{new_price}}"
[apps.{APPID}.kinds.restock]
template_id = "{RESTOCK_TID}"
stale_after_s = 172800
[apps.{APPID}.kinds.restock.data]
thing1 = "{{title}}"
number2 = "{{new_stock}}"
"""


def openid(i: int) -> str:
    return f"oBench{i:022d}"


_STATUSES: tuple[OrderStatus, ...] = ("paid", "shipped", "delivered")


def order_event(
    i: int, user: str, now_ms: int, tag: str = "b", steps: int = 3
) -> tuple[str, bytes, bytes]:
    """Event ``i`` of a run: order ``i // steps`` of ``user``, status paid/shipped/delivered."""
    order, step = divmod(i, steps)
    rec = OrderStatusChanged(
        f"ev-{tag}-{i}", datetime.fromtimestamp(now_ms / 1000, UTC), APPID, user, f"o{tag}{order}",
        _STATUSES[step], 12_990, previous_status=_STATUSES[step - 1] if step else None,
        items=(OrderItem("sku-1", "纯棉短袖T恤", 1),),
    )  # fmt: skip
    return "order-status", rec.key.encode(), encode(rec)


def order_events(
    n: int, users: int, now_ms: int, tag: str = "b"
) -> Iterator[tuple[str, bytes, bytes]]:
    """``n`` order-status events (paid, shipped, delivered per order), users round-robin.

    Each notifies: one intent per event when the user has a credit. Yields (topic, key, raw).
    """
    for i in range(n):
        yield order_event(i, openid((i // len(_STATUSES)) % users), now_ms, tag)


async def seed_users(
    kafka: KafkaSettings, app_id: str, users: int | list[str], credits: int
) -> None:
    """Write ``users`` UserStates with ``credits`` per template straight to decide's changelog.

    The same bytes the decide stage writes (``encode_user``) under the same keys and
    partitions; a worker restores them on start. Quicker than ``users * credits`` accept events.
    """
    topic = changelog_name(kafka, app_id, "decide", "users")
    value = encode_user(
        UserState(credits={ORDER_TID: credits, PRICE_TID: credits, RESTOCK_TID: credits})
    )
    ids = users if isinstance(users, list) else [openid(i) for i in range(users)]
    entries = ((topic, user_key(APPID, o).encode(), value) for o in ids)
    await produce(kafka.bootstrap, entries, security=security_kwargs(kafka))


async def produce(
    bootstrap: str,
    entries: Iterable[tuple[str, bytes, bytes]],
    partition: int | None = None,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Produce (full topic, key, value) quickly (acks=all, idempotent); returns how many.

    ``security``: aiokafka security arguments; default: :func:`kafka_settings`'s."""
    kw = client(bootstrap) if security is None else {"bootstrap_servers": bootstrap, **security}
    producer = AIOKafkaProducer(
        **kw,
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    n = 0
    try:
        futs = []
        for topic, key, value in entries:
            futs.append(await producer.send(topic, value, key=key, partition=partition))
            n += 1
            if len(futs) >= 20_000:
                await asyncio.gather(*futs)
                futs = []
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


async def read_topic(
    bootstrap: str, topic: str, security: Mapping[str, Any] | None = None
) -> list[Any]:
    """Every committed record of ``topic`` (all partitions), read to the current end
    (``security`` defaults to :func:`kafka_settings`'s)."""
    if security is None:
        security = security_kwargs(kafka_settings(bootstrap))
    return await reading.read_topic(
        bootstrap, topic, security=security, max_partition_fetch_bytes=8 * 1024 * 1024
    )


# --- worker processes -------------------------------------------------------------------------


@dataclass
class Worker:
    """A ``wxsub worker`` subprocess with its web port, /proc readings and /metrics."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_mib(self) -> float:
        return proc_rss_mib(self.pid)

    def metrics(self) -> dict[str, float]:
        """Counter totals by ``name{labels}`` (one scrape of /metrics)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def total(self, metrics: dict[str, float], name: str, **labels: str) -> float:
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(
            v
            for k, v in metrics.items()
            if re.match(rf"{name}(\{{|$)", k) and all(w in k for w in want)
        )

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/health"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class Deployment:
    """One isolated wxsub deployment on the broker: topic prefix, app id, state dir, config."""

    bootstrap: str
    workdir: Path
    partitions: int = 8
    guarantee: str = "exactly_once"
    collapse_window_s: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    config_toml: str = ""
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    code_root: Path = ROOT  # the checkout whose ``wxsub`` the workers run (bench/ab.py)
    # a secured cluster: its KafkaSettings (security, replication) and the workers' env for it
    secure: KafkaSettings | None = None
    secure_env: dict[str, str] = field(default_factory=dict)
    # otherwise: kafka_settings(bootstrap), the environment's security settings
    connect: KafkaSettings = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.connect = kafka_settings(self.bootstrap)

    @property
    def app_id(self) -> str:
        return f"bench{self.uid}"

    @property
    def kafka(self) -> KafkaSettings:
        base = self.connect if self.secure is None else self.secure
        return replace(base, topic_prefix=f"b{self.uid}.", partitions=self.partitions)

    @property
    def security(self) -> dict[str, Any]:
        return security_kwargs(self.kafka)

    def topic(self, logical: str) -> str:
        return self.kafka.topic(logical)

    async def create_topics(self) -> None:
        await ensure_topics(self.kafka, self.app_id)

    def env(self, index: int, port: int) -> dict[str, str]:
        merchants = self.workdir / "merchants.toml"
        merchants.write_text(merchants_toml(self.collapse_window_s), encoding="utf-8")
        env = {
            **os.environ,
            "WXSUB_KAFKA_BOOTSTRAP": self.bootstrap,
            "WXSUB_KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix,
            "WXSUB_KAFKA_PARTITIONS": str(self.partitions),
            "WXSUB_WORKER_APP_ID": self.app_id,
            "WXSUB_WORKER_MERCHANTS": str(merchants),
            "WXSUB_WORKER_STATE_DIR": str(self.workdir / f"state{index}"),
            "WXSUB_WORKER_WEB_PORT": str(port),
            "WXSUB_WORKER_PROCESSING_GUARANTEE": self.guarantee,
            **self.secure_env,
            **self.extra_env,
        }
        if self.config_toml:
            config = self.workdir / "wxsub.toml"
            config.write_text(self.config_toml, encoding="utf-8")
            env["WXSUB_CONFIG"] = str(config)
        return env

    def start(self, stages: str, index: int = 0, profile: Path | None = None) -> Worker:
        """Start a worker; with ``profile``, under pyinstrument (text report written on exit)."""
        port = free_port()
        log = self.workdir / f"worker{index}.log"
        cmd = [sys.executable, "-m", "wxsub", "worker", "--stages", stages, "-l", "warning"]
        if profile is not None:
            cmd[1:2] = ["-m", "pyinstrument", "-r", "text", "--show-all", "-o", str(profile), "-m"]
        proc = subprocess.Popen(
            cmd,
            cwd=self.code_root, env=self.env(index, port), stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return Worker(proc, port, log)

    def seed_users(self, users: int | list[str], credits: int) -> Any:
        return seed_users(self.kafka, self.app_id, users, credits)


async def wait_until(pred: Any, timeout: float, every: float = 0.2, what: str = "") -> float:
    """Poll ``pred()`` until true; returns the seconds it took (raises on timeout)."""
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)
    return time.perf_counter() - t0
