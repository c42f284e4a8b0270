"""A real, secured, multi-broker Apache Kafka on 127.0.0.1 for fault tests, benches and the demo.

``LocalKafkaCluster`` runs ``brokers`` brokers (default 3) and a KRaft controller quorum
(``controllers``, default 1) each in its own JVM, from the same jars as :class:`LocalKafka`:

- clients connect over SASL_SSL (SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN) to the CLIENT listener;
  nodes talk to each other and to the controllers over mutual TLS (principal
  ``User:CN=kafka-node``, a super user with ``User:admin``);
- certificates are made at start-up (:mod:`wxsub_dev.kafka_certs`); SCRAM users are added when
  storage is formatted; ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``;
- internal topics (offsets, transaction state) and the default for new topics: replication 3,
  ``min.insync.replicas`` 2.

ACLs are created with Kafka's Java Admin API (``KafkaAcls.java``, run by Java's single-file
source launcher) :meth:`add_acls`. :meth:`kill`, :meth:`stop_node` and :meth:`start_node` act
on one broker for fault tests; :meth:`leader_counts` says who leads what.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wxsub.errors import SetupError
from wxsub_dev.kafka_certs import NODE_PRINCIPAL, TlsFiles, make_tls
from wxsub_dev.local_kafka import (
    _LOG4J2,
    _STORAGE_TOOL,
    _find_java,
    _find_libs,
    _free_port,
    _port_open,
    _random_cluster_id,
    _run_coroutine,
    _tail,
    kafka_home,
)

__all__ = ["ADMIN_USER", "LocalKafkaCluster", "Node"]

log = logging.getLogger(__name__)

ADMIN_USER = "admin"
_ACL_TOOL = Path(__file__).with_name("KafkaAcls.java")
_JVM_BASE = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)
_CLUSTER_DEFAULTS: dict[str, str] = {
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "min.insync.replicas": "2",
    "default.replication.factor": "3",
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.replica.fetchers": "1",
    "num.recovery.threads.per.data.dir": "1",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": "8388608",
    "log.cleaner.backoff.ms": "500",
    "replica.lag.time.max.ms": "10000",
    "controlled.shutdown.enable": "true",
}


@dataclass
class Node:
    node_id: int
    role: str  # "broker" or "controller"
    folder: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"


class LocalKafkaCluster:
    """Brokers + controllers on 127.0.0.1; ``start()``/``stop()`` or a (sync/async) context.

    ``users`` maps SCRAM user names to passwords (``admin`` is always added, a super user).
    ``broker_heap``/``controller_heap`` are -Xmx values; the defaults fit 4 JVMs in ~1.3 GiB.
    """

    def __init__(
        self,
        *,
        brokers: int = 3,
        controllers: int = 1,
        users: Mapping[str, str] | None = None,
        config: Mapping[str, str] | None = None,
        broker_heap: str = "320m",
        controller_heap: str = "192m",
        start_timeout: float = 150.0,
        home: str | os.PathLike[str] | None = None,
    ) -> None:
        self.admin_password = os.urandom(12).hex()
        self.users = {ADMIN_USER: self.admin_password, **(users or {})}
        self._config = dict(config or {})
        self._heaps = {"broker": broker_heap, "controller": controller_heap}
        self._start_timeout = start_timeout
        self._home = Path(home) if home is not None else kafka_home()
        self._folder: Path | None = None
        self.tls: TlsFiles | None = None
        self.nodes: dict[int, Node] = {}
        self._counts = (brokers, controllers)
        self._java = ""
        self._libs = Path()
        self.bootstrap = ""
        self.startup_seconds = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalKafkaCluster:
        began = time.monotonic()
        self._java, self._libs = _find_java(), _find_libs(self._home)
        self._folder = folder = Path(tempfile.mkdtemp(prefix="wxsub-kcluster-"))
        try:
            self.tls = make_tls(folder / "tls")
            brokers, controllers = self._counts
            for i in range(controllers):
                self._add_node(100 + i, "controller")
            for i in range(brokers):
                self._add_node(1 + i, "broker")
            cluster_id = _random_cluster_id()
            for node in self.nodes.values():
                self._write_config(node)
                self._format(node, cluster_id)
            for node in self.nodes.values():
                self._launch(node)
            self.bootstrap = ",".join(f"127.0.0.1:{n.ports['CLIENT']}" for n in self.brokers())
            self.wait_brokers(len(self.brokers()), deadline=began + self._start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info("kafka cluster up", extra={"bootstrap": self.bootstrap, "s": self.startup_seconds})
        return self

    def stop(self) -> None:
        """Kill every node and remove all data (nothing is kept, so nothing needs flushing)."""
        for node in self.nodes.values():
            self.kill(node.node_id)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> LocalKafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LocalKafkaCluster:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- what clients need -------------------------------------------------------------------

    def client_env(
        self,
        user: str = ADMIN_USER,
        password_var: str = "WXSUB_KAFKA_PASSWORD",  # noqa: S107 - a variable name
    ) -> dict[str, str]:
        """``WXSUB_KAFKA_*`` settings for a wxsub process connecting as ``user``."""
        assert self.tls is not None
        return {
            "WXSUB_KAFKA_BOOTSTRAP": self.bootstrap,
            "WXSUB_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "WXSUB_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "WXSUB_KAFKA_SASL_USERNAME": user,
            "WXSUB_KAFKA_SASL_PASSWORD": f"env:{password_var}",
            password_var: self.users[user],
            "WXSUB_KAFKA_SSL_CAFILE": str(self.tls.ca),
            "WXSUB_KAFKA_REPLICATION_FACTOR": "3",
            "WXSUB_KAFKA_MIN_INSYNC_REPLICAS": "2",
        }

    def settings(self, user: str = ADMIN_USER, **overrides: Any) -> Any:
        """A :class:`wxsub.settings.KafkaSettings` connecting as ``user``."""
        from wxsub.settings import KafkaSettings, Secret

        assert self.tls is not None
        values: dict[str, Any] = {
            "bootstrap": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password": Secret(self.users[user]),
            "ssl_cafile": self.tls.ca,
            "replication_factor": 3,
            "min_insync_replicas": 2,
            **overrides,
        }
        return KafkaSettings(**values)

    def brokers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == "broker"]

    # -- faults ------------------------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no controlled shutdown, no flush)."""
        node = self.nodes[node_id]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()
        node.proc = None

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown: leadership moves first), SIGKILL after ``timeout``."""
        node = self.nodes[node_id]
        proc, node.proc = node.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_node(self, node_id: int, wait: bool = True) -> None:
        """Start a stopped node again on its ports and data; wait until all brokers serve."""
        node = self.nodes[node_id]
        if node.running:
            return
        self._launch(node)
        if wait and node.role == "broker":
            self.wait_brokers(len(self.brokers()), deadline=time.monotonic() + self._start_timeout)

    def wait_brokers(self, count: int, deadline: float) -> None:
        """Until ``count`` brokers are registered and answer metadata over SASL_SSL."""
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.proc is not None and node.proc.poll() is not None:
                    raise SetupError(self._failure(node, f"exited with {node.proc.returncode}"))
            if _run_coroutine(self._broker_count()) >= count:
                return
            time.sleep(0.5)
        raise SetupError(self._failure(self.brokers()[0], f"{count} brokers not up in time"))

    async def _broker_count(self) -> int:
        from aiokafka.admin import AIOKafkaAdminClient

        from wxsub.streams.connection import client_kwargs

        kw = client_kwargs(self.settings())
        kw["bootstrap_servers"] = ",".join(
            f"127.0.0.1:{n.ports['CLIENT']}"
            for n in self.brokers()
            if n.running and _port_open(f"127.0.0.1:{n.ports['CLIENT']}")
        )
        if not kw["bootstrap_servers"]:
            return 0
        admin = AIOKafkaAdminClient(request_timeout_ms=3000, **kw)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        except Exception:
            return 0
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return len(cluster.get("brokers") or ())

    async def leader_counts(self, topics: Iterable[str] | None = None) -> dict[int, int]:
        """broker id -> partitions it leads (of ``topics``; default all)."""
        desc = await self._describe(topics)
        out = {n.node_id: 0 for n in self.brokers()}
        for topic in desc:
            for p in topic["partitions"]:
                if p["leader"] in out:
                    out[p["leader"]] += 1
        return out

    async def under_replicated(self, topics: Iterable[str] | None = None) -> int:
        """Partitions whose ISR is smaller than their replica set."""
        return sum(
            len(p["isr"]) < len(p["replicas"])
            for topic in await self._describe(topics)
            for p in topic["partitions"]
        )

    async def _describe(self, topics: Iterable[str] | None) -> list[dict[str, Any]]:
        from aiokafka.admin import AIOKafkaAdminClient

        from wxsub.streams.connection import client_kwargs

        admin = AIOKafkaAdminClient(request_timeout_ms=5000, **client_kwargs(self.settings()))
        await admin.start()
        try:
            return list(await admin.describe_topics(list(topics) if topics else None))
        finally:
            await admin.close()

    # -- ACLs --------------------------------------------------------------------------------

    def add_acls(self, lines: Iterable[str]) -> int:
        """Create ALLOW ACLs, one ``PRINCIPAL TYPE PATTERN NAME OPERATION`` per line."""
        assert self._folder is not None and self.tls is not None
        props = self._folder / "admin.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self._admin_client_props().items()))
        props.chmod(0o600)
        out = subprocess.run(  # noqa: S603 - a fixed argv, no shell
            [self._java, "-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", f"{self._libs}/*",
             "-Dlog4j2.configurationFile=" + str(self._folder / "acl-log4j2.xml"),
             str(_ACL_TOOL), str(props)],
            input="\n".join(lines), capture_output=True, text=True, check=False, timeout=180,
        )  # fmt: skip
        if out.returncode != 0:
            raise SetupError(f"creating ACLs failed: {out.stderr.strip()[-2000:]}")
        return int(out.stdout.strip().splitlines()[-1])

    def _admin_client_props(self) -> dict[str, str]:
        assert self.tls is not None
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": _scram_jaas(ADMIN_USER, self.admin_password),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca),
        }

    # -- internals ---------------------------------------------------------------------------

    def _add_node(self, node_id: int, role: str) -> None:
        assert self._folder is not None
        node = Node(node_id, role, self._folder / f"{role}-{node_id}")
        node.folder.mkdir(parents=True)
        names = ("CONTROLLER",) if role == "controller" else ("CLIENT", "INTERNAL")
        node.ports = {name: _free_port() for name in names}
        self.nodes[node_id] = node

    def _write_config(self, node: Node) -> None:
        assert self.tls is not None
        voters = ",".join(
            f"{n.node_id}@127.0.0.1:{n.ports['CONTROLLER']}"
            for n in self.nodes.values()
            if n.role == "controller"
        )
        tls = {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls.node_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.tls.ca),
            "ssl.endpoint.identification.algorithm": "https",
        }
        common = {
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(node.folder / "logs"),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN_USER};{NODE_PRINCIPAL}",
            **tls,
        }
        if node.role == "controller":
            port = node.ports["CONTROLLER"]
            values = {
                "process.roles": "controller",
                "listeners": f"CONTROLLER://127.0.0.1:{port}",
                "listener.security.protocol.map": "CONTROLLER:SSL",
                "ssl.client.auth": "required",
            }
        else:
            client, internal = node.ports["CLIENT"], node.ports["INTERNAL"]
            mechanisms = "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"
            plain_users = " ".join(f'user_{u}="{p}"' for u, p in self.users.items())
            values = {
                "process.roles": "broker",
                "listeners": f"CLIENT://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal}",
                "advertised.listeners": (
                    f"CLIENT://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal}"
                ),
                "listener.security.protocol.map": ("CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"),
                "inter.broker.listener.name": "INTERNAL",
                "listener.name.internal.ssl.client.auth": "required",
                "listener.name.client.sasl.enabled.mechanisms": mechanisms,
                "listener.name.client.scram-sha-256.sasl.jaas.config": _SCRAM_SERVER,
                "listener.name.client.scram-sha-512.sasl.jaas.config": _SCRAM_SERVER,
                "listener.name.client.plain.sasl.jaas.config": (
                    f"org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f"{plain_users};"
                ),
                **_CLUSTER_DEFAULTS,
            }
        merged = {**common, **values, **self._config}
        props = node.folder / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in merged.items()))
        props.chmod(0o600)
        (node.folder / "log4j2.xml").write_text(_LOG4J2.format(log=node.log_file))
        if node.role == "broker" and not (node.folder.parent / "acl-log4j2.xml").exists():
            quiet = _LOG4J2.format(log=node.folder.parent / "acl-tool.log")
            (node.folder.parent / "acl-log4j2.xml").write_text(quiet)

    def _java_cmd(self, node: Node, main: str, *args: str) -> list[str]:
        heap = self._heaps[node.role]
        return [
            self._java, f"-Xms{heap}" if node.role == "controller" else "-Xms128m", f"-Xmx{heap}",
            *_JVM_BASE, f"-Dlog4j2.configurationFile={node.folder / 'log4j2.xml'}",
            "-cp", f"{self._libs}/*", main, *args,
        ]  # fmt: skip

    def _format(self, node: Node, cluster_id: str) -> None:
        cmd = self._java_cmd(node, _STORAGE_TOOL, "format", f"--cluster-id={cluster_id}")
        cmd.append(f"--config={node.folder / 'server.properties'}")
        for user, password in self.users.items():
            for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                cmd += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603
        if out.returncode != 0:
            raise SetupError(
                f"formatting {node.role} {node.node_id} failed (exit {out.returncode}): "
                f"{out.stdout[-1500:]}{out.stderr[-1500:]}"
            )

    def _launch(self, node: Node) -> None:
        cmd = self._java_cmd(node, "kafka.Kafka", str(node.folder / "server.properties"))
        with (node.folder / "console.log").open("ab") as console:
            node.proc = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
                cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _failure(self, node: Node, what: str) -> str:
        return (
            f"kafka {node.role} {node.node_id} {what}; last lines of {node.log_file}:\n"
            f"{_tail(node.log_file)}\nconsole:\n{_tail(node.folder / 'console.log', 20)}"
        )


_SCRAM_SERVER = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


def _scram_jaas(user: str, password: str) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{user}" password="{password}";'
    )
