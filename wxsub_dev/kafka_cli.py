"""``wxsub kafka up``: a local Apache Kafka in the foreground until Ctrl-C/SIGTERM.

Without options one plaintext single-node broker (:class:`LocalKafka`); with ``--cluster`` the
secured three-broker cluster (:class:`LocalKafkaCluster`: SASL_SSL, ACLs, replication 3), whose
``WXSUB_KAFKA_*`` settings for the admin user are printed to paste into a shell.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from types import FrameType
from typing import Any

from wxsub_dev.local_kafka import KAFKA_VERSION, LocalKafka, _tail

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``wxsub kafka up``."""
    kafka = subparsers.add_parser("kafka", help="run a local Apache Kafka broker")
    sub = kafka.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)
    up = sub.add_parser(
        "up",
        help="run one single-node broker (or --cluster) in the foreground until Ctrl-C",
        description="Run a single-node Apache Kafka (KRaft) on 127.0.0.1 until Ctrl-C/SIGTERM.",
    )
    up.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    up.add_argument(
        "--data-dir", default=None, help="keep data here across runs (default: a temporary dir)"
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help="three brokers + a KRaft controller, SASL_SSL, ACLs, replication 3 (temporary)",
    )
    up.set_defaults(func=_cmd_up)


def _cmd_up(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.cluster:
            return _cluster(stop)
        return _single(args, stop)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _single(args: argparse.Namespace, stop: threading.Event) -> int:
    kafka = LocalKafka(port=args.port, data_dir=args.data_dir)
    try:
        kafka.start()
        print(f"kafka {KAFKA_VERSION} up: bootstrap {kafka.bootstrap}", flush=True)
        print(f"broker log: {kafka.log_file}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
        while not stop.wait(0.5) and kafka.running:
            pass
        if stop.is_set():
            return 0
        print(f"wxsub: kafka exited on its own:\n{_tail(kafka.log_file)}", file=sys.stderr)
        return 1
    finally:
        kafka.stop()


def _cluster(stop: threading.Event) -> int:
    from wxsub_dev.kafka_cluster import LocalKafkaCluster

    cluster = LocalKafkaCluster()
    try:
        cluster.start()
        print(f"kafka {KAFKA_VERSION} cluster up: bootstrap {cluster.bootstrap}", flush=True)
        for key, value in cluster.client_env().items():
            print(f"export {key}={shlex.quote(value)}", flush=True)
        print("(Ctrl-C to stop; all data is removed)", file=sys.stderr, flush=True)
        while not stop.wait(0.5) and all(n.running for n in cluster.nodes.values()):
            pass
        if stop.is_set():
            return 0
        print("wxsub: a kafka node exited on its own", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
