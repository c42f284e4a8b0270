"""A real, single-node Apache Kafka (KRaft, broker+controller in one JVM) for tests and the demo.

The jars come from Maven Central via ``deploy/kafka/fetch-jars.sh`` (run by ``scripts/setup.sh``)
into ``$WXSUB_KAFKA_HOME/libs`` (default ``~/.cache/wxsub/kafka-<KAFKA_VERSION>/libs``).
:class:`LocalKafka` formats KRaft storage, starts ``kafka.Kafka`` on 127.0.0.1 with free ports and
waits until the broker answers a metadata request::

    with LocalKafka() as kafka:
        print(kafka.bootstrap)          # "127.0.0.1:PORT"

``wxsub kafka up`` runs one in the foreground until Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from wxsub.errors import SetupError

__all__ = ["KAFKA_VERSION", "LocalKafka", "kafka_home", "register"]

log = logging.getLogger(__name__)

#: Must match ``kafka.version`` in deploy/kafka/pom.xml (tests/kafka checks it).
KAFKA_VERSION = "4.4.0"

_INSTALL_HINT = (
    "run `bash scripts/setup.sh` (needs `apt-get install maven openjdk-17-jre-headless`)"
)
_STORAGE_TOOL = "kafka.tools.StorageTool"
_JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)
# Single-node values: replication 1 everywhere, fast group joins, fast log cleaner, few threads.
_BROKER_DEFAULTS: dict[str, str] = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "min.insync.replicas": "1",
    "default.replication.factor": "1",
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    "log.cleaner.backoff.ms": "200",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": "16777216",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
}
_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


def kafka_home() -> Path:
    """Folder holding ``libs/`` with Kafka's jars (``$WXSUB_KAFKA_HOME`` or the user cache)."""
    env = os.environ.get("WXSUB_KAFKA_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "wxsub" / f"kafka-{KAFKA_VERSION}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise SetupError(f"Java 17+ is needed to run Apache Kafka: {_INSTALL_HINT}")
    out = subprocess.run(  # noqa: S603 - a fixed argv, no shell
        [java, "-version"], capture_output=True, text=True, check=False, timeout=30
    )
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if not match or int(match.group(1)) < 17:
        raise SetupError(f"Apache Kafka {KAFKA_VERSION} needs Java 17+ ({java}): {_INSTALL_HINT}")
    return java


def _find_libs(home: Path) -> Path:
    libs = home / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise SetupError(f"Apache Kafka jars not found in {libs}: {_INSTALL_HINT}")
    return libs


def _random_cluster_id() -> str:
    """Kafka's cluster id format: a UUID as 22 characters of unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


async def _probe(bootstrap: str) -> str | None:
    """The cluster id the broker at ``bootstrap`` reports once it serves metadata, else None."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
    except (KafkaError, OSError):
        return None
    finally:
        await admin.close()
    return str(cluster["cluster_id"]) if cluster.get("brokers") else None


def _run_coroutine(coro: Any) -> Any:
    """Run ``coro`` to completion on a private loop, even when called from inside a loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class LocalKafka:
    """One Apache Kafka node on 127.0.0.1; ``start()``/``stop()`` or use it as a context manager.

    ``port``/``controller_port`` default to free ports. ``data_dir`` defaults to a temporary folder
    removed by ``stop()``; a given ``data_dir`` is kept and reused by the next start.
    ``config`` adds or overrides server.properties entries.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
        home: str | os.PathLike[str] | None = None,
    ) -> None:
        self._port = port
        self._controller_port = controller_port
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._keep_data = data_dir is not None
        self._config = dict(config or {})
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._home = Path(home) if home is not None else kafka_home()
        self._proc: subprocess.Popen[bytes] | None = None
        self._archive: _ClassArchive | None = None
        self._lock = threading.Lock()
        self.bootstrap = ""
        self.startup_seconds = 0.0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalKafka({self.bootstrap or 'unbound'}, {state})"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RuntimeError("LocalKafka is not started")
        return self._data_dir

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j2), in its data dir."""
        return self.data_dir / "server.log"

    def start(self) -> LocalKafka:
        """Format storage (first time), start the JVM and wait until the broker answers."""
        with self._lock:
            if self.running:
                return self
            began = time.monotonic()
            java, libs = _find_java(), _find_libs(self._home)
            self._archive = archive = _ClassArchive(libs)
            if self._data_dir is None:
                self._data_dir = Path(tempfile.mkdtemp(prefix="wxsub-kafka-"))
            atexit.register(self.stop)
            try:
                self._boot(java, libs, archive, began)
            except BaseException:
                self._stop_locked()
                raise
            self.startup_seconds = time.monotonic() - began
            log.info("kafka up", extra={"bootstrap": self.bootstrap, "s": self.startup_seconds})
            return self

    def stop(self) -> None:
        """SIGTERM, wait ``stop_timeout``, then SIGKILL; remove a temporary data dir."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        clean = False
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self._stop_timeout)
                clean = True
            except subprocess.TimeoutExpired:
                log.warning("kafka did not stop in time; killing it")
                proc.kill()
                proc.wait()
        if self._archive is not None:
            self._archive.settle(clean)
        atexit.unregister(self.stop)
        if self._data_dir is not None and not self._keep_data:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LocalKafka:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- internals ----------------------------------------------------------------------------

    def _boot(self, java: str, libs: Path, archive: _ClassArchive, began: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format(self._java_cmd(java, libs, archive.use_opts(), _STORAGE_TOOL), props)
        self._launch(self._java_cmd(java, libs, archive.dump_opts(), "kafka.Kafka", str(props)))
        self._wait_ready(began)

    def _write_config(self) -> Path:
        props = self.data_dir / "server.properties"
        port = self._port or _free_port()
        cport = self._controller_port or _previous_controller_port(props) or _free_port()
        values = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
            "log.dirs": str(self.data_dir / "logs"),
            **_BROKER_DEFAULTS,
            **self._config,
        }
        props.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        (self.data_dir / "log4j2.xml").write_text(_LOG4J2.format(log=self.data_dir / "server.log"))
        self.bootstrap = f"127.0.0.1:{port}"
        return props

    def _java_cmd(self, java: str, libs: Path, cds: list[str], main: str, *args: str) -> list[str]:
        """``java <opts> -cp libs/* main args``; ``cds`` uses or writes the class archive."""
        log4j = f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}"
        return [java, *_JVM_OPTS, *cds, log4j, "-cp", f"{libs}/*", main, *args]

    def _format(self, tool: list[str], props: Path) -> None:
        cmd = [*tool, "format", "--standalone", f"--cluster-id={_random_cluster_id()}"]
        cmd.append(f"--config={props}")
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603
        if out.returncode != 0:
            raise SetupError(
                f"formatting Kafka storage failed (exit {out.returncode}):\n"
                f"{out.stdout}{out.stderr}\n{_tail(self.log_file)}"
            )

    def _launch(self, cmd: list[str]) -> None:
        console = (self.data_dir / "console.log").open("ab")
        with console:
            self._proc = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop the broker cleanly
            )

    def _wait_ready(self, began: float) -> None:
        cluster_id = _read_cluster_id(self.data_dir / "logs" / "meta.properties")
        deadline = began + self._start_timeout
        watch = _LogWatch(self.log_file)
        while time.monotonic() < deadline:
            assert self._proc is not None
            if watch.fatal():  # the JVM takes a while to exit after this; don't wait idle
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(5)
            if self._proc.poll() is not None:
                raise SetupError(self._failure(f"Kafka exited with code {self._proc.returncode}"))
            # the cluster id tells our broker from another one already on this port
            if _port_open(self.bootstrap) and _run_coroutine(_probe(self.bootstrap)) == cluster_id:
                return
            time.sleep(0.2)
        raise SetupError(self._failure(f"Kafka did not answer within {self._start_timeout:.0f}s"))

    def _failure(self, what: str) -> str:
        return (
            f"{what} on {self.bootstrap}; last lines of {self.log_file}:\n{_tail(self.log_file)}\n"
            f"console:\n{_tail(self.data_dir / 'console.log', 20)}"
        )


class _ClassArchive:
    """A dynamic CDS archive of Kafka's classes, kept beside the jars (fetch-jars.sh clears it).

    Later JVMs map the classes instead of loading and verifying them: ~2 s less CPU per start on
    two cores (~6 s -> ~4 s). The first broker writes it when it exits cleanly, to a private file
    renamed into place, so concurrent runs never see a half-written archive; a JVM that finds an
    unusable archive silently runs without it.
    """

    def __init__(self, libs: Path) -> None:
        self.path = libs / "kafka-classes.jsa"
        self._pending: Path | None = None

    def use_opts(self) -> list[str]:
        return [f"-XX:SharedArchiveFile={self.path}"] if self.path.exists() else []

    def dump_opts(self) -> list[str]:
        if self.path.exists():
            return self.use_opts()
        self._pending = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
        return [f"-XX:ArchiveClassesAtExit={self._pending}"]

    def settle(self, clean: bool) -> None:
        """After the broker exited: keep its archive if it exited cleanly, else drop it."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        with contextlib.suppress(OSError):
            if clean and pending.exists() and not self.path.exists():
                os.replace(pending, self.path)
            pending.unlink(missing_ok=True)


class _LogWatch:
    """Spots a fatal start-up line in the broker's log, reading only what is new."""

    _MARKERS = (b"Fatal error during", b"Exiting Kafka")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pos = 0

    def fatal(self) -> bool:
        try:
            with self._path.open("rb") as f:
                f.seek(max(0, self._pos - 64))  # overlap: a marker may straddle two reads
                chunk = f.read()
                self._pos = f.tell()
        except OSError:
            return False
        return any(marker in chunk for marker in self._MARKERS)


def _read_cluster_id(meta: Path) -> str:
    match = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.M)
    if not match:
        raise SetupError(f"no cluster.id in {meta}")
    return match.group(1)


def _previous_controller_port(props: Path) -> int | None:
    """The controller port a kept data dir was formatted with (its quorum remembers it)."""
    try:
        text = props.read_text()
    except OSError:
        return None
    match = re.search(r"^controller\.quorum\.bootstrap\.servers=127\.0\.0\.1:(\d+)$", text, re.M)
    return int(match.group(1)) if match else None


# -- `wxsub kafka up` (wxsub_dev/kafka_cli.py) ---------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``wxsub kafka up`` (one broker, or ``--cluster``: the secured three-broker one)."""
    from wxsub_dev.kafka_cli import register as register_cli

    register_cli(subparsers)
